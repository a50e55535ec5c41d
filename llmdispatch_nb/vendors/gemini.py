"""Google Gemini API (generativelanguage, API key): `models/{model}:generateContent`.

    plain   POST {base}/{version}/models/{model}:generateContent
    stream  POST {base}/{version}/models/{model}:streamGenerateContent?alt=sse

The key travels only in the `x-goog-api-key` header: `?key=` also works, but a URL ends up
in proxy logs, tracebacks and httpx's own error messages. The stream has no end marker; it
ends at EOF, so the parser counts it finished once a `finishReason` arrived. Errors are
Google's `{"error":{code,message,status,details}}`; a bad key is a 400 (not 401) with
`API_KEY_INVALID`, and the wait after a 429 is in `RetryInfo.retryDelay`, not a header.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx

from .._attachments import check as check_attachments
from .._attachments import gemini_part
from .._schema import for_gemini, for_json_mode
from .._sse import SSEEvent
from .._types import Finish as FinishEvent
from .._types import (
    FinishReason,
    Message,
    ParsedReply,
    Request,
    StreamEvent,
    StreamStart,
    TextDelta,
    ToolCall,
    Usage,
    UsageUpdate,
)
from ..errors import (
    AuthenticationError,
    ContentFilterError,
    ContextLengthError,
    MidStreamError,
    ProtocolError,
    QuotaExhaustedError,
    RateLimitError,
    VendorError,
)
from ._base import (
    Adapter,
    Endpoint,
    StreamParser,
    UnreliableUsage,
    error_class_for_status,
    finish_from,
    load_event_json,
    model_hint,
    parse_retry_after,
    parse_should_retry,
    post_json,
    read_json,
    request_id_of,
    token_count,
    unreliable_usage_note,
    wire,
)
from ._rules import parameters_for
from ._structured import ToolCallAssembler, check_tools, native_schema, tool_call

DEFAULT_API_VERSION = "v1beta"
# Gemini's page size cap: one page lists every model in practice.
MODELS_PAGE_SIZE = 1000

FINISH: dict[str, FinishReason] = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}

_VERSION_SEGMENT = re.compile(r"^v\d+(?:(?:alpha|beta)\d*)?$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)s\s*$")


def model_id(model: str) -> str:
    """`models/gemini-2.5-flash` and `gemini-2.5-flash` name the same model."""
    return model.strip().removeprefix("models/")


def model_resource(model: str) -> str:
    """The resource path: `models/<id>`, or `tunedModels/<id>` as given."""
    m = model_id(model)
    return m if m.startswith("tunedModels/") else f"models/{m}"


def parse_duration(value: Any) -> float | None:
    """A protobuf Duration as JSON ("47s", "1.5s") or as {seconds, nanos}, in seconds."""
    if isinstance(value, str):
        m = _DURATION.match(value)
        return float(m.group(1)) if m else None
    if isinstance(value, Mapping):
        try:
            return float(value.get("seconds") or 0) + float(value.get("nanos") or 0) / 1e9
        except (TypeError, ValueError):
            return None
    return None


def _details(err: Mapping[str, Any], kind: str) -> list[Mapping[str, Any]]:
    details = err.get("details")
    if not isinstance(details, list):
        return []
    return [d for d in details if isinstance(d, Mapping)
            and str(d.get("@type", "")).endswith(f"google.rpc.{kind}")]


def retry_delay(err: Mapping[str, Any]) -> float | None:
    for info in _details(err, "RetryInfo"):
        delay = parse_duration(info.get("retryDelay"))
        if delay is not None and delay >= 0:
            return delay
    return None


def error_reasons(err: Mapping[str, Any]) -> set[str]:
    return {str(d.get("reason")) for d in _details(err, "ErrorInfo") if d.get("reason")}


def quota_ids(err: Mapping[str, Any]) -> list[str]:
    out = []
    for failure in _details(err, "QuotaFailure"):
        for v in failure.get("violations") or []:
            if isinstance(v, Mapping) and v.get("quotaId"):
                out.append(str(v["quotaId"]))
    return out


def error_class(status: int, err: Mapping[str, Any]) -> type[VendorError]:
    message = str(err.get("message") or "").lower()
    if "API_KEY_INVALID" in error_reasons(err) or status in (401, 403):
        return AuthenticationError
    if status == 429:
        # A per-day quota resets at midnight Pacific: waiting a few seconds will not help.
        if any("PerDay" in q for q in quota_ids(err)):
            return QuotaExhaustedError
        return RateLimitError
    if status == 400 and ("token count" in message
                          or "exceeds the maximum number of tokens" in message):
        return ContextLengthError
    return error_class_for_status(status)


def usage_fields(meta: Any) -> dict[str, int]:
    """The integer counts a `usageMetadata` block carries (absent fields left out).
    Raises `UnreliableUsage` for counts that cannot be true (text, NaN, negative, nested,
    absurdly large); a block that is not an object at all is one too."""
    if meta is None:
        return {}
    if not isinstance(meta, Mapping):
        raise UnreliableUsage(f"usageMetadata is a {type(meta).__name__}, not an object")
    return {name: token_count(meta, name)
            for name in ("promptTokenCount", "candidatesTokenCount", "thoughtsTokenCount",
                         "cachedContentTokenCount", "totalTokenCount")
            if meta.get(name) is not None}


def usage_from_gemini(fields: Mapping[str, int]) -> Usage:
    thoughts = fields.get("thoughtsTokenCount", 0)
    return Usage(
        input_tokens=fields.get("promptTokenCount", 0),
        # Thinking is billed at the output rate, so it counts as output here too.
        output_tokens=fields.get("candidatesTokenCount", 0) + thoughts,
        cache_read_tokens=fields.get("cachedContentTokenCount", 0),
        reasoning_tokens=thoughts,
    )


def _first_candidate(data: Mapping[str, Any]) -> Mapping[str, Any] | None:
    candidates = data.get("candidates")
    if isinstance(candidates, list) and candidates and isinstance(candidates[0], Mapping):
        return candidates[0]
    return None


def candidate_text(candidate: Mapping[str, Any]) -> str:
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, Mapping) else None
    if not isinstance(parts, list):
        return ""
    # Thought summaries (`thought: true`) are the model thinking aloud, not the answer.
    return "".join(p["text"] for p in parts
                   if isinstance(p, Mapping) and not p.get("thought")
                   and isinstance(p.get("text"), str))


def blocked_error(data: Mapping[str, Any], vendor: str) -> ContentFilterError | None:
    """A 200 with no candidates and `promptFeedback.blockReason`: the prompt was refused."""
    if _first_candidate(data) is not None:
        return None
    feedback = data.get("promptFeedback")
    reason = feedback.get("blockReason") if isinstance(feedback, Mapping) else None
    if not reason:
        return None
    detail = feedback.get("blockReasonMessage") if isinstance(feedback, Mapping) else None
    return ContentFilterError(
        f"the prompt was blocked (blockReason {reason}){': ' + str(detail) if detail else ''}; "
        f"rephrase it or adjust safetySettings",
        vendor=vendor, status=200, code=str(reason),
        body=json.dumps({"promptFeedback": feedback})[:2000])


def vendor_label(endpoint: Endpoint) -> str:
    return endpoint.name or "google"


class GeminiAdapter(Adapter):
    kind: ClassVar[str] = "gemini"
    key_variables = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
    price_provider = "google"

    # -- request ---------------------------------------------------------------------

    def version_url(self, endpoint: Endpoint, path: str) -> str:
        """`{base}/{version}/{path}`, unless the base URL already ends in a version."""
        last = urlsplit(endpoint.base_url).path.rstrip("/").rsplit("/", 1)[-1]
        if _VERSION_SEGMENT.match(last):
            return endpoint.url(path)
        return endpoint.url(f"{endpoint.api_version or DEFAULT_API_VERSION}/{path}")

    def headers(self, endpoint: Endpoint) -> dict[str, str]:
        headers = {**endpoint.headers}
        if endpoint.key:
            headers["x-goog-api-key"] = endpoint.key.reveal()
        return headers

    def body(self, request: Request, model: str, endpoint: Endpoint) -> dict[str, Any]:
        check_attachments("gemini", model_id(model), request)
        contents = gemini_contents(request.messages)
        body: dict[str, Any] = {"contents": contents}
        if request.system:
            body["systemInstruction"] = {"parts": [{"text": request.system}]}
        config: dict[str, Any] = {}
        # What this model accepts of what was asked: the catalogue's rules, in one place.
        # Thinking counts inside maxOutputTokens, so the cap sent is max_tokens + thinking.
        sent = parameters_for(request, "google", model_id(model))
        if sent.max_tokens is not None:
            config["maxOutputTokens"] = sent.max_tokens
        if sent.temperature is not None:
            config["temperature"] = sent.temperature
        if sent.top_p is not None:
            config["topP"] = sent.top_p
        if sent.stop:
            config["stopSequences"] = list(sent.stop)
        if sent.thinking == "level" and sent.effort is not None:
            config["thinkingConfig"] = {"thinkingLevel": sent.effort.upper()}
        elif sent.budget is not None:
            config["thinkingConfig"] = {"thinkingBudget": sent.budget}
        if request.seed is not None:
            config["seed"] = request.seed
        self.add_schema_and_tools(body, config, request, model_id(model))
        if config:
            body["generationConfig"] = config
        return body

    def add_schema_and_tools(self, body: dict[str, Any], config: dict[str, Any],
                             request: Request, model: str) -> None:
        """A schema as `responseMimeType` + `responseJsonSchema` (JSON mode and the schema in
        the system instruction where the catalogue says the model has no structured
        output); tools as `functionDeclarations` with `parametersJsonSchema`, `toolConfig`
        beside them."""
        schema = request.schema
        if schema is not None:
            config["responseMimeType"] = "application/json"
            if native_schema("google", model):
                config["responseJsonSchema"] = for_gemini(schema.json_schema)
            else:
                said = body.get("systemInstruction", {}).get("parts", [])
                body["systemInstruction"] = {"parts": [*said, {"text": for_json_mode(schema)}]}
        if request.tools:
            check_tools(request, "google", model)
            body["tools"] = [{"functionDeclarations": [
                {"name": t.name, "description": t.description,
                 "parametersJsonSchema": for_gemini(t.parameters)} for t in request.tools]}]
            tc = request.tool_choice
            if tc is not None:
                mode = {"auto": "AUTO", "none": "NONE", "required": "ANY"}.get(tc, "ANY")
                calling: dict[str, Any] = {"mode": mode}
                if tc not in ("auto", "none", "required"):
                    calling["allowedFunctionNames"] = [tc]
                body["toolConfig"] = {"functionCallingConfig": calling}

    def output_cap(self, request: Request, model: str, endpoint: Endpoint) -> int | None:
        return parameters_for(request, "google", model_id(model), quiet=True).max_tokens

    def build_request(self, request: Request, model: str, endpoint: Endpoint, *,
                      stream: bool) -> httpx.Request:
        method = "streamGenerateContent" if stream else "generateContent"
        url = self.version_url(endpoint, f"{model_resource(model)}:{method}")
        params = {"alt": "sse"} if stream else None
        headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream" if stream else "application/json",
            **self.headers(endpoint),
        }
        content = json.dumps(self.body(request, model, endpoint)).encode()
        return post_json(url, headers, content, params)

    # -- response --------------------------------------------------------------------

    def parse_reply(self, response: httpx.Response, endpoint: Endpoint) -> ParsedReply:
        vendor = vendor_label(endpoint)
        data = read_json(response, vendor)
        if not isinstance(data, dict):
            raise ProtocolError("sent a JSON body that is not an object", vendor=vendor)
        blocked = blocked_error(data, vendor)
        if blocked is not None:
            raise blocked
        candidate = _first_candidate(data)
        if candidate is None:
            raise ProtocolError("sent a reply with no candidates and no blockReason",
                                vendor=vendor)
        raw = wire(candidate.get("finishReason"))
        response_id = wire(data.get("responseId"))
        extra: dict[str, Any] = {"response_id": response_id} if response_id else {}
        try:
            meta = usage_fields(data.get("usageMetadata"))
        except UnreliableUsage as exc:
            meta = {}
            extra.update(unreliable_usage_note(exc))
        calls = candidate_tool_calls(candidate)
        return ParsedReply(
            text=candidate_text(candidate),
            # Gemini ends a turn of calls with STOP: said as what it is, for every vendor alike.
            finish_reason="tool_calls" if calls and raw == "STOP" else finish_from(raw, FINISH),
            raw_finish_reason=raw,
            tool_calls=calls,
            usage=usage_from_gemini(meta) if meta else None,
            model=wire(data.get("modelVersion")),
            request_id=request_id_of(response),
            extra=extra,
        )

    def stream_parser(self, endpoint: Endpoint) -> StreamParser:
        return GeminiStream(vendor_label(endpoint))

    # -- errors ----------------------------------------------------------------------

    def map_error(self, response: httpx.Response, endpoint: Endpoint) -> VendorError:
        status = response.status_code
        try:
            data = json.loads(response.content)
        except (ValueError, RecursionError):
            data = None
        # The array form of streamGenerateContent wraps its error in a one-item list.
        if isinstance(data, list) and len(data) == 1:
            data = data[0]
        err = data.get("error") if isinstance(data, dict) else None
        if not isinstance(err, dict):
            err = {}
        message = str(err.get("message") or response.reason_phrase or "error")
        cls = error_class(status, err)
        if status == 404:
            message += model_hint(response, endpoint)
        delay = retry_delay(err)
        reasons = sorted(error_reasons(err))
        return cls(
            message,
            vendor=vendor_label(endpoint),
            status=status,
            request_id=request_id_of(response),
            retry_after=delay if delay is not None else parse_retry_after(response.headers),
            body=response.content[:2000],
            code=str(err["status"]) if err.get("status") else None,
            error_type=reasons[0] if reasons else None,
            should_retry=parse_should_retry(response.headers),
        )

    # -- models ----------------------------------------------------------------------

    def list_models_request(self, endpoint: Endpoint, page_token: str | None = None,
                            page_size: int = MODELS_PAGE_SIZE) -> httpx.Request:
        """One page of `GET models`; follow `next_page_token(response)` for the rest."""
        params: dict[str, str | int] = {"pageSize": page_size}
        if page_token:
            params["pageToken"] = page_token
        return httpx.Request("GET", self.version_url(endpoint, "models"), params=params,
                             headers=self.headers(endpoint))

    def parse_models(self, response: httpx.Response) -> list[str]:
        """Ids (without `models/`) of the models that can generate text."""
        data = read_json(response, "google")
        models = data.get("models") if isinstance(data, dict) else None
        out = []
        for m in models if isinstance(models, list) else []:
            name = wire(m.get("name")) if isinstance(m, dict) else None
            if not name:
                continue
            methods = m.get("supportedGenerationMethods")
            if isinstance(methods, list) and "generateContent" not in methods:
                continue  # embedding and other models cannot answer a prompt
            out.append(model_id(name))
        return out

    @staticmethod
    def next_page_token(response: httpx.Response) -> str | None:
        data = read_json(response, "google")
        token = data.get("nextPageToken") if isinstance(data, dict) else None
        return str(token) if token else None

    def pricing_model(self, model: str, endpoint: Endpoint) -> str:
        return model_id(model)


class GeminiStream(StreamParser):
    """Each `data:` event is a whole GenerateContentResponse carrying only the new text.

    `usageMetadata` holds running totals whose fields come and go (no candidates count on
    the first chunk), so counts merge field by field. No `[DONE]`: a `finishReason` is the
    only sign the stream is complete before EOF.
    """

    def __init__(self, vendor: str) -> None:
        super().__init__(vendor)
        self.started = False
        self.text_seen = False
        self.usage_fields: dict[str, int] = {}
        self._stray: list[str] = []
        self.tools = ToolCallAssembler()

    def feed(self, event: SSEEvent) -> list[StreamEvent]:
        if event.stray:
            return self._feed_stray(event.data)
        chunk = load_event_json(event, self.vendor)
        if not isinstance(chunk, dict):
            raise ProtocolError("sent a stream event that is not a JSON object", vendor=self.vendor)
        if isinstance(chunk.get("error"), dict):
            raise self._error(chunk["error"])
        blocked = blocked_error(chunk, self.vendor)
        if blocked is not None:
            raise blocked
        out: list[StreamEvent] = []
        if not self.started and wire(chunk.get("modelVersion")):
            self.started = True
            out.append(StreamStart(wire(chunk["modelVersion"]), None))
        candidate = _first_candidate(chunk)
        if candidate is not None:
            piece = candidate_text(candidate)
            if piece:
                self.text_seen = True
                out.append(TextDelta(piece))
            for call in candidate_tool_calls(candidate, first=len(self.tools.pieces)):
                # A call arrives whole in one chunk on the Gemini API (section 13.4).
                out.extend(self.tools.whole(len(self.tools.pieces), call.id, call.name,
                                            call.raw_arguments, call.signature))
        if "usage_unreliable" not in self.extra:  # after one bad block, no count is believed
            try:
                fields = usage_fields(chunk.get("usageMetadata"))
            except UnreliableUsage as exc:
                fields = {}
                self.usage_fields = {}
                self.extra.update(unreliable_usage_note(exc))
            if fields:
                self.usage_fields.update(fields)
                out.append(UsageUpdate(usage_from_gemini(self.usage_fields)))
        raw = wire(candidate.get("finishReason")) if candidate is not None else None
        if raw:
            self.done = True
            reason = "tool_calls" if self.tools.done and raw == "STOP" else \
                finish_from(raw, FINISH)
            out.append(FinishEvent(reason, raw))
        return out

    def _feed_stray(self, text: str) -> list[StreamEvent]:
        """A bare JSON object outside `data:` lines is Google reporting a failure."""
        self._stray.append(text)
        try:
            obj = json.loads("\n".join(self._stray))
        except (ValueError, RecursionError):
            return []  # more lines may complete it; close() complains if none do
        self._stray = []
        if isinstance(obj, list) and len(obj) == 1:
            obj = obj[0]
        if isinstance(obj, dict) and isinstance(obj.get("error"), dict):
            raise self._error(obj["error"])
        return []

    def _error(self, err: Mapping[str, Any]) -> VendorError:
        try:
            status = int(err.get("code") or 0) or None
        except (TypeError, ValueError, OverflowError):
            status = None
        message = str(err.get("message") or "error in stream")
        code = str(err["status"]) if err.get("status") else None
        delay = retry_delay(err)
        body = json.dumps({"error": err})[:2000]
        if self.text_seen:
            # Text already reached the caller: a retry would repeat it.
            return MidStreamError(message, vendor=self.vendor, status=status, code=code,
                                  retry_after=delay, body=body,
                                  usage=usage_from_gemini(self.usage_fields)
                                  if self.usage_fields else None)
        # Nothing was shown yet: as good as an error response, and as retryable.
        cls = error_class(status or 500, err)
        return cls(message, vendor=self.vendor, status=status, code=code, retry_after=delay,
                   body=body)

    def close(self) -> list[StreamEvent]:
        if self._stray:
            raise ProtocolError("sent text in the stream that is neither an event nor JSON",
                                vendor=self.vendor)
        return super().close()


def candidate_tool_calls(candidate: Mapping[str, Any], first: int = 0) -> tuple[ToolCall, ...]:
    """The `functionCall` parts of a candidate, in our shape. Gemini may leave out the id;
    one is made from the name and position so results can be matched to calls."""
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, Mapping) else None
    out: list[ToolCall] = []
    for p in parts if isinstance(parts, list) else []:
        fc = p.get("functionCall") if isinstance(p, Mapping) else None
        if isinstance(fc, Mapping):
            name = wire(fc.get("name")) or ""
            out.append(tool_call(fc.get("id") or f"{name}-{first + len(out)}", name,
                                 fc.get("args") if isinstance(fc.get("args"), Mapping) else {},
                                 p.get("thoughtSignature")))
    return tuple(out)


def _result(text: str) -> dict[str, Any]:
    """A tool's result as a functionResponse `response` object, as the SDK's own automatic
    function calling sends it: {"result": ...} or {"error": ...}."""
    if text.startswith("error:"):
        return {"error": text[6:].strip()}
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        value = text
    return {"result": value}


def gemini_contents(messages: tuple[Message, ...]) -> list[dict[str, Any]]:
    """Our turns as Gemini contents: tool calls as `functionCall` parts of the model's turn,
    results as `functionResponse` parts of one user turn."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "tool":
            part = {"functionResponse": {"name": m.name or "", "id": m.tool_call_id,
                                         "response": _result(m.content)}}
            last = out[-1] if out else None
            if last is not None and last["role"] == "user" and \
                    all("functionResponse" in p for p in last["parts"]):
                last["parts"].append(part)
            else:
                out.append({"role": "user", "parts": [part]})
            continue
        parts: list[dict[str, Any]] = [{"text": m.content}] if m.content or not m.tool_calls \
            else []
        if m.attachments:  # the media before the text, as Gemini's prompting guide advises
            parts = [gemini_part(a) for a in m.attachments] + ([{"text": m.content}]
                                                              if m.content else [])
        for c in m.tool_calls:
            call_part: dict[str, Any] = {"functionCall": {
                "name": c.name, "args": dict(c.arguments), "id": c.id}}
            if c.signature:  # a thinking model wants its signature back with the call
                call_part["thoughtSignature"] = c.signature
            parts.append(call_part)
        out.append({"role": "model" if m.role == "assistant" else "user", "parts": parts})
    return out
