"""The Anthropic Messages API, emulated: `POST /v1/messages` (plain and SSE),
`POST /v1/messages/count_tokens`, `GET /v1/models` (cursor paging) and `GET /v1/models/{id}`.

Faithful where clients can tell: `x-api-key` or `Authorization: Bearer` (the 2.x SDK sends
the latter), a required `anthropic-version`, a required `max_tokens`, the error body
`{"type":"error","error":{type,message},"request_id"}`, a `request-id` header on every
response, named SSE events whose `data.type` repeats the name, a `ping` after the first
`content_block_start`, cumulative `output_tokens` in `message_delta`, no `[DONE]`.

Prompt caching is emulated too, because it is what fills the cache fields of the usage:
blocks marked `cache_control` (or a top-level `cache_control`, which marks the last block)
write their prefix on first sight and read it back within its TTL, above a per-model
minimum length. The Models API's cards and paging are `_anthropic_models.py`; error bodies
and the faults that answer with them, `_anthropic_faults.py`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import Any, cast

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ._answers import Question
from ._anthropic_faults import ClosingStreamingResponse, anthropic_error, fault_response
from ._anthropic_models import DEFAULT_MAX_OUTPUT, MAX_OUTPUT, model_info, models_page
from ._anthropic_tools import Refused as StructuredRefused
from ._anthropic_tools import Structured, read_structured, tool_message, tool_stream
from ._attachments import Refusal, anthropic_media_refusal, anthropic_media_tokens, anthropic_seen
from ._batch_anthropic import batch_routes
from ._core import PROFILES, Fault, Profile, count_tokens, generate, paced, total_time
from ._rules import Refused, anthropic_refusal, anthropic_thinking_tokens
from ._server import Emulator, json_response, reset_connection, sse_frame

VERSION_FORMAT = re.compile(r"\d{4}-\d{2}-\d{2}")
# Shortest prefix Anthropic will cache, in tokens († from the prompt-caching docs).
CACHE_MIN_TOKENS = {"claude-haiku-4-5": 4096}
DEFAULT_CACHE_MIN_TOKENS = 1024
CACHE_TTL_S = {"5m": 300.0, "1h": 3600.0}
# The assistant turn the API appends after the last block: counted, never cacheable.
TURN_OVERHEAD_TOKENS = 3
ORGANIZATION_ID = "00000000-0000-4000-8000-00000000a11a"


@dataclass(frozen=True)
class Block:
    role: str  # "system", "user" or "assistant"
    text: str  # text blocks' text; other blocks as JSON (only counted)
    cache_ttl: str | None  # "5m"/"1h" when the block carries cache_control
    kind: str = "text"  # the block's type: "image" and "document" are checked per model


@dataclass(frozen=True)
class Ask:
    """A validated Messages request."""

    model: str  # as the client named it
    key: str  # the profile's name (alias)
    profile: Profile
    blocks: tuple[Block, ...]
    max_tokens: int | None
    stop: tuple[str, ...]
    stream: bool
    auto_cache_ttl: str | None  # top-level cache_control
    thoughts: int = 0  # thinking tokens: billed as output, inside max_tokens
    media: int = 0  # input tokens of its images and PDFs, by Anthropic's pixel/page rules
    structured: Structured | None = None  # a schema or tools (sim/_anthropic_tools.py)

    @property
    def prompt_text(self) -> str:
        return "\n".join(b.text for b in self.blocks)

    @property
    def question(self) -> Question:
        """What the simulated answer responds to: the latest user turn, not the history."""
        return Question.from_turns((b.role, b.text) for b in self.blocks)

    @property
    def pieces(self) -> list[str]:
        """The blocks as the emulator counts them."""
        return [f"{b.role}:{b.text}\n" for b in self.blocks]

    @property
    def input_tokens(self) -> int:
        return count_tokens("".join(self.pieces)) + TURN_OVERHEAD_TOKENS + self.media


class Invalid(Exception):
    """A request the API refuses; carries the status and error type it answers with."""

    def __init__(self, message: str, status: int = 400, etype: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status = status
        self.etype = etype


def _cache_ttl(block: Any) -> str | None:
    cc = block.get("cache_control") if isinstance(block, dict) else None
    if not isinstance(cc, dict):
        return None
    if cc.get("type") != "ephemeral":
        raise Invalid("cache_control.type: Input should be 'ephemeral'")
    ttl = cc.get("ttl", "5m")
    if ttl not in CACHE_TTL_S:
        raise Invalid("cache_control.ttl: Input should be '5m' or '1h'")
    return str(ttl)


def _blocks(role: str, content: Any, where: str) -> list[Block]:
    if isinstance(content, str):
        return [Block(role, content, None)]
    if not isinstance(content, list):
        raise Invalid(f"{where}: Input should be a valid list")
    out = []
    for j, block in enumerate(content):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise Invalid(f"{where}.{j}: Input should be a valid dictionary or object to extract fields from")
        if block["type"] == "text":
            if not isinstance(block.get("text"), str):
                raise Invalid(f"{where}.{j}.text: Field required")
            if not block["text"]:
                raise Invalid(f"{where}.{j}: text content blocks must be non-empty")
            text = block["text"]
        elif block["type"] in ("image", "document"):  # a line the answer quotes, not base64
            try:
                text = anthropic_seen(block, f"{where}.{j}.{block['type']}")
            except Refusal as exc:
                raise Invalid(str(exc)) from None
        else:
            text = json.dumps({k: v for k, v in block.items() if k != "cache_control"}, sort_keys=True)
        out.append(Block(role, text, _cache_ttl(block), block["type"]))
    return out


class AnthropicEmulator(Emulator):
    vendor = "anthropic"

    def __init__(self, **kw: Any) -> None:
        self.profiles: dict[str, Profile] = dict(PROFILES["anthropic"])
        # prefix hash -> (expires at, monotonic clock; prefix length in tokens)
        self._cache: dict[str, tuple[float, int]] = {}
        super().__init__(**kw)

    def routes(self) -> list[Any]:
        every = ["GET", "POST", "PUT", "PATCH", "DELETE"]
        return [
            Route("/v1/messages", self.messages, methods=["POST"]),
            *batch_routes(self),  # Message Batches (_batch_anthropic)
            Route("/v1/messages/count_tokens", self.count_tokens, methods=["POST"]),
            Route("/v1/models", self.list_models, methods=["GET"]),
            Route("/v1/models/{model_id:path}", self.get_model, methods=["GET"]),
            Route("/{path:path}", self.not_found, methods=every),
        ]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # One id per request, known to the handler (for error bodies) and sent as a header
        # on every response, errors and 404s included, as the real API does.
        request_id = self.next_id("req_")
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [
                    *message.get("headers", []), (b"request-id", request_id.encode()),
                    (b"anthropic-organization-id", ORGANIZATION_ID.encode())]}
            await send(message)

        await self.app(scope, receive, send_with_id)

    def reset(self) -> None:
        super().reset()
        self._cache.clear()

    # -- shapes ------------------------------------------------------------------------

    error = staticmethod(anthropic_error)

    def lookup(self, name: Any) -> tuple[str, Profile] | None:
        """A model by alias (claude-haiku-4-5) or dated id (claude-haiku-4-5-20251001)."""
        if not isinstance(name, str):
            return None
        if name in self.profiles:
            return name, self.profiles[name]
        for key, profile in self.profiles.items():
            if profile.served == name:
                return key, profile
        return None

    def check_headers(self, request: Request) -> Response | None:
        key = request.headers.get("x-api-key")
        if key is None:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            key = token.strip() if scheme.lower() == "bearer" else ""
        if not key.strip():
            return self.error(request, 401, "authentication_error", "x-api-key header is required")
        if self.api_key is not None and key != self.api_key:
            return self.error(request, 401, "authentication_error", "invalid x-api-key")
        version = request.headers.get("anthropic-version")
        if not version:
            return self.error(request, 400, "invalid_request_error",
                              "anthropic-version: header is required")
        if not VERSION_FORMAT.fullmatch(version.strip()):
            return self.error(request, 400, "invalid_request_error",
                              "anthropic-version: must be a date such as 2023-06-01")
        return None

    def read_ask(self, body: Any, *, need_max_tokens: bool = True) -> Ask:
        if not isinstance(body, dict):
            raise Invalid("There was an error parsing the body of your request: it is not a JSON object")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise Invalid("model: Field required")
        max_tokens = body.get("max_tokens")
        if need_max_tokens:
            if max_tokens is None:
                raise Invalid("max_tokens: Field required")
            if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
                raise Invalid("max_tokens: Input should be a valid integer")
            if max_tokens < 1:
                raise Invalid("max_tokens: Input should be greater than or equal to 1")
        messages = body.get("messages")
        if messages is None:
            raise Invalid("messages: Field required")
        if not isinstance(messages, list):
            raise Invalid("messages: Input should be a valid list")
        if not messages:
            raise Invalid("messages: List should have at least 1 item after validation, not 0")
        blocks: list[Block] = []
        system = body.get("system")
        if system is not None:
            if not isinstance(system, str | list):
                raise Invalid("system: Input should be a valid string")
            if system:
                blocks.extend(_blocks("system", system, "system"))
        for i, m in enumerate(messages):
            if not isinstance(m, dict):
                raise Invalid(f"messages.{i}: Input should be a valid dictionary")
            if m.get("role") not in ("user", "assistant"):
                raise Invalid(f"messages.{i}.role: Input should be 'user' or 'assistant'")
            content = m.get("content")
            final_assistant = i == len(messages) - 1 and m["role"] == "assistant"
            if content in ("", []) and not final_assistant:
                raise Invalid(f"messages.{i}: all messages must have non-empty content except "
                              f"for the optional final assistant message")
            if content is None:
                raise Invalid(f"messages.{i}.content: Field required")
            blocks.extend(_blocks(m["role"], content, f"messages.{i}.content"))
        for name in ("temperature", "top_p"):
            v = body.get(name)
            if v is None:
                continue
            if not isinstance(v, int | float) or isinstance(v, bool):
                raise Invalid(f"{name}: Input should be a valid number")
            if not 0 <= v <= 1:
                bound = "less than or equal to 1" if v > 1 else "greater than or equal to 0"
                raise Invalid(f"{name}: Input should be {bound}")
        stop = body.get("stop_sequences") or []
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise Invalid("stop_sequences: Input should be a valid list of strings")
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise Invalid("stream: Input should be a valid boolean")
        auto_ttl = _cache_ttl(body)
        marks = sum(1 for b in blocks if b.cache_ttl) + (1 if auto_ttl else 0)
        if marks > 4:
            raise Invalid(f"A maximum of 4 blocks with cache_control may be provided. Found {marks}.")
        found = self.lookup(model)
        if found is None:
            raise Invalid(f"model: {model}", 404, "not_found_error")
        key, profile = found
        try:
            anthropic_refusal(body, profile.info, profile.served)
        except Refused as exc:
            raise Invalid(str(exc)) from None
        media = anthropic_media_refusal({b.kind for b in blocks}, profile.info, profile.served)
        if media:
            raise Invalid(media)
        cap = MAX_OUTPUT.get(key, DEFAULT_MAX_OUTPUT)
        if isinstance(max_tokens, int) and max_tokens > cap:
            raise Invalid(f"max_tokens: {max_tokens} > {cap}, which is the maximum allowed number "
                          f"of output tokens for {profile.served}")
        parsed = Ask(model, key, profile, tuple(blocks),
                     max_tokens if isinstance(max_tokens, int) and need_max_tokens else None,
                     tuple(stop), stream, auto_ttl,
                     media=anthropic_media_tokens(body.get("messages"), model))
        if need_max_tokens:
            parsed = replace(parsed, thoughts=min(anthropic_thinking_tokens(body, parsed.prompt_text),
                                                  parsed.max_tokens or 0))
        try:
            parsed = replace(parsed, structured=read_structured(body, profile.info, profile.served))
        except StructuredRefused as exc:
            raise Invalid(str(exc)) from None
        window, n = profile.context_window, parsed.input_tokens
        if n > window:
            raise Invalid(f"prompt is too long: {n} tokens > {window} maximum")
        if parsed.max_tokens is not None and n + parsed.max_tokens > window:
            raise Invalid(f"input length and `max_tokens` exceed context limit: {n} + "
                          f"{parsed.max_tokens} > {window}, decrease input length or "
                          f"`max_tokens` and try again")
        return parsed

    # -- prompt caching ----------------------------------------------------------------

    def input_usage(self, ask: Ask) -> dict[str, Any]:
        """The input half of `usage`, reading and writing the emulated prompt cache."""
        pieces = ask.pieces
        total = ask.input_tokens
        marks = [(i, b.cache_ttl) for i, b in enumerate(ask.blocks) if b.cache_ttl]
        if ask.auto_cache_ttl and ask.blocks:
            marks = [m for m in marks if m[0] != len(ask.blocks) - 1]
            marks.append((len(ask.blocks) - 1, ask.auto_cache_ttl))
        now = time.monotonic()

        def prefix(i: int) -> tuple[str, int]:
            text = "".join(pieces[: i + 1])
            digest = hashlib.sha256(f"{ask.key}\0{text}".encode()).hexdigest()
            return digest, count_tokens(text)

        read, hit = 0, -1
        for i, ttl in sorted(marks, reverse=True):
            digest, tokens = prefix(i)
            entry = self._cache.get(digest)
            if entry is not None and entry[0] > now:
                read, hit = tokens, i
                self._cache[digest] = (now + CACHE_TTL_S[ttl or "5m"], tokens)  # a read refreshes
                break
        written = {"5m": 0, "1h": 0}
        upto = read
        minimum = CACHE_MIN_TOKENS.get(ask.key, DEFAULT_CACHE_MIN_TOKENS)
        for i, ttl in sorted(marks):
            if i <= hit:
                continue
            digest, tokens = prefix(i)
            if tokens < minimum or tokens <= upto:
                continue
            self._cache[digest] = (now + CACHE_TTL_S[ttl or "5m"], tokens)
            written[ttl or "5m"] += tokens - upto
            upto = tokens
        write = written["5m"] + written["1h"]
        return {
            "input_tokens": total - read - write,
            "cache_creation_input_tokens": write,
            "cache_read_input_tokens": read,
            "cache_creation": {"ephemeral_5m_input_tokens": written["5m"],
                               "ephemeral_1h_input_tokens": written["1h"]},
        }

    # -- routes ------------------------------------------------------------------------

    async def not_found(self, request: Request) -> Response:
        return self.error(request, 404, "not_found_error", f"Not found: {request.url.path}")

    async def count_tokens(self, request: Request) -> Response:
        self.log(request, None, False, None)
        refused = self.check_headers(request)
        if refused is not None:
            return refused
        try:
            ask = self.read_ask(await self.json_body(request), need_max_tokens=False)
        except Invalid as exc:
            return self.error(request, exc.status, exc.etype, str(exc))
        return json_response({"input_tokens": ask.input_tokens})

    async def list_models(self, request: Request) -> Response:
        self.log(request, None, False, None)
        refused = self.check_headers(request)
        if refused is not None:
            return refused
        page = models_page(self.profiles.items(), request.query_params)
        if isinstance(page, str):
            return self.error(request, 400, "invalid_request_error", page)
        return json_response(page)

    async def get_model(self, request: Request) -> Response:
        self.log(request, None, False, None)
        refused = self.check_headers(request)
        if refused is not None:
            return refused
        name = request.path_params["model_id"]
        found = self.lookup(name)
        if found is None:
            return self.error(request, 404, "not_found_error", f"model: {name}")
        return json_response(model_info(*found))

    async def messages(self, request: Request) -> Response:
        body = await self.json_body(request)
        model = body.get("model") if isinstance(body, dict) else None
        stream = bool(body.get("stream")) if isinstance(body, dict) else False
        refused = self.check_headers(request)
        if refused is not None:
            self.log(request, model if isinstance(model, str) else None, stream, None)
            return refused
        try:
            ask = self.read_ask(body)
        except Invalid as exc:
            self.log(request, model if isinstance(model, str) else None, stream, None)
            return self.error(request, exc.status, exc.etype, str(exc))
        fault = self.faults.next_fault(ask.model)
        self.log(request, ask.model, ask.stream, fault.kind if fault else None)
        if fault is not None:
            answer = await fault_response(request, fault, stream=ask.stream,
                                          input_tokens=ask.input_tokens,
                                          context_window=ask.profile.context_window)
            if answer is not None:
                return answer
        return await self.answer(request, ask, fault)

    # -- answers -----------------------------------------------------------------------

    def generation(self, ask: Ask) -> tuple[tuple[str, ...], str, str | None]:
        """Tokens, stop_reason and the stop sequence that ended the text (if one did)."""
        # Thinking comes first and counts inside max_tokens (it is below the budget, which
        # is below max_tokens): the answer gets what is left.
        room = None if ask.max_tokens is None else ask.max_tokens - ask.thoughts
        if room is not None and room < 1:  # (adaptive) thinking took the whole cap
            return (), "max_tokens", None
        g = generate(ask.prompt_text, ask.key, vendor=self.vendor, max_tokens=room,
                     stop=ask.stop, question=ask.question)
        if g.finish == "length":
            return g.tokens, "max_tokens", None
        if ask.stop:
            # generate() cuts at the first stop; find which one, as the API names it.
            full = generate(ask.prompt_text, ask.key, vendor=self.vendor,
                            question=ask.question).text
            hits = [(full.index(s), s) for s in ask.stop if s in full]
            if hits and min(hits)[0] == len(g.text):
                return g.tokens, "stop_sequence", min(hits)[1]
        return g.tokens, "end_turn", None

    def usage(self, ask: Ask, output_tokens: int) -> dict[str, Any]:
        usage = {**self.input_usage(ask), "output_tokens": output_tokens + ask.thoughts,
                 "service_tier": "standard"}
        if ask.thoughts:  # thinking is inside output_tokens; its own count since 2026-05
            usage["output_tokens_details"] = {"thinking_tokens": ask.thoughts}
        return usage

    async def answer(self, request: Request, ask: Ask, fault: Fault | None) -> Response:
        tokens, stop_reason, stop_sequence = self.generation(ask)
        kind = fault.kind if fault else None
        st = ask.structured
        if st is not None:  # a schema or tools: JSON, tool_use blocks, or an answer from results
            kind = self.faults.content_fault(ask.model) or kind
            question = ask.question.text
            planned = st.planned(ask.key, question, kind)
            if planned:
                return await self.tool_answer(ask, planned)
            text = st.text(ask.key, ask.prompt_text, question, kind)
            if text is not None:
                tokens, stop_reason, stop_sequence = tuple(
                    text[i:i + 4] for i in range(0, len(text), 4)), "end_turn", None
        if kind in ("content-filter", "blocked"):
            # Anthropic has no filter status: a refused prompt is a 200 whose stop_reason is
            # "refusal" and whose content is empty.
            tokens, stop_reason, stop_sequence = (), "refusal", None
        elif kind == "content-filter-output":
            # ...and a refusal while writing keeps the text so far, then stops.
            assert fault is not None
            tokens, stop_reason, stop_sequence = tokens[: fault.after_tokens], "refusal", None
        message_id = self.next_id("msg_")
        if not ask.stream:
            delay = total_time(ask.profile, len(tokens), self.time_scale)
            if delay > 0:
                await asyncio.sleep(delay)
            text = "".join(tokens)
            return json_response({
                "id": message_id, "type": "message", "role": "assistant",
                "model": ask.profile.served,
                "content": [{"type": "text", "text": text}] if text else [],
                "stop_reason": stop_reason, "stop_sequence": stop_sequence,
                "usage": self.usage(ask, len(tokens)),
            })
        return ClosingStreamingResponse(
            self.events(request, ask, message_id, tokens, stop_reason, stop_sequence, fault),
            media_type="text/event-stream; charset=utf-8",
            headers={"cache-control": "no-cache"})

    async def tool_answer(self, ask: Ask, planned: list[Any]) -> Response:
        """The model uses tools (sim/_anthropic_tools.py)."""
        message_id = self.next_id("msg_")
        if not ask.stream:
            return json_response(tool_message(self, ask, planned, message_id))
        return ClosingStreamingResponse(tool_stream(self, ask, planned, message_id),
                                        media_type="text/event-stream; charset=utf-8",
                                        headers={"cache-control": "no-cache"})

    async def events(self, request: Request, ask: Ask, message_id: str, tokens: tuple[str, ...],
                     stop_reason: str, stop_sequence: str | None,
                     fault: Fault | None) -> AsyncIterator[bytes]:
        kind = fault.kind if fault else None
        failing = kind in ("midstream-error", "midstream-disconnect")
        if failing:
            assert fault is not None
            tokens = tokens[: fault.after_tokens]
        usage = self.usage(ask, 1)  # message_start reports a token or so of output
        yield sse_frame({"type": "message_start", "message": {
            "id": message_id, "type": "message", "role": "assistant",
            "model": ask.profile.served, "content": [], "stop_reason": None,
            "stop_sequence": None, "usage": usage}}, "message_start")
        if tokens or failing:
            yield sse_frame({"type": "content_block_start", "index": 0,
                             "content_block": {"type": "text", "text": ""}}, "content_block_start")
        yield sse_frame({"type": "ping"}, "ping")
        sent = 0
        # paced() is an async generator: close it with ours, not whenever GC gets to it.
        agen = cast(AsyncGenerator[str, None], paced(tokens, ask.profile, self.time_scale, self.rng()))
        async with aclosing(agen) as pieces:
            async for piece in pieces:
                sent += 1
                yield sse_frame({"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": piece}},
                                "content_block_delta")
        if kind == "midstream-error":
            # An overload after HTTP 200: the vendor's own error event, then the end.
            yield sse_frame({"type": "error", "error": {"type": "overloaded_error",
                                                        "message": "Overloaded"},
                             "request_id": request.state.request_id}, "error")
            return
        if kind == "midstream-disconnect":
            # A reset discards what the client has not read yet: give the text time to land.
            await asyncio.sleep(0.1)
            reset_connection(request)
            await asyncio.sleep(0)  # let the server notice before the response ends
            return
        if tokens or failing:
            yield sse_frame({"type": "content_block_stop", "index": 0}, "content_block_stop")
        yield sse_frame({"type": "message_delta",
                         "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                         "usage": {"output_tokens": sent + ask.thoughts}}, "message_delta")
        yield sse_frame({"type": "message_stop"}, "message_stop")
