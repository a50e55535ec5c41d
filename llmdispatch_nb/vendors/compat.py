"""OpenAI-compatible local servers: Ollama, vLLM, llama.cpp's llama-server, LM Studio.

They speak OpenAI's Chat Completions with a local accent (vendor-protocols.md §5), so this
adapter differs from OpenAI's only where they do:

- the key is optional: without one no Authorization header is sent;
- `max_tokens` is sent (not every server knows `max_completion_tokens`);
- stream usage is asked for (`include_usage`) but may never come; the dispatcher then
  estimates it;
- extra fields (`reasoning`, `reasoning_content`, `timings`), the role repeated in every
  delta (Ollama) and a stream that ends after its finish_reason without `[DONE]` are fine;
- errors are read by HTTP status, since `type` strings differ per server and `code` may be
  an int, a string, null, or (older vLLM) the body may be flat.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import httpx

from .._sse import SSEEvent
from .._types import StreamEvent
from ..errors import (
    BadRequestError,
    ContextLengthError,
    MidStreamError,
    OverloadedError,
    VendorError,
)
from ._base import (
    Endpoint,
    StreamParser,
    error_body,
    model_hint,
    parse_retry_after,
    parse_should_retry,
    request_id_of,
)
from .openai import OpenAIAdapter, OpenAIStream

CONTEXT_TYPES = frozenset({"exceed_context_size_error", "context_length_exceeded"})


def reasoning_of(message: dict[str, Any]) -> str | None:
    """Thinking text, wherever this server put it (Ollama `reasoning`, vLLM/llama.cpp
    `reasoning_content`)."""
    for name in ("reasoning_content", "reasoning"):
        value = message.get(name)
        if isinstance(value, str) and value:
            return value
    return None


class CompatAdapter(OpenAIAdapter):
    kind: ClassVar[str] = "compat"
    key_variables = ()
    price_provider = None
    vendor_label = "compat"
    max_tokens_field = "max_tokens"

    def catalogue_vendor(self, endpoint: Endpoint) -> str:
        # A provider of the catalogue (groq, deepseek, ...) by its own name; a local server's
        # models are not in it, so they are sent what was asked.
        return endpoint.name

    def reply_extra(self, data: dict[str, Any], choice: dict[str, Any]) -> dict[str, Any]:
        extra = super().reply_extra(data, choice)
        message = choice.get("message")
        thought = reasoning_of(message) if isinstance(message, dict) else None
        if thought:
            extra["reasoning"] = thought
        if isinstance(data.get("timings"), dict):
            extra["timings"] = data["timings"]  # llama.cpp's own speed counters
        return extra

    def stream_parser(self, endpoint: Endpoint) -> StreamParser:
        return CompatStream(endpoint.name)

    def map_error(self, response: httpx.Response, endpoint: Endpoint) -> VendorError:
        status = response.status_code
        data, err = error_body(response)
        if isinstance(err, str):
            err = {"message": err}  # Ollama's native shape, vLLM's bare 401
        elif not isinstance(err, dict):
            err = data if isinstance(data, dict) and "message" in data else {}  # older vLLM
        text = response.content[:200].decode("utf-8", "replace").strip()
        message = str(err.get("message") or text or response.reason_phrase or "error")
        code = err.get("code")
        etype = err.get("type")
        cls = self.error_class(status, None if code is None else str(code), etype, message)
        if status == 404 and cls is BadRequestError:
            message += model_hint(response, endpoint) or \
                " (is the model pulled or loaded on this server? `ollama pull <model>`)"
        return cls(message, vendor=endpoint.name, status=status,
                   request_id=request_id_of(response, "x-request-id"),
                   retry_after=parse_retry_after(response.headers),
                   body=response.content[:2000], code=None if code is None else str(code),
                   error_type=str(etype) if etype is not None else None,
                   should_retry=parse_should_retry(response.headers))

    def error_class(self, status: int, code: str | None, etype: Any, message: str) -> type[VendorError]:
        low = message.lower()
        if etype in CONTEXT_TYPES or code in CONTEXT_TYPES or (
                status == 400 and "context" in low and ("length" in low or "size" in low)):
            return ContextLengthError
        if etype == "unavailable_error":
            return OverloadedError  # llama.cpp: still loading, or no free slot
        return super().error_class(status, code, etype, message)


class CompatStream(OpenAIStream):
    """OpenAI's stream reader, lenient where local servers are loose."""

    def __init__(self, vendor: str) -> None:
        super().__init__(vendor)
        self.finished = False

    def feed(self, event: SSEEvent) -> list[StreamEvent]:
        if event.stray and event.data.startswith("error:"):
            # llama.cpp reports a failure mid-stream as an `error:` line, not a `data:` one.
            raw = event.data.partition(":")[2].strip()
            try:
                err = json.loads(raw)
            except (ValueError, RecursionError):
                err = {"message": raw}
            err = err if isinstance(err, dict) else {"message": str(err)}
            raise MidStreamError(str(err.get("message") or "error in stream"), vendor=self.vendor,
                                 partial_text="".join(self.partial), usage=self.usage,
                                 code=None if err.get("code") is None else str(err.get("code")),
                                 error_type=err.get("type"))
        out = super().feed(event)
        if any(ev.kind == "finish" for ev in out):
            self.finished = True
        return out

    def close(self) -> list[StreamEvent]:
        # Some servers close the connection after the finish chunk without `[DONE]`.
        if self.finished:
            self.done = True
        return super().close()
