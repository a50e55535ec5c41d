"""Error answers of the emulated Anthropic API, and the faults that answer with them.

Every error is `{"type":"error","error":{type,message[,details]},"request_id"}`; a 429 carries
`retry-after` (whole seconds) and the `anthropic-ratelimit-*` headers, an overload is a 529
`overloaded_error`, a spend limit a 429 naming when access comes back. The fault kinds of
`_core.Fault` that are an HTTP answer (or a hang, a reset, a cut or malformed body) are
answered here; those carried inside a 200 answer stay with the answers in `anthropic.py`.
Kept apart so that module stays the Messages API's request path.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ._core import Fault
from ._server import hang, json_response, reset_connection


def anthropic_error(request: Request, status: int, etype: str, message: str, *,
                    headers: dict[str, str] | None = None, details: dict[str, Any] | None = None) -> Response:
    err: dict[str, Any] = {"type": etype, "message": message}
    if details:
        err["details"] = details
    body = {"type": "error", "error": err, "request_id": request.state.request_id}
    return json_response(body, status, headers)


async def fault_response(request: Request, fault: Fault, *, stream: bool, input_tokens: int,
                         context_window: int) -> Response | None:
    """The response a fault calls for, or None when the answer itself carries it."""
    kind = fault.kind
    ra = fault.retry_after
    if kind in ("429", "429-ms", "429-long", "429-no-retry"):
        seconds = ra if ra is not None else (3600.0 if kind == "429-long" else 2.0)
        headers = {"retry-after": f"{max(1, round(seconds))}", **_rate_limit_headers(seconds)}
        if kind == "429-ms":
            # Anthropic itself sends whole seconds; the SDKs read retry-after-ms first.
            headers["retry-after-ms"] = f"{seconds * 1000:g}"
        if kind == "429-no-retry":
            headers["x-should-retry"] = "false"
        return anthropic_error(request, 429, "rate_limit_error", (
            "This request would exceed the rate limit for your organization of 50 requests "
            "per minute. For details, refer to: https://docs.claude.com/en/api/rate-limits. "
            "You can see the response headers for current usage. Please reduce the prompt "
            "length or the maximum tokens requested, or try again later."), headers=headers)
    if kind == "quota":
        regain = (datetime.now(UTC) + timedelta(days=7)).strftime("%Y-%m-%d at %H:%M UTC")
        return anthropic_error(request, 429, "rate_limit_error",
                               f"You have reached your specified API usage limits. You will regain "
                               f"access on {regain}.",
                               details={"error_code": "enforced_spend_limit_reached"})
    if kind in ("408", "409"):
        # Neither status has an error type of its own; the API uses
        # invalid_request_error for 4xx it does not name.
        message = "Request timed out" if kind == "408" else "Conflict: please retry the request"
        return anthropic_error(request, int(kind), "invalid_request_error", message)
    if kind == "500":
        return anthropic_error(request, 500, "api_error", "Internal server error")
    if kind == "503":
        # Anthropic's own overload status is 529; a 503 comes from the edge in front of it.
        return anthropic_error(request, 503, "api_error", "Service Unavailable")
    if kind in ("529", "midstream-error") and (kind == "529" or not stream):
        # A non-streamed call cannot fail after 200, so midstream-error answers 529 there.
        return anthropic_error(request, 529, "overloaded_error", "Overloaded",
                               headers={"retry-after": f"{max(1, round(ra))}"} if ra else None)
    if kind == "401":
        return anthropic_error(request, 401, "authentication_error", "invalid x-api-key")
    if kind == "400":
        return anthropic_error(request, 400, "invalid_request_error",
                               "messages.0.content.0.type: Input tag 'txt' found using 'type' does "
                               "not match any of the expected tags")
    if kind == "context-length":
        tokens = max(input_tokens, context_window + 1_234)
        return anthropic_error(request, 400, "invalid_request_error",
                               f"prompt is too long: {tokens} tokens > {context_window} maximum")
    if kind == "hang":
        await hang(request, fault.hang_s)
        return Response(status_code=204)
    if kind == "reset":
        reset_connection(request)
        await asyncio.sleep(0)
        return Response(status_code=204)
    if kind == "midstream-disconnect" and not stream:
        return ClosingStreamingResponse(_cut_body(request), media_type="application/json")
    if kind == "malformed-json":
        if stream:
            return ClosingStreamingResponse(_malformed_stream(),
                                            media_type="text/event-stream; charset=utf-8")
        return Response(b'{"id":"msg_01","type":"message","content":[{"type":"te',
                        media_type="application/json")
    return None  # content-filter kinds, midstream-* on streams: in the answer


async def _cut_body(request: Request) -> AsyncIterator[bytes]:
    # The body starts, then the connection drops: a non-streamed call's mid-answer cut.
    yield b'{"id":"msg_01","type":"message","role":"assistant","content":[{"type":"text","text":"'
    await asyncio.sleep(0.1)
    reset_connection(request)
    await asyncio.sleep(0)


class ClosingStreamingResponse(StreamingResponse):
    """Closes its body generator however the response ends: a client that hangs up mid-stream
    would otherwise leave it suspended, to be finalized on a loop that may be gone."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                await aclose()


async def _malformed_stream() -> AsyncIterator[bytes]:
    yield b'event: message_start\ndata: {"type":"message_start","message":{"id":\n\n'


def _rate_limit_headers(seconds: float) -> dict[str, str]:
    reset = (datetime.now(UTC) + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"anthropic-ratelimit-requests-limit": "50",
            "anthropic-ratelimit-requests-remaining": "0",
            "anthropic-ratelimit-requests-reset": reset}
