"""Anthropic Messages: `POST {base}/v1/messages`, `x-api-key` + `anthropic-version`, SSE with
named events that ends at `message_stop` (no `[DONE]`).

What differs from the OpenAI shape, and why this module exists:
- `system` is a top-level field, never a message; `max_tokens` is required (we send 4096
  when the caller gave none); temperature stops at 1; stop words are `stop_sequences`.
- Usage counts cached input *outside* `input_tokens`; we add the cache fields back in so
  `Usage.input_tokens` means "the whole prompt" for every vendor.
- A stream may fail after HTTP 200 with `event: error`; that becomes a `MidStreamError`
  carrying the vendor's error type (e.g. `overloaded_error`).
- Overload is its own status, 529; a spend limit is a 429 that waiting will not cure.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, Literal

import httpx

from .._attachments import anthropic_block
from .._attachments import check as check_attachments
from .._schema import for_anthropic
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
    Usage,
    UsageUpdate,
)
from ..errors import (
    ContextLengthError,
    MidStreamError,
    OverloadedError,
    ProtocolError,
    QuotaExhaustedError,
    RequestValidationError,
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

API_VERSION = "2023-06-01"
# Anthropic refuses a request without max_tokens; 4096 fits every current model's cap.
DEFAULT_MAX_TOKENS = 4096

FINISH: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    # pause_turn and anything new read as "other"
}

# 429 error codes that mean "out of money", not "too fast": retrying soon cannot help.
_SPEND_CODES = frozenset({"enforced_spend_limit_reached", "contract_spend_limit_reached",
                          "linked_organization_spend_limit_reached"})

PromptCache = Literal["off", "system", "auto"]


def usage_from_anthropic(u: Any) -> Usage | None:
    """Our Usage from Anthropic's, with cache reads and writes counted into the input.
    Raises `UnreliableUsage` for counts that cannot be true."""
    if u is None:
        return None
    if not isinstance(u, dict):
        raise UnreliableUsage(f"usage is a {type(u).__name__}, not an object")
    fresh = token_count(u, "input_tokens")
    write = token_count(u, "cache_creation_input_tokens")
    read = token_count(u, "cache_read_input_tokens")
    details = u.get("output_tokens_details")  # thinking, inside output_tokens (2026-05)
    return Usage(
        input_tokens=fresh + write + read,
        output_tokens=token_count(u, "output_tokens"),
        cache_read_tokens=read,
        cache_write_tokens=write,
        reasoning_tokens=token_count(details, "thinking_tokens") if isinstance(details, dict) else 0,
    )


class AnthropicAdapter(Adapter):
    """`prompt_cache` asks Anthropic to cache prompt prefixes (billed 1.25x once, 0.1x on
    reuse within 5 minutes): "system" marks the system prompt, "auto" lets the API put the
    breakpoint on the last block. Off by default, since it changes what a single call costs.
    Use it by registering an instance: `register("anthropic", AnthropicAdapter(prompt_cache="system"))`.
    """

    kind: ClassVar[str] = "anthropic"
    key_variables = ("ANTHROPIC_API_KEY",)
    price_provider = "anthropic"

    def __init__(self, prompt_cache: PromptCache = "off") -> None:
        if prompt_cache not in ("off", "system", "auto"):
            raise ValueError(f"prompt_cache must be 'off', 'system' or 'auto', not {prompt_cache!r}")
        self.prompt_cache = prompt_cache

    # -- request ---------------------------------------------------------------------

    def body(self, request: Request, model: str, *, stream: bool) -> dict[str, Any]:
        if request.temperature is not None and request.temperature > 1:
            raise RequestValidationError(
                f"temperature {request.temperature:g} is out of range for Anthropic, which "
                f"accepts 0 to 1; pass a value <= 1")
        # What this model accepts of what was asked: the catalogue's rules, in one place.
        sent = parameters_for(request, "anthropic", model, default_max_tokens=DEFAULT_MAX_TOKENS)
        check_attachments("anthropic", model, request)
        body: dict[str, Any] = {
            "model": model,
            "max_tokens": sent.max_tokens,
            "messages": anthropic_messages(request.messages),
        }
        if request.system:
            if self.prompt_cache == "system":
                body["system"] = [{"type": "text", "text": request.system,
                                   "cache_control": {"type": "ephemeral"}}]
            else:
                body["system"] = request.system
        if self.prompt_cache == "auto":
            body["cache_control"] = {"type": "ephemeral"}
        if sent.temperature is not None:
            body["temperature"] = sent.temperature
        if sent.top_p is not None:
            body["top_p"] = sent.top_p
        if sent.stop:
            body["stop_sequences"] = list(sent.stop)
        if sent.thinking == "adaptive":
            body["thinking"] = {"type": "adaptive"}
            body["output_config"] = {"effort": sent.effort}
        elif sent.budget:  # extended thinking; budget_tokens < max_tokens, as sent
            body["thinking"] = {"type": "enabled", "budget_tokens": sent.budget}
        if request.user:
            body["metadata"] = {"user_id": request.user}
        # Anthropic has no seed: sampling cannot be pinned, so `seed` is not sent.
        if stream:
            body["stream"] = True
        self.add_schema_and_tools(body, request, model)
        return body

    def add_schema_and_tools(self, body: dict[str, Any], request: Request, model: str) -> None:
        """A schema goes as `output_config.format` where the catalogue says the model takes
        it, else as one tool the model is made to call (its input is the answer: the
        dispatcher reads it back as text). Tools and `tool_choice` in Anthropic's shape."""
        tools = [anthropic_tool(t.name, t.description, t.parameters, t.strict)
                 for t in request.tools]
        choice: dict[str, Any] | None = None
        if request.tools:
            check_tools(request, "anthropic", model)
            tc = request.tool_choice
            choice = None if tc is None else {"type": {"required": "any"}.get(tc, tc)} \
                if tc in ("auto", "none", "required") else {"type": "tool", "name": tc}
        schema = request.schema
        if schema is not None and native_schema("anthropic", model):
            config = body.setdefault("output_config", {})
            config["format"] = {"type": "json_schema", "schema": for_anthropic(schema.json_schema)}
        elif schema is not None:
            if request.tools:
                raise RequestValidationError(
                    f"anthropic:{model} fills a schema only through a forced tool call (the "
                    f"catalogue says it has no native structured output), which leaves no "
                    f"room for tools=; send the schema and the tools in separate calls")
            tools = [anthropic_tool(schema.name, schema.description or
                                    f"Give the answer as {schema.name}.", schema.json_schema,
                                    False)]
            choice = {"type": "tool", "name": schema.name, "disable_parallel_tool_use": True}
        if tools:
            body["tools"] = tools
        if choice is not None:
            body["tool_choice"] = choice

    def auth_headers(self, endpoint: Endpoint) -> dict[str, str]:
        headers = {"anthropic-version": endpoint.api_version or API_VERSION}
        if endpoint.key is not None:
            if endpoint.auth == "bearer":
                headers["Authorization"] = f"Bearer {endpoint.key.reveal()}"
            else:
                headers["x-api-key"] = endpoint.key.reveal()
        return headers

    @staticmethod
    def api_url(endpoint: Endpoint, path: str) -> str:
        # The base is the host (https://api.anthropic.com); tolerate one given with /v1.
        base = endpoint.base_url.rstrip("/").removesuffix("/v1")
        return f"{base}/v1/{path.lstrip('/')}"

    def output_cap(self, request: Request, model: str, endpoint: Endpoint) -> int | None:
        return parameters_for(request, "anthropic", model, default_max_tokens=DEFAULT_MAX_TOKENS,
                              quiet=True).max_tokens

    def build_request(self, request: Request, model: str, endpoint: Endpoint, *, stream: bool) -> httpx.Request:
        headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream" if stream else "application/json",
            **endpoint.headers,
            **self.auth_headers(endpoint),
        }
        content = json.dumps(self.body(request, model, stream=stream)).encode()
        return post_json(self.api_url(endpoint, "messages"), headers, content)

    # -- response --------------------------------------------------------------------

    def parse_reply(self, response: httpx.Response, endpoint: Endpoint) -> ParsedReply:
        data = read_json(response, endpoint.name)
        if not isinstance(data, dict):
            raise ProtocolError("sent a JSON body that is not an object", vendor=endpoint.name)
        blocks = data.get("content") or []
        text = "".join(b["text"] for b in (blocks if isinstance(blocks, list) else [])
                       if isinstance(b, dict) and b.get("type") == "text"
                       and isinstance(b.get("text"), str))
        raw = wire(data.get("stop_reason"))
        tool_calls = tuple(tool_call(b.get("id"), b.get("name"), b.get("input"))
                           for b in (blocks if isinstance(blocks, list) else [])
                           if isinstance(b, dict) and b.get("type") == "tool_use")
        extra: dict[str, Any] = {}
        if wire(data.get("id")):
            extra["id"] = wire(data["id"])
        if isinstance(data.get("stop_sequence"), str) and data["stop_sequence"]:
            extra["stop_sequence"] = data["stop_sequence"]
        try:
            usage = usage_from_anthropic(data.get("usage"))
        except UnreliableUsage as exc:
            usage = None
            extra.update(unreliable_usage_note(exc))
        return ParsedReply(
            text=text,
            finish_reason=finish_from(raw, FINISH),
            raw_finish_reason=raw,
            usage=usage,
            model=wire(data.get("model")),
            request_id=request_id_of(response, "request-id") or wire(data.get("request_id")),
            extra=extra,
            tool_calls=tool_calls,
        )

    def stream_parser(self, endpoint: Endpoint) -> StreamParser:
        return AnthropicStream(endpoint.name)

    # -- errors ----------------------------------------------------------------------

    def map_error(self, response: httpx.Response, endpoint: Endpoint) -> VendorError:
        status = response.status_code
        data, err = error_body(response)
        if not isinstance(err, dict):
            err = {}
        message = str(err.get("message") or response.reason_phrase or "error")
        etype = err.get("type")
        etype = str(etype) if etype is not None else None
        details = err.get("details")
        code = details.get("error_code") if isinstance(details, dict) else None
        code = str(code) if code is not None else None
        body_rid = data.get("request_id") if isinstance(data, dict) else None
        cls = error_class(status, etype, code, message)
        if status == 404:
            message += model_hint(response, endpoint)
        return cls(
            message,
            vendor=endpoint.name,
            status=status,
            request_id=request_id_of(response, "request-id") or (str(body_rid) if body_rid else None),
            retry_after=parse_retry_after(response.headers),
            body=response.content[:2000],
            code=code,
            error_type=etype,
            should_retry=parse_should_retry(response.headers),
        )

    # -- models ----------------------------------------------------------------------

    def list_models_request(self, endpoint: Endpoint, *, after_id: str | None = None,
                            limit: int = 1000) -> httpx.Request:
        """One page of `GET /v1/models` (newest first); 1000 is the most a page holds."""
        params: dict[str, str | int] = {"limit": limit}
        if after_id:
            params["after_id"] = after_id
        return httpx.Request("GET", self.api_url(endpoint, "models"), params=params,
                             headers={**endpoint.headers, **self.auth_headers(endpoint)})

    def parse_models(self, response: httpx.Response) -> list[str]:
        data = read_json(response, self.kind)
        items = data.get("data") if isinstance(data, dict) else None
        ids = [wire(m.get("id")) for m in items if isinstance(m, dict)] \
            if isinstance(items, list) else []
        return [i for i in ids if i]

    def next_models_request(self, endpoint: Endpoint, response: httpx.Response) -> httpx.Request | None:
        """The request for the page after `response`, or None when it was the last."""
        data = read_json(response, self.kind)
        if not isinstance(data, dict) or not data.get("has_more") or not data.get("last_id"):
            return None
        return self.list_models_request(endpoint, after_id=str(data["last_id"]))


def error_class(status: int, etype: str | None, code: str | None, message: str) -> type[VendorError]:
    """Our exception for one Anthropic error, from its status, `error.type` and code."""
    lowered = message.lower()
    if code in _SPEND_CODES or (status == 429 and "spend limit" in lowered):
        return QuotaExhaustedError
    if etype == "billing_error" or status == 402 or "credit balance is too low" in lowered:
        return QuotaExhaustedError
    if status == 529 or etype == "overloaded_error":
        return OverloadedError
    # "prompt is too long: N tokens > M maximum", or the prompt plus max_tokens overflowing:
    # "input length and `max_tokens` exceed context limit: ..."
    if status in (400, 413) and any(s in lowered for s in ("prompt is too long", "context window",
                                                           "exceed context limit")):
        return ContextLengthError
    return error_class_for_status(status)


class AnthropicStream(StreamParser):
    """Reads the named events; usage arrives in `message_start` (input) and
    `message_delta` (cumulative output); `message_stop` ends it."""

    def __init__(self, vendor: str) -> None:
        super().__init__(vendor)
        self.partial: list[str] = []
        self.raw_usage: dict[str, Any] = {}
        self.usage: Usage | None = None
        self.tools = ToolCallAssembler()

    def _merge_usage(self, u: Any) -> UsageUpdate | None:
        if u is None or "usage_unreliable" in self.extra:
            return None  # after one bad block, none of this stream's counts is believed
        try:
            if not isinstance(u, dict):
                raise UnreliableUsage(f"usage is a {type(u).__name__}, not an object")
            # Counts are running totals: a later value replaces an earlier one; absent or
            # null fields keep what message_start said.
            self.raw_usage.update({k: v for k, v in u.items() if v is not None})
            self.usage = usage_from_anthropic(self.raw_usage)
        except UnreliableUsage as exc:
            self.usage = None
            self.extra.update(unreliable_usage_note(exc))
            return None
        return UsageUpdate(self.usage) if self.usage is not None else None

    def feed(self, event: SSEEvent) -> list[StreamEvent]:
        if event.stray:
            return []
        name = event.event
        if name == "ping" or (name and name not in _KNOWN_EVENTS):
            return []  # keep-alives, and event names newer than this adapter
        data = load_event_json(event, self.vendor)
        if not isinstance(data, dict):
            return []
        name = name or str(data.get("type") or "")
        out: list[StreamEvent] = []
        if name == "message_start":
            given = data.get("message")
            message: dict[str, Any] = given if isinstance(given, dict) else {}
            out.append(StreamStart(wire(message.get("model")), wire(message.get("id"))))
            update = self._merge_usage(message.get("usage"))
            if update is not None:
                out.append(update)
        elif name in ("content_block_start", "content_block_delta"):
            piece = _text_of(name, data)
            if piece:
                self.partial.append(piece)
                out.append(TextDelta(piece))
            index = data.get("index", 0)
            block = data.get("content_block") if name == "content_block_start" else \
                data.get("delta")
            if isinstance(block, dict) and isinstance(index, int):
                if block.get("type") == "tool_use":
                    out.append(self.tools.piece(index, block.get("id"), block.get("name"), ""))
                elif block.get("type") == "input_json_delta":
                    out.append(self.tools.piece(index, None, None, block.get("partial_json")))
        elif name == "content_block_stop":
            index = data.get("index", 0)
            if isinstance(index, int) and index in self.tools.pieces:
                out.extend(self.tools.finish(index))
        elif name == "message_delta":
            given = data.get("delta")
            raw = wire(given.get("stop_reason")) if isinstance(given, dict) else None
            if raw:
                out.append(FinishEvent(finish_from(raw, FINISH), raw))
            update = self._merge_usage(data.get("usage"))
            if update is not None:
                out.append(update)
        elif name == "message_stop":
            self.done = True
            out.extend(self.tools.finish())
        elif name == "error":
            self._raise(data)
        return out

    def _raise(self, data: dict[str, Any]) -> None:
        err = data.get("error")
        if not isinstance(err, dict):
            err = {}
        etype = str(err.get("type") or "error")
        message = str(err.get("message") or "the stream reported an error")
        rid = data.get("request_id")
        raise MidStreamError(
            f"{etype} in the stream: {message}", vendor=self.vendor,
            partial_text="".join(self.partial), usage=self.usage, error_type=etype,
            request_id=str(rid) if rid else None)


_KNOWN_EVENTS = frozenset({"message_start", "content_block_start", "content_block_delta",
                           "content_block_stop", "message_delta", "message_stop", "error"})


def _text_of(name: str, data: dict[str, Any]) -> str:
    """Text carried by a content event; tool input, thinking and signatures are not text."""
    if name == "content_block_start":
        block = data.get("content_block")
        text = block.get("text") if isinstance(block, dict) and block.get("type") == "text" else None
    else:
        delta = data.get("delta")
        text = delta.get("text") if isinstance(delta, dict) and delta.get("type") == "text_delta" else None
    return text if isinstance(text, str) else ""


def anthropic_tool(name: str, description: str, parameters: Any, strict: bool) -> dict[str, Any]:
    tool: dict[str, Any] = {"name": name, "description": description,
                            "input_schema": for_anthropic(parameters)}
    if strict:
        tool["strict"] = True
    return tool


def anthropic_messages(messages: tuple[Message, ...]) -> list[dict[str, Any]]:
    """Our turns as Anthropic messages: an assistant's tool calls become `tool_use` blocks,
    and the results that follow go together into one user message of `tool_result`
    blocks (Anthropic wants every result of a turn in the very next message)."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "tool":
            block: dict[str, Any] = {"type": "tool_result", "tool_use_id": m.tool_call_id,
                                     "content": m.content}
            if m.content.startswith("error:"):
                block["is_error"] = True
            last = out[-1] if out else None
            if last is not None and last["role"] == "user" and isinstance(last["content"], list) \
                    and all(b.get("type") == "tool_result" for b in last["content"]):
                last["content"].append(block)
            else:
                out.append({"role": "user", "content": [block]})
        elif m.tool_calls:
            blocks: list[dict[str, Any]] = [{"type": "text", "text": m.content}] if m.content else []
            blocks.extend({"type": "tool_use", "id": c.id, "name": c.name,
                           "input": dict(c.arguments)} for c in m.tool_calls)
            out.append({"role": "assistant", "content": blocks})
        elif m.attachments:  # images and PDFs first: Anthropic's vision guide asks for that
            out.append({"role": m.role, "content": [anthropic_block(a) for a in m.attachments] +
                        ([{"type": "text", "text": m.content}] if m.content else [])})
        else:
            out.append({"role": m.role, "content": m.content})
    return out
