"""One HTTP exchange with one vendor: send, read the body or the SSE stream, map errors.

No retries and no records here; the dispatcher decides what an outcome means. Stream
chunks are also kept with their offsets (seconds since sending) so a cache or replay pack
can serve the answer again with its original timing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from ._sse import SSEDecoder
from ._stream import StreamSink
from ._transport import map_httpx_error
from ._types import (
    Finish,
    ParsedReply,
    StreamStart,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallEvent,
    Usage,
    UsageUpdate,
)
from .errors import MidStreamError, ProtocolError, ResponseTooLargeError
from .vendors import Adapter, Endpoint
from .vendors._base import request_id_of


@dataclass
class Exchange:
    """What one attempt produced (filled in as it goes, so a failure still reports timing)."""

    t0: float
    status: int | None = None
    ttft: float | None = None
    reply: ParsedReply | None = None
    chunks: list[tuple[float, str]] = field(default_factory=list)


async def send_plain(client: httpx.AsyncClient, adapter: Adapter, ep: Endpoint,
                     req: httpx.Request, ex: Exchange, read_timeout: float | None) -> None:
    try:
        r = await client.send(req)
        await r.aread()
    except httpx.HTTPError as exc:
        raise map_httpx_error(exc, ep.name, read_timeout) from None
    ex.status = r.status_code
    if r.status_code >= 400:
        raise adapter.map_error(r, ep)
    ex.reply = adapter.parse_reply(r, ep)


async def send_stream(client: httpx.AsyncClient, adapter: Adapter, ep: Endpoint,
                      req: httpx.Request, ex: Exchange, sink: StreamSink,
                      read_timeout: float | None) -> None:
    parser = adapter.stream_parser(ep)
    decoder = SSEDecoder()
    text: list[str] = []
    usage: Usage | None = None
    finish: Finish | None = None
    model: str | None = None
    calls: list[ToolCall] = []
    try:
        r = await client.send(req, stream=True)
    except httpx.HTTPError as exc:
        raise map_httpx_error(exc, ep.name, read_timeout) from None
    ex.status = r.status_code
    request_id = request_id_of(r, *adapter.request_id_headers)

    def take(events: list[Any]) -> None:
        nonlocal usage, finish, model, request_id
        for ev in events:
            if isinstance(ev, TextDelta):
                if not ev.text:
                    continue
                offset = time.perf_counter() - ex.t0
                if ex.ttft is None:
                    ex.ttft = offset
                    if usage is not None:
                        # Held back until text flows: a retry before the first token must
                        # not leave the caller with a failed attempt's usage.
                        sink.send(UsageUpdate(usage))
                text.append(ev.text)
                ex.chunks.append((offset, ev.text))
                sink.send(ev)
            elif isinstance(ev, UsageUpdate):
                usage = ev.usage
                if ex.ttft is not None:
                    sink.send(ev)
            elif isinstance(ev, Finish):
                finish = ev
            elif isinstance(ev, StreamStart):
                model = ev.model or model
                request_id = request_id or ev.request_id
            elif isinstance(ev, ToolCallDelta | ToolCallEvent):
                if isinstance(ev, ToolCallEvent):
                    calls.append(ev.call)
                sink.send(ev)

    try:
        if r.status_code >= 400:
            try:
                await r.aread()
            except httpx.HTTPError as exc:
                raise map_httpx_error(exc, ep.name, read_timeout) from None
            raise adapter.map_error(r, ep)
        try:
            async for chunk in r.aiter_raw():
                for sse in decoder.feed(chunk):
                    take(parser.feed(sse))
            for sse in decoder.close():
                take(parser.feed(sse))
            take(parser.close())
        except httpx.HTTPError as exc:
            err = map_httpx_error(exc, ep.name, read_timeout)
            if isinstance(err, ResponseTooLargeError):  # a cap: its own type, the text kept
                err.partial_text, err.usage = "".join(text), usage
                raise err from None
            if text:
                # The cause first: it carries the vendor's name, which is not repeated.
                raise MidStreamError(f"{err}; the stream broke after {len(text)} pieces of text",
                                     vendor=ep.name, partial_text="".join(text),
                                     usage=usage) from None
            raise err from None
        except ProtocolError as err:
            if text:
                raise MidStreamError(str(err), vendor=ep.name, partial_text="".join(text),
                                     usage=usage) from None
            raise
        except MidStreamError as err:
            err.partial_text = "".join(text)
            err.usage = err.usage or usage
            # Nothing reached the caller yet: as retryable as a failed request.
            err.retryable = not text
            raise
    finally:
        await r.aclose()
    if usage is not None and ex.ttft is None:
        sink.send(UsageUpdate(usage))  # an answer with no text at all still reports usage
    if finish is not None:
        sink.send(finish)
    ex.reply = ParsedReply(
        text="".join(text), finish_reason=finish.reason if finish else "stop",
        raw_finish_reason=finish.raw if finish else None, model=model,
        # A usage block the parser did not believe voids the counts before it: estimated.
        usage=None if "usage_unreliable" in parser.extra else usage,
        request_id=request_id, extra=dict(parser.extra), tool_calls=tuple(calls))
