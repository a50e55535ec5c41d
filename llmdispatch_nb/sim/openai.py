"""OpenAI Chat Completions, emulated: `POST /v1/chat/completions`, `GET /v1/models[/{id}]`.

Shapes follow the reference (vendor-protocols.md §1): Bearer auth, `{"error": {message,
type, param, code}}` bodies, data-only SSE ending `data: [DONE]`, the usage chunk only on
`stream_options.include_usage`, `x-ratelimit-*` headers with Go-style durations.

`OpenAIEmulator(local=True)` plays an OpenAI-compatible local server instead: Ollama's
stream shape (the role repeated in every delta, `reasoning` deltas for thinking models,
bare usage), llama.cpp's typed errors where Ollama has none (503 `unavailable_error`,
`exceed_context_size_error`), no rate-limit headers, unknown fields ignored, and no key
needed unless `api_key` is set (as with `vllm serve --api-key`).

The Azure emulator subclasses this one and overrides the methods marked "hook". The checks
of a chat request's body are `_openai_chat.py`; the shared wire texts `_openai_wire.py`.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import math
import string
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from ._batch_openai import batch_routes
from ._core import PROFILES, Fault, generate, paced
from ._openai_chat import chat_of
from ._openai_tools import answer_override, json_tokens, planned_calls, tool_reply
from ._openai_wire import (
    CHAT_PARAMS,
    DEFAULT_WAIT,
    LIMIT_REQUESTS,
    LIMIT_TOKENS,
    NO_KEY,
    OPENAI_VERSION,
    PARSE_ERROR,
    QUOTA,
    SERVER_ERROR,
    Chat,
    Invalid,
    Target,
    go_duration,
    mask_key,
    seconds_header,
)
from ._providers import CURRENT_PROVIDER, known_provider, provider_cards, provider_profile
from ._server import Emulator, hang, json_response, reset_connection, sse_frame


@functools.lru_cache(maxsize=256)
def _fingerprint(served: str) -> str:
    # Once per model, not once per streamed chunk (it was a fortieth of a fan-out's
    # emulator CPU).
    return "fp_" + hashlib.sha256(served.encode()).hexdigest()[:10]


class OpenAIEmulator(Emulator):
    vendor = "openai"
    base_path = "/v1"
    known_params: frozenset[str] = CHAT_PARAMS

    def __init__(self, *, local: bool = False, **kw: Any) -> None:
        self.local = local
        # False plays a server that ignores stream_options (older local servers do).
        self.include_usage_supported = True
        self._seen_prompts: set[str] = set()
        self._window: deque[tuple[float, int]] = deque()
        self._window_tokens = 0  # the sum over _window, kept as it moves
        super().__init__(**kw)

    def reset(self) -> None:
        super().reset()
        self._seen_prompts.clear()
        self._window.clear()
        self._window_tokens = 0
        self.include_usage_supported = True

    def routes(self) -> list[Any]:
        return [
            Route("/v1/chat/completions", self.chat, methods=["POST"]),
            Route("/v1/models", self.list_models, methods=["GET"]),
            Route("/v1/models/{model:path}", self.get_model, methods=["GET"]),
            # The catalogue's OpenAI-compatible providers (demo mode's groq:, deepseek:, ...).
            Route("/providers/{provider}/v1/chat/completions", self.provider_chat, methods=["POST"]),
            Route("/providers/{provider}/v1/models", self.provider_models, methods=["GET"]),
            *([] if self.local else batch_routes(self)),  # files + batches (_batch_openai)
            Route("/{path:path}", self.invalid_url,
                  methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
        ]

    # -- models ---------------------------------------------------------------------------

    def tables(self) -> tuple[str, ...]:
        # OpenAI lists its own models only; local ones belong to the local (compat) server.
        return ("compat",) if self.local else ("openai",)

    def resolve(self, name: str) -> Target | None:  # hook
        provider = CURRENT_PROVIDER.get()
        if provider is not None:
            prof = provider_profile(provider, name)
            return Target(name, name, "providers", prof) if prof is not None else None
        for table in self.tables():
            for key, prof in PROFILES[table].items():
                if name in (key, prof.served):
                    return Target(name, key, table, prof)
        return None

    def model_cards(self) -> list[dict[str, Any]]:
        provider = CURRENT_PROVIDER.get()
        if provider is not None:
            return provider_cards(provider)
        cards: dict[str, dict[str, Any]] = {}
        for table in self.tables():
            owner = "library" if self.local or table == "compat" else "system"
            for key, prof in PROFILES[table].items():
                for mid in (key, prof.served):
                    cards.setdefault(mid, {"id": mid, "object": "model", "created": prof.created,
                                           "owned_by": owner})
        return list(cards.values())

    async def list_models(self, request: Request) -> Response:
        self._begin(request)
        denied = self.check_auth(request)
        self.log(request, None, False, None)
        if denied is not None:
            return denied
        return json_response({"object": "list", "data": self.model_cards()},
                             headers=self.common_headers(request))

    async def provider_chat(self, request: Request) -> Response:
        return await self._as_provider(request, self.chat)

    async def provider_models(self, request: Request) -> Response:
        return await self._as_provider(request, self.list_models)

    async def _as_provider(self, request: Request, handler: Any) -> Response:
        provider = request.path_params["provider"]
        if self.local or not known_provider(provider):
            return await self.invalid_url(request)
        token = CURRENT_PROVIDER.set(provider)
        try:
            response: Response = await handler(request)
            return response
        finally:
            CURRENT_PROVIDER.reset(token)

    async def get_model(self, request: Request) -> Response:
        self._begin(request)
        denied = self.check_auth(request)
        self.log(request, None, False, None)
        if denied is not None:
            return denied
        mid = request.path_params["model"]
        for card in self.model_cards():
            if card["id"] == mid:
                return json_response(card, headers=self.common_headers(request))
        return self.error(request, 404, f"The model '{mid}' does not exist", param="model",
                          code="model_not_found")

    async def invalid_url(self, request: Request) -> Response:
        self._begin(request)
        self.log(request, None, False, None)
        return self.error(request, 404, f"Invalid URL ({request.method} {request.url.path})")

    # -- auth, errors, headers (hooks) ------------------------------------------------------

    @staticmethod
    def bearer(request: Request) -> str | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return token.strip() if scheme.lower() == "bearer" and token.strip() else None

    def check_auth(self, request: Request) -> Response | None:  # hook
        key = self.bearer(request)
        if self.local:
            if self.api_key is None or key == self.api_key:
                return None
            # llama.cpp's answer when started with --api-key (vLLM's is a bare 401).
            return self.error(request, 401, "Invalid API Key", type="authentication_error",
                              code=401)
        if key is None:
            return self.error(request, 401, NO_KEY)
        if self.api_key is not None and key != self.api_key:
            return self.wrong_key(request, key)
        return None

    def wrong_key(self, request: Request, key: str | None) -> Response:
        shown = mask_key(key) if key else "****"
        return self.error(request, 401, f"Incorrect API key provided: {shown}. You can find your "
                          f"API key at https://platform.openai.com/account/api-keys.",
                          code="invalid_api_key")

    def error_body(self, status: int, message: str, type: str | None, param: str | None,
                   code: str | int | None, extra: Mapping[str, Any]) -> dict[str, Any]:  # hook
        return {"error": {"message": message, "type": type, "param": param, "code": code, **extra}}

    def error(self, request: Request, status: int, message: str, *,
              type: str | None = "invalid_request_error", param: str | None = None,
              code: str | int | None = None, headers: Mapping[str, str] | None = None,
              extra: Mapping[str, Any] | None = None) -> Response:
        body = self.error_body(status, message, type, param, code, extra or {})
        return json_response(body, status, {**self.common_headers(request), **(headers or {})})

    def _begin(self, request: Request) -> None:
        request.state.started = time.perf_counter()

    def request_id(self) -> str:
        return f"req_{self._rng.getrandbits(128):032x}"

    def common_headers(self, request: Request) -> dict[str, str]:  # hook
        if self.local:
            return {}
        started = getattr(request.state, "started", None) or time.perf_counter()
        return {
            "x-request-id": self.request_id(),
            "openai-version": OPENAI_VERSION,
            "openai-organization": "user-simulated",
            "openai-processing-ms": str(max(1, round((time.perf_counter() - started) * 1000))),
        }

    def ratelimit_headers(self, tokens: int, wait: float | None = None) -> dict[str, str]:  # hook
        """Sliding one-minute window; `wait` describes an exhausted limit (a 429)."""
        if self.local:
            return {}
        now = time.monotonic()
        self._window.append((now, tokens))
        self._window_tokens += tokens
        while self._window and now - self._window[0][0] > 60:
            self._window_tokens -= self._window.popleft()[1]
        used_r = len(self._window)
        used_t = self._window_tokens
        return {
            "x-ratelimit-limit-requests": str(LIMIT_REQUESTS),
            "x-ratelimit-limit-tokens": str(LIMIT_TOKENS),
            "x-ratelimit-remaining-requests": str(max(0, LIMIT_REQUESTS - used_r)),
            "x-ratelimit-remaining-tokens": "0" if wait is not None else str(max(0, LIMIT_TOKENS - used_t)),
            # OpenAI reports resets to the millisecond.
            "x-ratelimit-reset-requests": go_duration(round(used_r * 60 / LIMIT_REQUESTS, 3)),
            "x-ratelimit-reset-tokens": go_duration(round(wait if wait is not None
                                                          else used_t * 60 / LIMIT_TOKENS, 3)),
        }

    # -- chat -------------------------------------------------------------------------------

    async def chat(self, request: Request) -> Response:
        self._begin(request)
        body = await self.json_body(request)
        named = body.get("model") if isinstance(body, dict) else None
        return await self.serve_chat(request, body, named if isinstance(named, str) else None)

    async def serve_chat(self, request: Request, body: Any, name: str | None) -> Response:
        streamed = isinstance(body, dict) and body.get("stream") is True
        denied = self.check_auth(request)
        if denied is not None:
            self.log(request, name or "", streamed, None)
            return denied
        try:
            chat = self.read_chat(request, body, name)
        except Invalid as refused:
            self.log(request, name or "", streamed, None)
            return refused.response
        fault = self.faults.next_fault(chat.target.name)
        self.log(request, chat.target.name, chat.stream, fault.kind if fault else None)
        chat.id = self.next_id("chatcmpl-")
        chat.created = int(time.time())
        if fault is not None:
            early = await self.fault_before_reply(request, fault, chat)
            if early is not None:
                return early
        return await self.reply(request, chat, fault)

    def resolve_or_refuse(self, request: Request, name: str | None) -> Target:  # hook
        if not name:
            raise Invalid(self.error(request, 400, "you must provide a model parameter"))
        target = self.resolve(name)
        if target is None:
            if self.local:
                raise Invalid(self.error(request, 404, f'model "{name}" not found, try pulling '
                                         f"it first", type="not_found_error"))
            raise Invalid(self.error(request, 404, f"The model `{name}` does not exist or you do "
                                     f"not have access to it.", code="model_not_found"))
        return target

    def read_chat(self, request: Request, body: Any, name: str | None) -> Chat:
        def refuse(message: str, param: str | None = None, code: str | None = None) -> Invalid:
            return Invalid(self.error(request, 400, message, param=param, code=code))

        if not isinstance(body, dict):
            raise refuse(PARSE_ERROR)
        if not self.local:  # local servers ignore what they do not know
            unknown = sorted(set(body) - self.known_params)
            if unknown:
                raise refuse(f"Unrecognized request argument supplied: {unknown[0]}")
        target = self.resolve_or_refuse(request, name)
        return chat_of(body, target, refuse, local=self.local,
                       include_usage_supported=self.include_usage_supported,
                       context_error=lambda tokens: self.context_error(request, target, tokens))

    def context_error(self, request: Request, target: Target, tokens: int) -> Response:
        window = target.profile.context_window
        if self.local:
            return self.error(request, 400, "the request exceeds the available context size, "
                              "try increasing it", type="exceed_context_size_error", code=400,
                              extra={"n_prompt_tokens": tokens, "n_ctx": window})
        return self.error(request, 400, f"This model's maximum context length is {window} tokens. "
                          f"However, your messages resulted in {tokens} tokens. Please reduce "
                          f"the length of the messages.", param="messages",
                          code="context_length_exceeded")

    # -- faults -----------------------------------------------------------------------------

    async def fault_before_reply(self, request: Request, fault: Fault, chat: Chat) -> Response | None:
        if fault.kind == "hang":
            await hang(request, fault.hang_s)
            # Only reached if the client outwaited us: a gateway would give up like this.
            return self.error(request, 504, "Gateway timeout.", type="server_error")
        if fault.kind == "reset":
            reset_connection(request)
            await asyncio.sleep(0)  # let the server see the loss before anything is "sent"
            return Response(status_code=500)
        if fault.kind == "midstream-error" and not chat.stream:
            # A whole-body request that fails while generating comes back as a plain 500.
            return self.error(request, 500, SERVER_ERROR, type="server_error")
        return self.status_fault(request, fault, chat)

    def status_fault(self, request: Request, fault: Fault, chat: Chat) -> Response | None:  # hook
        k = fault.kind
        if k in DEFAULT_WAIT:
            wait = fault.retry_after if fault.retry_after is not None else DEFAULT_WAIT[k]
            headers = self.ratelimit_headers(chat.prompt_tokens, wait)
            if k == "429-ms":
                headers["retry-after-ms"] = str(round(wait * 1000))
                headers["retry-after"] = str(math.ceil(wait))
            else:
                headers["retry-after"] = seconds_header(wait)
            if k == "429-no-retry":
                headers["x-should-retry"] = "false"
            used = LIMIT_TOKENS - min(chat.prompt_tokens, LIMIT_TOKENS) // 2
            msg = (f"Rate limit reached for {chat.target.name} in organization org-simulated on "
                   f"tokens per min (TPM): Limit {LIMIT_TOKENS}, Used {used}, Requested "
                   f"{chat.prompt_tokens}. Please try again in {go_duration(wait)}. Visit "
                   f"https://platform.openai.com/account/rate-limits to learn more.")
            return self.error(request, 429, msg, type="tokens", code="rate_limit_exceeded",
                              headers=headers)
        retry = {"retry-after": seconds_header(fault.retry_after)} if fault.retry_after else {}
        if k == "quota":
            return self.error(request, 429, QUOTA, type="insufficient_quota",
                              code="insufficient_quota")
        if k == "408":
            # OpenAI documents no 408 body; this is its usual error shape with a plain message.
            return self.error(request, 408, "Request timed out.", type="server_error")
        if k == "409":
            # Nearest real case: a conflicting request on the same resource, worth retrying.
            return self.error(request, 409, "The request conflicted with another request in "
                              "progress. Please try again.", code="conflict")
        if k == "500":
            return self.error(request, 500, SERVER_ERROR, type="server_error")
        if k in ("503", "529"):
            if self.local:
                return self.error(request, 503, "Loading model", type="unavailable_error",
                                  code=503, headers=retry)
            # OpenAI has no 529: overload is a 503, either "overloaded" or "Slow Down".
            msg = ("The server is overloaded or not ready yet." if k == "503" else
                   "Slow Down: a sudden increase in your request rate is impacting service "
                   "reliability. Please reduce your request rate and try again.")
            return self.error(request, 503, msg, type="server_error", headers=retry)
        if k == "401":
            if self.local:
                return self.error(request, 401, "Invalid API Key", type="authentication_error",
                                  code=401)
            return self.wrong_key(request, self.bearer(request))
        if k == "400":
            return self.error(request, 400, "Invalid value for 'temperature': expected a number "
                              "between 0 and 2.", param="temperature", code="invalid_value")
        if k == "context-length":
            window = chat.target.profile.context_window
            return self.context_error(request, chat.target, window + chat.prompt_tokens)
        if k in ("content-filter", "blocked"):
            # OpenAI refuses a flagged prompt with a 400 (no Azure-style annotations).
            return self.error(request, 400, "Your request was rejected as a result of our safety "
                              "system. Your prompt may contain text that is not allowed by our "
                              "safety system.", code="content_policy_violation")
        return None

    # -- the answer -------------------------------------------------------------------------

    def usage(self, chat: Chat, completion: int, reasoning: int, cached: int) -> dict[str, Any]:
        u: dict[str, Any] = {"prompt_tokens": chat.prompt_tokens, "completion_tokens": completion,
                             "total_tokens": chat.prompt_tokens + completion}
        if not self.local:  # local servers report the bare counts
            u["prompt_tokens_details"] = {"cached_tokens": cached, "audio_tokens": 0}
            u["completion_tokens_details"] = {
                "reasoning_tokens": reasoning, "audio_tokens": 0,
                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
        return u

    def served(self, chat: Chat) -> str:
        return chat.target.key if self.local else chat.target.profile.served

    def fingerprint(self, chat: Chat) -> str:
        return "fp_ollama" if self.local else _fingerprint(self.served(chat))

    def thinks(self, chat: Chat) -> bool:
        return self.local and chat.target.key.startswith("qwen3")

    async def reply(self, request: Request, chat: Chat, fault: Fault | None) -> Response:
        kind = fault.kind if fault else None
        if chat.schema is not None or chat.tools:
            kind = self.faults.content_fault(chat.target.name) or kind
        planned = planned_calls(chat, kind)
        if planned:
            return await self.tool_reply(request, chat, planned)
        digest = hashlib.sha256(f"{chat.target.key}|{chat.prompt}".encode()).hexdigest()
        reasoning, visible = 0, chat.max_tokens
        if chat.target.reasoning and chat.effort != "none":
            # Hidden reasoning is billed as output and eats the max_completion_tokens budget;
            # more effort, more of it.
            scale = {"minimal": 0.25, "low": 0.5, "high": 2.0, "xhigh": 3.0}.get(chat.effort or "", 1)
            reasoning = int(64 * scale) * (1 + int(digest[:4], 16) % 7)
            if chat.max_tokens is not None:
                reasoning = min(reasoning, chat.max_tokens)
                visible = chat.max_tokens - reasoning
        gen = generate(chat.prompt, chat.target.key, vendor=chat.target.table, max_tokens=visible,
                       stop=chat.stop, seed=chat.seed, question=chat.question)
        tokens, finish = list(gen.tokens), gen.finish
        override = answer_override(chat, kind)  # JSON for a schema; prose from tool results
        if override is not None:
            tokens, finish = json_tokens(override), "stop"
            if visible is not None and len(tokens) > visible:
                tokens, finish = tokens[:visible], "length"
        if kind == "content-filter-output":
            tokens, finish = tokens[: max(1, len(tokens) // 3)], "content_filter"
        cached = 0
        if chat.prompt_tokens >= 1024 and not self.local:
            # Prompt caching: a repeated long prompt is served from cache in 128-token steps.
            if digest in self._seen_prompts:
                cached = chat.prompt_tokens // 128 * 128
            self._seen_prompts.add(digest)
        usage = self.usage(chat, len(tokens) + reasoning, reasoning, cached)
        headers = {**self.common_headers(request),
                   **self.ratelimit_headers(chat.prompt_tokens + len(tokens) + reasoning)}
        if chat.stream:
            return StreamingResponse(self.events(request, chat, tokens, finish, usage, fault),
                                     media_type="text/event-stream", headers=headers)
        async for _ in paced(tokens, chat.target.profile, self.time_scale, self.rng()):
            pass
        body = self.completion(chat, "".join(tokens), finish, usage)
        raw = bytes(json_response(body).body)
        if kind == "malformed-json":
            return Response(raw[: len(raw) // 2], media_type="application/json", headers=headers)
        if kind == "midstream-disconnect":
            return StreamingResponse(self.cut_body(request, raw),
                                     media_type="application/json", headers=headers)
        return json_response(body, 200, headers)

    async def tool_reply(self, request: Request, chat: Chat, planned: list[Any]) -> Response:
        return tool_reply(self, request, chat, planned)  # sim/_openai_tools.py

    async def cut_body(self, request: Request, raw: bytes) -> AsyncIterator[bytes]:
        yield raw[: len(raw) // 2]
        await asyncio.sleep(0.05)  # let the first half reach the client before the reset
        reset_connection(request)
        await asyncio.sleep(0)

    def completion(self, chat: Chat, text: str, finish: str, usage: dict[str, Any]) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if self.local:
            if self.thinks(chat):
                message["reasoning"] = "The user wants an answer; this reasoning is simulated."
        else:
            message["refusal"] = None
        body: dict[str, Any] = {
            "id": chat.id, "object": "chat.completion", "created": chat.created,
            "model": self.served(chat),
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": finish}],
            "usage": usage,
        }
        if not self.local:
            body["service_tier"] = "default"
        body["system_fingerprint"] = self.fingerprint(chat)
        self.annotate_completion(body, finish)
        return body

    def annotate_completion(self, body: dict[str, Any], finish: str) -> None:  # hook
        """Azure adds its content-filter results here."""

    def stream_preamble(self, chat: Chat) -> list[dict[str, Any]]:  # hook
        """Chunks before the first real one (Azure's prompt-filter chunk)."""
        return []

    def annotate_chunk(self, chunk: dict[str, Any], delta: Mapping[str, Any],
                       finish: str | None) -> None:  # hook
        """Azure adds per-choice content-filter results here."""

    def chunk(self, chat: Chat, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        if self.local and "role" not in delta:
            delta = {"role": "assistant", "content": "", **delta}  # Ollama repeats the role
        c: dict[str, Any] = {
            "id": chat.id, "object": "chat.completion.chunk", "created": chat.created,
            "model": self.served(chat)}
        if not self.local:
            c["service_tier"] = "default"
        c["system_fingerprint"] = self.fingerprint(chat)
        c["choices"] = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        if chat.include_usage:
            c["usage"] = None
        if chat.obfuscate and delta:
            c["obfuscation"] = self.padding(str(delta.get("content", "")))
        self.annotate_chunk(c, delta, finish)
        return c

    def padding(self, content: str) -> str:
        """OpenAI's `obfuscation` field: random padding so chunk sizes hide the text."""
        rng = self.rng()
        alphabet = string.ascii_letters + string.digits
        return "".join(rng.choice(alphabet) for _ in range(max(1, 16 - len(content))))

    async def events(self, request: Request, chat: Chat, tokens: list[str], finish: str,
                     usage: dict[str, Any], fault: Fault | None) -> AsyncIterator[bytes]:
        kind = fault.kind if fault else None
        for pre in self.stream_preamble(chat):
            yield sse_frame(pre)
        yield sse_frame(self.chunk(chat, {"role": "assistant", "content": ""}))
        if kind == "malformed-json":
            yield f'data: {{"id":"{chat.id}","object":"chat.completion.chunk","choices":[{{'.encode() \
                + b'"delta":{"content":\n\n'
            return
        if self.thinks(chat):
            for word in ("Thinking", " about", " it."):
                yield sse_frame(self.chunk(chat, {"content": "", "reasoning": word}))
        cut = fault.after_tokens if fault and kind in ("midstream-error",
                                                        "midstream-disconnect") else None
        sent = 0
        async for tok in paced(tokens, chat.target.profile, self.time_scale, self.rng()):
            if cut is not None and sent >= cut:
                break
            yield sse_frame(self.chunk(chat, {"content": tok}))
            sent += 1
        if kind == "midstream-error":
            yield sse_frame(self.error_body(500, SERVER_ERROR, "server_error", None, None, {}))
            return
        if kind == "midstream-disconnect":
            await asyncio.sleep(0.05)  # let the text reach the client before the reset
            reset_connection(request)
            await asyncio.sleep(0)
            return
        for frame in self.stream_end(chat, finish, usage):
            yield frame

    def stream_end(self, chat: Chat, finish: str, usage: dict[str, Any]) -> list[bytes]:
        """The frames that close a stream, text or tool calls: the finish chunk, the usage
        chunk (no choices) when `stream_options.include_usage` asked for it, `[DONE]`."""
        frames = [sse_frame(self.chunk(chat, {}, finish))]
        if chat.include_usage:
            last = self.chunk(chat, {})
            last["choices"] = []
            last["usage"] = usage
            last.pop("obfuscation", None)
            frames.append(sse_frame(last))
        frames.append(b"data: [DONE]\n\n")
        return frames

