"""The Gemini API (generativelanguage.googleapis.com, API key), emulated.

    POST /{v1beta|v1}/models/{model}:generateContent
    POST /{v1beta|v1}/models/{model}:streamGenerateContent[?alt=sse]
    POST /{v1beta|v1}/models/{model}:countTokens
    GET  /{v1beta|v1}/models[?pageSize=&pageToken=]     GET /{v1beta|v1}/models/{model}

As Google does it: the key in `x-goog-api-key` or `?key=`; a wrong key is a 400
`INVALID_ARGUMENT` with `API_KEY_INVALID`; errors are pretty-printed
`{"error":{code,message,status,details}}` with `RetryInfo`/`QuotaFailure` details and no
rate-limit headers; `alt=sse` streams `data: {json}` events framed with CRLF, running
`usageMetadata` on every chunk, `finishReason` on the last, then EOF (no `[DONE]`); without
`alt=sse` the same endpoint streams a JSON array. Gemini 2.5 models think by default, so
their usage carries `thoughtsTokenCount` (a `thinkingBudget` of 0 turns it off).
Google's error bodies and the faults that answer with them are `_gemini_errors.py`.
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import AsyncIterator, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ._answers import Question
from ._attachments import gemini_media_refusal, gemini_media_tokens, gemini_seen
from ._batch_gemini import batch_routes
from ._core import PROFILES, Fault, Generation, Profile, count_tokens, generate, paced
from ._gemini_errors import (
    JSON_TYPE,
    OVERLOADED,
    bad_key,
    error_object,
    fault_response,
    google_error,
    not_found,
    pretty,
)
from ._gemini_tools import Refused as StructuredRefused
from ._gemini_tools import function_call_parts, read_structured
from ._rules import Refused, gemini_thinking_tokens
from ._server import Emulator, hang, reset_connection

SSE_TYPE = "text/event-stream"
VERSIONS = ("v1beta", "v1")
GENERATION_METHODS = ["generateContent", "countTokens", "createCachedContent",
                      "batchGenerateContent"]
# Listed like the real API does, but it cannot answer a prompt: clients must filter by method.
EMBEDDING_MODEL = {
    "name": "models/gemini-embedding-001", "version": "001",
    "displayName": "Gemini Embedding 001", "description": "Obtain a distributed representation of a text.",
    "inputTokenLimit": 2048, "outputTokenLimit": 1,
    "supportedGenerationMethods": ["embedContent", "countTextTokens", "countTokens"],
}
TOP_LEVEL = {"contents", "systemInstruction", "generationConfig", "safetySettings", "tools",
             "toolConfig", "cachedContent", "labels", "model", "serviceTier", "store"}
GENERATION_CONFIG = {
    "stopSequences", "responseMimeType", "responseSchema", "responseJsonSchema",
    "responseModalities", "candidateCount", "maxOutputTokens", "temperature", "topP", "topK",
    "seed", "presencePenalty", "frequencyPenalty", "responseLogprobs", "logprobs",
    "enableEnhancedCivicAnswers", "speechConfig", "thinkingConfig", "imageConfig",
    "mediaResolution", "_responseJsonSchema",
}
SAFETY_CATEGORIES = ("HARM_CATEGORY_SEXUALLY_EXPLICIT", "HARM_CATEGORY_HATE_SPEECH",
                     "HARM_CATEGORY_HARASSMENT", "HARM_CATEGORY_DANGEROUS_CONTENT")


class Invalid(Exception):
    """A request Google would refuse with a 400 INVALID_ARGUMENT."""


def camel(name: str) -> str:
    """Proto-JSON also accepts snake_case field names."""
    head, *rest = name.split("_")
    return head + "".join(w[:1].upper() + w[1:] for w in rest)


def fields(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {camel(k): v for k, v in obj.items()}


class GeminiEmulator(Emulator):
    vendor = "google"
    base_path = ""  # the client adds the API version (v1beta) itself

    def __init__(self, **kw: Any) -> None:
        # What each request's URL and auth looked like, key values masked: tests check the
        # key travelled in the header, not in the URL.
        self.seen: list[tuple[str, str]] = []  # (path?query with key masked, "header"|"query"|"none")
        super().__init__(**kw)

    def routes(self) -> list[Any]:
        return [
            *batch_routes(self),  # Batch Mode (_batch_gemini), before models/{rest:path}
            Route("/{version}/models", self.list_models, methods=["GET"]),
            # `models/{model}:generateContent`: the colon is not a path separator, so the
            # rest of the path is taken whole and split here.
            Route("/{version}/models/{rest:path}", self.model_route, methods=["GET", "POST"]),
        ]

    def reset(self) -> None:
        super().reset()
        self.seen.clear()

    # -- auth --------------------------------------------------------------------------

    def check_key(self, request: Request) -> Response | None:
        header = request.headers.get("x-goog-api-key")
        query = request.query_params.get("key")
        source = "header" if header else "query" if query else "none"
        shown = request.url.path
        if request.url.query:
            shown += "?" + "&".join(
                f"{k}=***" if k == "key" else f"{k}={v}" for k, v in request.query_params.multi_items())
        self.seen.append((shown, source))
        key = header or query
        if not key:
            # A request with no key at all is an anonymous caller: 403, not the 400 of a bad key.
            return google_error(403, "PERMISSION_DENIED", (
                "Method doesn't allow unregistered callers (callers without established identity)."
                " Please use API Key or other form of API consumer identity to call this API."))
        if self.api_key is not None and key != self.api_key:
            return bad_key()
        return None

    # -- models ------------------------------------------------------------------------

    def model_entries(self) -> list[dict[str, Any]]:
        out = []
        for name, p in PROFILES["google"].items():
            words = name.split("-")
            display = " ".join(w.capitalize() if not w[0].isdigit() else w for w in words)
            entry: dict[str, Any] = {
                "name": f"models/{name}", "version": "001", "displayName": display,
                "description": f"{display}, emulated by llmdispatch-nb.",
                "inputTokenLimit": p.context_window,
                "outputTokenLimit": 65536 if "2.5" in name else 8192,
                "supportedGenerationMethods": GENERATION_METHODS,
                "temperature": 1, "topP": 0.95, "topK": 64 if "2.5" in name else 40,
                "maxTemperature": 2,
            }
            if "2.5" in name:
                entry["thinking"] = True
            out.append(entry)
        out.append(EMBEDDING_MODEL)
        return out

    async def list_models(self, request: Request) -> Response:
        version = request.path_params["version"]
        denied = self.check_key(request)
        self.log(request, None, False, None)
        if version not in VERSIONS:
            return Response("Not Found", status_code=404)
        if denied is not None:
            return denied
        try:
            size = int(request.query_params.get("pageSize") or 50)
            start = 0
            token = request.query_params.get("pageToken")
            if token:
                start = int(base64.urlsafe_b64decode(token.encode()).decode().removeprefix("o:"))
        except ValueError:
            return google_error(400, "INVALID_ARGUMENT", "Invalid page token or page size.")
        if size <= 0:
            size = 50
        size = min(size, 1000)
        models = self.model_entries()
        body: dict[str, Any] = {"models": models[start:start + size]}
        if start + size < len(models):
            body["nextPageToken"] = base64.urlsafe_b64encode(f"o:{start + size}".encode()).decode()
        return Response(pretty(body), headers={"content-type": JSON_TYPE})

    # -- generation ----------------------------------------------------------------------

    async def model_route(self, request: Request) -> Response:
        version = request.path_params["version"]
        model, _, method = request.path_params["rest"].partition(":")
        stream = method == "streamGenerateContent"
        denied = self.check_key(request)
        if version not in VERSIONS or (request.method == "GET") == bool(method):
            self.log(request, None, stream, None)
            return Response("Not Found", status_code=404)
        if denied is not None:
            self.log(request, model if method else None, stream, None)
            return denied
        if request.method == "GET":
            self.log(request, None, False, None)
            for entry in self.model_entries():
                if entry["name"] == f"models/{model}":
                    return Response(pretty(entry), headers={"content-type": JSON_TYPE})
            return not_found(model, version, "get")
        if method == "countTokens":
            self.log(request, None, False, None)
            return await self.count_route(request, model, version)
        if method not in ("generateContent", "streamGenerateContent"):
            self.log(request, model, False, None)
            return google_error(404, "NOT_FOUND", f"Method {method} is not found.")
        return await self.generate_content(request, model, version, stream)

    async def count_route(self, request: Request, model: str, version: str) -> Response:
        body = await self.json_body(request)
        if model not in PROFILES["google"]:
            return not_found(model, version, "countTokens")
        if not isinstance(body, dict):
            return google_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
        inner = fields(body).get("generateContentRequest")
        try:
            text, _ = read_prompt(fields(inner) if isinstance(inner, dict) else fields(body))
        except Invalid as exc:
            return google_error(400, "INVALID_ARGUMENT", str(exc))
        asked = fields(inner) if isinstance(inner, dict) else fields(body)
        n = count_tokens(text) + gemini_media_tokens(asked.get("contents"), model)
        return Response(pretty({"totalTokens": n, "promptTokensDetails": [
            {"modality": "TEXT", "tokenCount": n}]}), headers={"content-type": JSON_TYPE})

    async def generate_content(self, request: Request, model: str, version: str,
                               stream: bool) -> Response:
        body = await self.json_body(request)
        profile = PROFILES["google"].get(model)
        if profile is None:
            self.log(request, model, stream, None)
            return not_found(model, version, "generateContent")
        fault = self.faults.next_fault(model)
        self.log(request, model, stream, fault.kind if fault else None)
        try:
            if not isinstance(body, dict):
                raise Invalid("Invalid JSON payload received. Unexpected token.")
            text, config = read_prompt(fields(body))
            if media := gemini_media_refusal(fields(body).get("contents"), profile.info):
                raise Invalid(media)
            thoughts = gemini_thinking_tokens(model, profile.info, config, text)
            structured = read_structured(fields(body), config, profile.info, model)
        except (Invalid, Refused, StructuredRefused) as exc:
            return google_error(400, "INVALID_ARGUMENT", str(exc))
        # Thinking comes first and counts inside maxOutputTokens (vendor-protocols.md §11.3):
        # the answer gets what it leaves, and nothing at all when it takes the whole cap.
        cap = config.get("maxOutputTokens") or profile.max_output_tokens
        thoughts = min(thoughts, cap)
        gen = generate(text, model, vendor="google", max_tokens=max(1, cap - thoughts),
                       stop=tuple(config.get("stopSequences") or ()), seed=config.get("seed"),
                       question=question_of(fields(body), config))
        # Images and PDFs bill by pixels and pages (Google's rules), beside their line.
        gen = Generation(gen.tokens, gen.finish,
                         gen.input_tokens + gemini_media_tokens(fields(body).get("contents"), model))
        if thoughts >= cap:
            gen = Generation((), "length", gen.input_tokens)
        if structured is not None and fault is None:
            # A schema or tools: JSON that fits, functionCall parts, or an answer from results.
            kind = self.faults.content_fault(model)
            question = question_of(fields(body), config).text
            planned = structured.planned(model, question, kind)
            reply_text = structured.text(model, text, question, kind)
            if planned:
                gen = Generation((), "stop", gen.input_tokens)
            elif reply_text is not None:
                pieces = tuple(reply_text[i:i + 4] for i in range(0, len(reply_text), 4))
                gen = Generation(pieces, "stop", gen.input_tokens)
        if gen.input_tokens > profile.context_window and fault is None:
            fault = Fault("context-length")
        reply = Reply(self, model, profile, gen, config, thoughts)
        if structured is not None and fault is None and planned:
            reply.calls = function_call_parts(planned, structured.signed)
        if fault is not None:
            if fault.kind == "hang":
                await hang(request, fault.hang_s)
                return google_error(504, "DEADLINE_EXCEEDED", "Deadline expired before operation "
                                    "could complete.")
            if fault.kind == "reset":
                reset_connection(request)
                await hang(request, 5.0)  # let the server see the drop before it answers
                return Response(b"")
            error = fault_response(fault, model, profile, gen.input_tokens)
            if error is not None and not (stream and fault.kind == "midstream-error"):
                return error
        sse = request.query_params.get("alt") == "sse"
        chunks = reply.stream(request, fault, sse) if stream else reply.whole(request, fault)
        return Streamed(chunks, SSE_TYPE if stream and sse else JSON_TYPE)


def question_of(body: Mapping[str, Any], config: Mapping[str, Any]) -> Question:
    """What the simulated answer responds to: the latest user turn (not the model's earlier
    turns); a JSON response MIME type asks for JSON. Read after read_prompt() accepted it."""
    def texts(content: Any) -> str:
        parts = content.get("parts") if isinstance(content, dict) else None
        said = (p["text"] if isinstance(p.get("text"), str) else gemini_seen(p, "", Invalid)
                for p in parts or [] if isinstance(p, dict))
        return "\n".join(t for t in said if t is not None)

    turns = [(t.get("role", "user"), texts(t)) for t in body.get("contents") or []
             if isinstance(t, dict)]
    turns.insert(0, ("system", texts(body.get("systemInstruction"))))
    json_asked = config.get("responseMimeType") == "application/json"
    return Question.from_turns(turns, shape="json" if json_asked else None)


def read_prompt(body: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The prompt text and camelCase generation config, refusing what Google refuses."""
    for name in body:
        if name not in TOP_LEVEL:
            raise Invalid(f'Invalid JSON payload received. Unknown name "{name}": '
                          f"Cannot find field.")
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise Invalid("* GenerateContentRequest.contents: contents is not specified\n")
    texts: list[str] = []
    system = body.get("systemInstruction")
    if isinstance(system, dict):
        texts.extend(p.get("text", "") for p in system.get("parts") or [] if isinstance(p, dict))
    for i, turn in enumerate(contents):
        if not isinstance(turn, dict):
            raise Invalid(f"* GenerateContentRequest.contents[{i}]: must be an object\n")
        if turn.get("role", "user") not in ("user", "model"):
            raise Invalid("Please use a valid role: user, model.")
        parts = turn.get("parts")
        if not isinstance(parts, list) or not parts:
            raise Invalid(f"* GenerateContentRequest.contents[{i}].parts: contents.parts must "
                          f"not be empty.\n")
        for j, part in enumerate(parts):
            if not isinstance(part, dict) or not part:
                raise Invalid(f"* GenerateContentRequest.contents[{i}].parts[{j}].data: required "
                              f"oneof field 'data' must have one initialized field\n")
            if isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif (seen := gemini_seen(part, f"contents[{i}].parts[{j}]", Invalid)) is not None:
                texts.append(seen)  # an image or PDF, counted as the line the answer quotes
    raw = body.get("generationConfig") or {}
    if not isinstance(raw, dict):
        raise Invalid("* GenerateContentRequest.generation_config: must be an object\n")
    config = fields(raw)
    for name in config:
        if name not in GENERATION_CONFIG:
            raise Invalid(f'Invalid JSON payload received. Unknown name "{name}" at '
                          f"'generation_config': Cannot find field.")
    t = config.get("temperature")
    if t is not None and not (isinstance(t, int | float) and 0 <= t <= 2):
        raise Invalid("* GenerateContentRequest.generation_config.temperature: must be between "
                      "0 and 2\n")
    m = config.get("maxOutputTokens")
    if m is not None and not (isinstance(m, int) and m >= 1):
        raise Invalid("* GenerateContentRequest.generation_config.max_output_tokens: must be "
                      "positive\n")
    if isinstance(config.get("thinkingConfig"), dict):
        config["thinkingConfig"] = fields(config["thinkingConfig"])
    return "\n".join(texts), config


class Reply:
    """One answer, whole or as chunks, with its usage and any fault mixed in."""

    def __init__(self, emu: GeminiEmulator, model: str, profile: Profile, gen: Generation,
                 config: Mapping[str, Any], thoughts: int = 0) -> None:
        self.emu = emu
        self.model = model
        self.profile = profile
        self.gen = gen
        self.rng: random.Random = emu.rng()
        self.response_id = base64.urlsafe_b64encode(self.rng.randbytes(17)).decode().rstrip("=")
        thinking = config.get("thinkingConfig") or {}
        self.thoughts = thoughts  # counted inside maxOutputTokens (thinking_tokens)
        self.include_thoughts = bool(thinking.get("includeThoughts")) and self.thoughts > 0
        # functionCall parts the model answers with (sim/_gemini_tools.py): all of them in
        # one chunk, as the Gemini API sends each call whole.
        self.calls: list[dict[str, Any]] = []

    def usage(self, sent: int | None) -> dict[str, Any]:
        u: dict[str, Any] = {"promptTokenCount": self.gen.input_tokens}
        if sent is not None:
            u["candidatesTokenCount"] = sent
        u["totalTokenCount"] = self.gen.input_tokens + (sent or 0) + self.thoughts
        u["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": self.gen.input_tokens}]
        if self.thoughts:
            u["thoughtsTokenCount"] = self.thoughts
        return u

    def chunk(self, text: str | None, sent: int | None, finish: str | None = None,
              thought: bool = False) -> dict[str, Any]:
        cand: dict[str, Any] = {}
        if text is not None:
            parts: list[dict[str, Any]] = []
            if thought:
                parts.append({"text": "**Simulated thinking.** No model thought about this.",
                              "thought": True})
            parts.append({"text": text})
            cand["content"] = {"parts": parts, "role": "model"}
        if self.calls and finish:
            cand["content"] = {"parts": [*(p for p in cand.get("content", {}).get("parts", [])
                                           if p.get("text")), *self.calls], "role": "model"}
        if finish:
            cand["finishReason"] = finish
            if finish == "SAFETY":
                cand["safetyRatings"] = safety_ratings(blocked=True)
        cand["index"] = 0
        return {"candidates": [cand], "usageMetadata": self.usage(sent),
                "modelVersion": self.profile.served, "responseId": self.response_id}

    def blocked(self) -> dict[str, Any]:
        return {"promptFeedback": {"blockReason": "SAFETY", "safetyRatings": safety_ratings(True)},
                "usageMetadata": {"promptTokenCount": self.gen.input_tokens,
                                  "totalTokenCount": self.gen.input_tokens,
                                  "promptTokensDetails": [{"modality": "TEXT",
                                                           "tokenCount": self.gen.input_tokens}]},
                "modelVersion": self.profile.served, "responseId": self.response_id}

    def finish_reason(self) -> str:
        return "MAX_TOKENS" if self.gen.finish == "length" else "STOP"

    async def whole(self, request: Request, fault: Fault | None) -> AsyncIterator[bytes | None]:
        kind = fault.kind if fault else None
        if kind in ("blocked", "content-filter"):
            yield pretty(self.blocked())
            return
        tokens = [t async for t in paced(self.gen.tokens, self.profile, self.emu.time_scale,
                                         self.rng)]
        finish = self.finish_reason()
        if kind == "content-filter-output":
            tokens, finish = tokens[: max(1, len(tokens) // 3)], "SAFETY"
        body = pretty(self.chunk("".join(tokens), len(tokens), finish, self.include_thoughts))
        if kind == "malformed-json":
            yield body[: len(body) // 2]
            return
        if kind == "midstream-disconnect":
            yield body[: len(body) // 2]
            reset_connection(request)
            yield None
            return
        yield body

    async def stream(self, request: Request, fault: Fault | None,
                     sse: bool) -> AsyncIterator[bytes | None]:
        kind = fault.kind if fault else None
        count = 0

        def frame(obj: dict[str, Any] | str) -> bytes:
            nonlocal count
            count += 1
            if sse:
                text = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)
                return f"data: {text}\r\n\r\n".encode()
            text = obj if isinstance(obj, str) else json.dumps(obj, indent=2, ensure_ascii=False)
            return (("[" if count == 1 else ",\r\n") + text).encode()

        def end() -> bytes:
            return b"" if sse else b"]"

        if kind in ("blocked", "content-filter"):
            yield frame(self.blocked()) + end()
            return
        if kind == "malformed-json":
            yield frame('{"candidates": [{"content": {"parts": [{"text": "Hel')
            return
        groups = self.groups()
        if kind == "content-filter-output":
            groups = groups[: max(1, len(groups) // 3)]
        # A mid-stream fault strikes after `after_tokens` chunks, and always before the last.
        after = min(fault.after_tokens, max(len(groups) - 1, 0)) if fault else 0
        sent = 0
        it = paced(self.gen.tokens, self.profile, self.emu.time_scale, self.rng)
        for i, size in enumerate(groups):
            piece = "".join([t async for t in _take(it, size)])
            if kind in ("midstream-error", "midstream-disconnect") and i == after:
                break
            sent += size
            last = i == len(groups) - 1
            finish = ("SAFETY" if kind == "content-filter-output" else self.finish_reason()) \
                if last else None
            yield frame(self.chunk(piece, sent if i else None, finish,
                                   thought=i == 0 and self.include_thoughts))
        else:
            if not groups:  # nothing to say (a stop sequence at the very start), or calls
                calls = sum(len(json.dumps(c)) // 4 for c in self.calls)
                yield frame(self.chunk(None, calls, self.finish_reason()))
            yield end()
            return
        if kind == "midstream-error":
            # Not a `data:` line: Google writes a bare, pretty-printed JSON error and closes.
            err = error_object(503, "UNAVAILABLE", OVERLOADED)
            yield (pretty(err) + b"\n") if sse else (b",\r\n" + pretty(err) + b"]")
            return
        reset_connection(request)
        yield None

    def groups(self) -> list[int]:
        """Token counts per chunk: Google sends a short first chunk, then larger ones."""
        n = len(self.gen.tokens)
        out: list[int] = []
        while sum(out) < n:
            size = self.rng.randint(1, 4) if not out else self.rng.randint(6, 16)
            out.append(min(size, n - sum(out)))
        return out


async def _take(it: AsyncIterator[str], n: int) -> AsyncIterator[str]:
    for _ in range(n):
        try:
            yield await it.__anext__()
        except StopAsyncIteration:
            return


def safety_ratings(blocked: bool) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"category": c, "probability": "NEGLIGIBLE"}
                                 for c in SAFETY_CATEGORIES[:-1]]
    last: dict[str, Any] = {"category": SAFETY_CATEGORIES[-1],
                            "probability": "HIGH" if blocked else "NEGLIGIBLE"}
    if blocked:
        last["blocked"] = True
    return [*out, last]


class Streamed(Response):
    """A chunked body from an async generator; a `None` chunk means the generator dropped
    the connection on purpose, so nothing more may be written."""

    def __init__(self, chunks: AsyncIterator[bytes | None], content_type: str) -> None:
        self.chunks = chunks
        self.status_code = 200
        self.background = None
        self.init_headers({"content-type": content_type})

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})
        async for chunk in self.chunks:
            if chunk is None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                return
            if chunk:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
