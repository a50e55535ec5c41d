"""OpenAI Chat Completions: `POST {base}/chat/completions`, bearer auth, SSE ending `[DONE]`.

The other OpenAI-shaped vendors (Azure, local OpenAI-compatible servers) subclass this and
change only what differs: the URL, the auth header, the max-tokens field, error codes.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import httpx

from .._attachments import check as check_attachments
from .._attachments import openai_part
from .._schema import for_json_mode, for_openai
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
    Tool,
    Usage,
    UsageUpdate,
)
from ..errors import (
    ContentFilterError,
    ContextLengthError,
    MidStreamError,
    ProtocolError,
    QuotaExhaustedError,
    VendorError,
)
from ._base import (
    Adapter,
    Endpoint,
    StreamParser,
    UnreliableUsage,
    error_body,
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

FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "content_filter": "content_filter",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
}
# 400 codes that mean "a safety system refused the prompt" (OpenAI, Azure, o-series).
CONTENT_FILTER_CODES = frozenset({"content_filter", "content_policy_violation", "invalid_prompt"})


def usage_from_openai(u: Any) -> Usage | None:
    """Our Usage from OpenAI's `usage` (None when there is none). Raises `UnreliableUsage`
    for counts that cannot be true (text, NaN, negative, nested, absurdly large)."""
    if u is None:
        return None
    if not isinstance(u, dict):
        raise UnreliableUsage(f"usage is a {type(u).__name__}, not an object")
    pd = u.get("prompt_tokens_details") or {}
    cd = u.get("completion_tokens_details") or {}
    if not isinstance(pd, dict) or not isinstance(cd, dict):
        raise UnreliableUsage("the usage details are not objects")
    return Usage(
        input_tokens=token_count(u, "prompt_tokens"),
        output_tokens=token_count(u, "completion_tokens"),
        cache_read_tokens=token_count(pd, "cached_tokens"),
        reasoning_tokens=token_count(cd, "reasoning_tokens"),
    )


class OpenAIAdapter(Adapter):
    kind: ClassVar[str] = "openai"
    key_variables: ClassVar[tuple[str, ...]] = ("OPENAI_API_KEY",)
    price_provider: ClassVar[str | None] = "openai"
    vendor_label = "openai"
    max_tokens_field = "max_completion_tokens"

    # -- request ---------------------------------------------------------------------

    def body(self, request: Request, model: str, endpoint: Endpoint, *, stream: bool) -> dict[str, Any]:
        messages: list[dict[str, Any]] = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        messages.extend(openai_message(m) for m in request.messages)
        body: dict[str, Any] = {"model": model, "messages": messages}
        check_attachments(self.catalogue_vendor(endpoint), self.catalogue_model(model, endpoint),
                          request)
        # What this model accepts of what was asked: the catalogue's rules, in one place.
        sent = parameters_for(request, self.catalogue_vendor(endpoint),
                              self.catalogue_model(model, endpoint),
                              max_tokens_field=self.max_tokens_field)
        if sent.max_tokens is not None:
            body[sent.max_tokens_field] = sent.max_tokens
        if sent.temperature is not None:
            body["temperature"] = sent.temperature
        if sent.top_p is not None:
            body["top_p"] = sent.top_p
        if sent.stop:
            body["stop"] = list(sent.stop)
        if sent.effort is not None:
            body["reasoning_effort"] = sent.effort
        if request.seed is not None:
            body["seed"] = request.seed
        if request.user:
            body["user"] = request.user
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        self.add_schema_and_tools(body, request, model, endpoint)
        return body

    def add_schema_and_tools(self, body: dict[str, Any], request: Request, model: str,
                             endpoint: Endpoint) -> None:
        """`response_format` (json_schema where the catalogue says the model fills one, else
        JSON mode with the schema in an instruction), `tools` and `tool_choice`."""
        vendor, cmodel = self.catalogue_vendor(endpoint), self.catalogue_model(model, endpoint)
        schema = request.schema
        if schema is not None:
            if native_schema(vendor, cmodel):
                spec: dict[str, Any] = {"name": schema.name,
                                        "schema": for_openai(schema.json_schema,
                                                             strict=schema.strict),
                                        "strict": schema.strict}
                if schema.description:
                    spec["description"] = schema.description
                body["response_format"] = {"type": "json_schema", "json_schema": spec}
            else:
                body["response_format"] = {"type": "json_object"}
                body["messages"].insert(0, {"role": "system", "content": for_json_mode(schema)})
        if request.tools:
            check_tools(request, vendor, cmodel)
            body["tools"] = [openai_tool(t) for t in request.tools]
            tc = request.tool_choice
            if tc in ("auto", "none", "required"):
                body["tool_choice"] = tc
            elif tc is not None:
                body["tool_choice"] = {"type": "function", "function": {"name": tc}}

    def output_cap(self, request: Request, model: str, endpoint: Endpoint) -> int | None:
        return parameters_for(request, self.catalogue_vendor(endpoint),
                              self.catalogue_model(model, endpoint),
                              max_tokens_field=self.max_tokens_field, quiet=True).max_tokens

    def catalogue_vendor(self, endpoint: Endpoint) -> str:
        """The vendor the catalogue files this endpoint's models under."""
        return self.vendor_label

    def catalogue_model(self, model: str, endpoint: Endpoint) -> str:
        return model

    def auth_headers(self, endpoint: Endpoint) -> dict[str, str]:
        return {"Authorization": f"Bearer {endpoint.key.reveal()}"} if endpoint.key else {}

    def chat_url(self, model: str, endpoint: Endpoint) -> str:
        return endpoint.url("chat/completions")

    def build_request(self, request: Request, model: str, endpoint: Endpoint, *, stream: bool) -> httpx.Request:
        headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream" if stream else "application/json",
            **endpoint.headers,
            **self.auth_headers(endpoint),
        }
        content = json.dumps(self.body(request, model, endpoint, stream=stream)).encode()
        return post_json(self.chat_url(model, endpoint), headers, content)

    # -- response --------------------------------------------------------------------

    def parse_reply(self, response: httpx.Response, endpoint: Endpoint) -> ParsedReply:
        data = read_json(response, endpoint.name)
        if not isinstance(data, dict):
            raise ProtocolError("sent a JSON body that is not an object", vendor=endpoint.name)
        choices = data.get("choices") or []
        choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
        message = choice.get("message") or {}
        text = message.get("content") if isinstance(message, dict) else None
        if text is not None and not isinstance(text, str):
            raise ProtocolError(f"sent a message whose content is a {type(text).__name__}, "
                                f"not text", vendor=endpoint.name)
        raw = wire(choice.get("finish_reason"))
        extra = self.reply_extra(data, choice)
        calls = message.get("tool_calls") if isinstance(message, dict) else None
        tool_calls = tuple(
            tool_call(c.get("id"), (c.get("function") or {}).get("name"),
                      (c.get("function") or {}).get("arguments"))
            for c in (calls if isinstance(calls, list) else [])
            if isinstance(c, dict) and isinstance(c.get("function"), dict))
        refusal = message.get("refusal") if isinstance(message, dict) else None
        if isinstance(refusal, str) and refusal:
            extra = {**extra, "refusal": refusal}
        try:
            usage = usage_from_openai(data.get("usage"))
        except UnreliableUsage as exc:
            usage = None
            extra = {**extra, **unreliable_usage_note(exc)}
        return ParsedReply(
            text=text or "",
            finish_reason=finish_from(raw, FINISH),
            raw_finish_reason=raw,
            usage=usage,
            model=wire(data.get("model")),
            request_id=request_id_of(response, "x-request-id", "apim-request-id"),
            extra=extra,
            tool_calls=tool_calls,
        )

    def reply_extra(self, data: dict[str, Any], choice: dict[str, Any]) -> dict[str, Any]:
        reply_id = wire(data.get("id"))
        return {"id": reply_id} if reply_id else {}

    def stream_parser(self, endpoint: Endpoint) -> StreamParser:
        return OpenAIStream(endpoint.name)

    # -- errors ----------------------------------------------------------------------

    def map_error(self, response: httpx.Response, endpoint: Endpoint) -> VendorError:
        status = response.status_code
        data, err = error_body(response)
        if not isinstance(err, dict):
            err = data if isinstance(data, dict) and "message" in data else {}  # vLLM's flat shape
        message = str(err.get("message") or response.reason_phrase or "error")
        code = err.get("code")
        code = str(code) if code is not None else None
        etype = err.get("type")
        cls = self.error_class(status, code, etype, message)
        if status == 404:
            message += model_hint(response, endpoint)
        return cls(
            message,
            vendor=endpoint.name,
            status=status,
            request_id=request_id_of(response, "x-request-id", "apim-request-id"),
            retry_after=parse_retry_after(response.headers),
            body=response.content[:2000],
            code=code,
            error_type=str(etype) if etype is not None else None,
            should_retry=parse_should_retry(response.headers),
        )

    def error_class(self, status: int, code: str | None, etype: Any, message: str) -> type[VendorError]:
        if status == 429 and (code == "insufficient_quota" or etype == "insufficient_quota"):
            return QuotaExhaustedError
        if status == 400 and (code == "context_length_exceeded" or "context length" in message.lower()):
            return ContextLengthError
        if status == 400 and code in CONTENT_FILTER_CODES:
            return ContentFilterError
        return error_class_for_status(status)

    # -- models ----------------------------------------------------------------------

    def list_models_request(self, endpoint: Endpoint) -> httpx.Request:
        return httpx.Request("GET", endpoint.url("models"), headers=self.auth_headers(endpoint))

    def parse_models(self, response: httpx.Response) -> list[str]:
        data = read_json(response, self.kind)
        items = data.get("data") if isinstance(data, dict) else None
        ids = [wire(m.get("id")) for m in items if isinstance(m, dict)] \
            if isinstance(items, list) else []
        return [i for i in ids if i]


class OpenAIStream(StreamParser):
    """Reads `data:` chunks; the usage chunk has `choices: []`; `[DONE]` ends it."""

    def __init__(self, vendor: str) -> None:
        super().__init__(vendor)
        self.started = False
        self.text_len = 0
        self.partial: list[str] = []
        self.usage: Usage | None = None
        self.tools = ToolCallAssembler()

    def feed(self, event: SSEEvent) -> list[StreamEvent]:
        if event.stray:
            return []
        if event.data.startswith("[DONE]"):
            self.done = True
            return list(self.tools.finish())
        chunk = load_event_json(event, self.vendor)
        if not isinstance(chunk, dict):
            return []
        if "error" in chunk:
            err = chunk["error"] if isinstance(chunk["error"], dict) else {"message": str(chunk["error"])}
            raise MidStreamError(
                str(err.get("message") or "error in stream"), vendor=self.vendor,
                partial_text="".join(self.partial), usage=self.usage,
                code=str(err.get("code")) if err.get("code") is not None else None,
                error_type=err.get("type"),
            )
        out: list[StreamEvent] = []
        if not self.started and wire(chunk.get("model")):
            self.started = True
            out.append(StreamStart(wire(chunk.get("model")), wire(chunk.get("id"))))
        choices = chunk.get("choices") or []
        for choice in choices if isinstance(choices, list) else []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            piece = delta.get("content") if isinstance(delta, dict) else None
            if piece and isinstance(piece, str):
                self.partial.append(piece)
                out.append(TextDelta(piece))
            refusal = delta.get("refusal") if isinstance(delta, dict) else None
            if refusal and isinstance(refusal, str):  # a structured answer refused
                self.extra["refusal"] = self.extra.get("refusal", "") + refusal
            calls = delta.get("tool_calls") if isinstance(delta, dict) else None
            for c in calls if isinstance(calls, list) else []:
                if isinstance(c, dict) and isinstance(c.get("index", 0), int):
                    fn: dict[str, Any] = c["function"] if isinstance(c.get("function"), dict) \
                        else {}
                    out.append(self.tools.piece(c.get("index", 0), c.get("id"), fn.get("name"),
                                                fn.get("arguments")))
            raw = wire(choice.get("finish_reason"))
            if raw:
                out.extend(self.tools.finish())  # the calls are whole once the choice ends
                out.append(FinishEvent(finish_from(raw, FINISH), raw))
        if "usage_unreliable" in self.extra:
            return out  # one bad usage block: none of this stream's counts is believed
        try:
            usage = usage_from_openai(chunk.get("usage"))
        except UnreliableUsage as exc:
            self.usage = None
            self.extra.update(unreliable_usage_note(exc))
            return out
        if usage is not None:
            self.usage = usage
            out.append(UsageUpdate(usage))
        return out


def openai_message(m: Message) -> dict[str, Any]:
    """One of our turns as a Chat Completions message (tool calls and results included)."""
    if m.role == "tool":
        return {"role": "tool", "tool_call_id": m.tool_call_id, "content": m.content}
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.attachments:  # a content array: the text, then each image or file
        out["content"] = ([{"type": "text", "text": m.content}] if m.content else []) + \
            [openai_part(a) for a in m.attachments]
    if m.tool_calls:
        out["content"] = m.content or None
        out["tool_calls"] = [
            {"id": c.id, "type": "function",
             "function": {"name": c.name, "arguments": c.raw_arguments or json.dumps(c.arguments)}}
            for c in m.tool_calls]
    return out


def openai_tool(t: Tool) -> dict[str, Any]:
    fn: dict[str, Any] = {"name": t.name, "description": t.description,
                          "parameters": for_openai(t.parameters) if t.strict else
                          dict(t.parameters)}
    if t.strict:
        fn["strict"] = True
    return {"type": "function", "function": fn}
