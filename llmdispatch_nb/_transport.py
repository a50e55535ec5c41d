"""The one place where httpx's exceptions become ours, and the caps on how many bytes a
response may bring.

Why caps: a body is read into memory whole (a plain answer) or piece by piece into the
answer's text (a stream), and gzip lets a few kilobytes on the wire become gigabytes. A
misbehaving server or proxy could take the kernel down with one answer (a small gzip bomb
took it to 2.1 GB, a 200 MB SSE stream to 858 MB). So every response our clients read goes
through `cap_response`, which decodes gzip and deflate itself, a megabyte at a time, and
counts what comes out; one SSE line or event is capped in `_sse.SSEDecoder`. A breach is
`CapExceeded` (an httpx error, so it travels the same way as a cut connection) and becomes
our `ResponseTooLargeError` here, naming the cap and the variable that sets it.

The caps come from the environment, in MiB (fractions allowed), read when a client is made
(a Dispatcher's first call on each loop) and when a stream starts:

    LLMDISPATCH_MAX_BODY_MB       a whole answer that is not a stream, decoded (128)
    LLMDISPATCH_MAX_STREAM_MB     a whole streamed answer, decoded (128)
    LLMDISPATCH_MAX_SSE_EVENT_MB  one SSE line, and one event's data lines together (16)

The defaults are far above any real answer: 128k output tokens are under 1 MB of text,
and under 40 MB as OpenAI's stream chunks; ten base64 images are about 30 MB.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass

import httpx

from .errors import (
    ConfigurationError,
    ConnectError,
    ProtocolError,
    ResponseTooLargeError,
    TransportError,
    VendorTimeoutError,
)

MIB = 1024 * 1024
_PIECE = MIB  # the most one step of decompression may give: a bomb grows a MiB at a time
_SETTINGS = {"body": ("LLMDISPATCH_MAX_BODY_MB", 128.0),
             "stream": ("LLMDISPATCH_MAX_STREAM_MB", 128.0),
             "sse_event": ("LLMDISPATCH_MAX_SSE_EVENT_MB", 16.0)}


@dataclass(frozen=True, slots=True)
class ResponseCaps:
    body: int  # bytes
    stream: int
    sse_event: int


_cached: tuple[tuple[str | None, ...], ResponseCaps] | None = None


def response_caps() -> ResponseCaps:
    """The caps the environment sets now (parsed again only when a variable changed)."""
    global _cached
    raw = tuple(os.environ.get(var) for var, _ in _SETTINGS.values())
    if _cached is not None and _cached[0] == raw:
        return _cached[1]
    sizes = []
    for (var, default), value in zip(_SETTINGS.values(), raw, strict=True):
        try:
            mb = default if value is None or not value.strip() else float(value)
        except ValueError:
            mb = -1.0
        if not mb > 0 or mb == float("inf"):
            raise ConfigurationError(
                f"{var} must be a size in MiB above 0 (e.g. {default:g}), got {value!r}")
        sizes.append(max(1, int(mb * MIB)))
    caps = ResponseCaps(*sizes)
    _cached = (raw, caps)
    return caps


class CapExceeded(httpx.RemoteProtocolError):
    """A response ran over one of the caps (raised while its bytes are read)."""

    def __init__(self, what: str, limit: int, cap: str) -> None:
        self.what = what
        self.limit = limit
        self.setting = _SETTINGS[cap][0]
        super().__init__(f"{what} ran over its cap of {_size(limit)} ({self.setting})")


def _size(n: int) -> str:
    return f"{n / MIB:g} MiB" if n >= MIB else f"{n:,} bytes"


# -- the body cap ------------------------------------------------------------------------------


def response_hook(caps: ResponseCaps) -> Callable[[httpx.Response], Awaitable[None]]:
    """An httpx response hook that has every body read through `CappedBody`."""
    async def hook(response: httpx.Response) -> None:
        cap_response(response, caps)

    return hook


def cap_response(response: httpx.Response, caps: ResponseCaps) -> None:
    """Read `response` through `CappedBody` (which decodes it) from now on. A request may
    carry a cap of its own in bytes, `extensions["llmdispatch_max_body"]` (a batch's result
    file, many answers in one body, may be far larger than one answer)."""
    streamed = response.headers.get("content-type", "").startswith("text/event-stream")
    own = response.request.extensions.get("llmdispatch_max_body")
    codings = [c.strip().lower() for c in response.headers.get("content-encoding", "").split(",")]
    codings = [c for c in codings if c and c != "identity"]
    if codings:
        # Decoded here, with the cap; httpx must not decode it again. We never ask for a
        # coding (our requests send no Accept-Encoding), so one we cannot decode is passed
        # on as it came, to fail as the garbage it is to us.
        del response.headers["content-encoding"]
        response.headers.pop("content-length", None)
        if not all(c in _INFLATE for c in codings):
            codings = []
    inner = response.stream
    assert isinstance(inner, httpx.AsyncByteStream)  # our clients are async ones
    limit = own if isinstance(own, int) and own > 0 else caps.stream if streamed else caps.body
    response.stream = CappedBody(
        inner, limit,
        "the streamed answer" if streamed else "the response body",
        "stream" if streamed else "body", codings)


_INFLATE = {"gzip": zlib.MAX_WBITS | 16, "x-gzip": zlib.MAX_WBITS | 16, "deflate": zlib.MAX_WBITS}


class _Inflater:
    """One content coding undone, at most `_PIECE` bytes out per step."""

    def __init__(self, coding: str) -> None:
        self.deflate = coding == "deflate"
        self.first = True
        self.z = zlib.decompressobj(_INFLATE[coding])

    def pieces(self, data: bytes) -> Iterator[bytes]:
        while data and not self.z.eof:
            try:
                out = self.z.decompress(data, _PIECE)
            except zlib.error as exc:
                if self.deflate and self.first:  # a raw deflate stream, as some servers send
                    self.z = zlib.decompressobj(-zlib.MAX_WBITS)
                    self.first = False
                    continue
                raise httpx.DecodingError(f"the body does not decode as it says: {exc}") from None
            self.first = False
            data = self.z.unconsumed_tail
            if out:
                yield out

    def end(self) -> Iterator[bytes]:
        if not self.z.eof:
            yield from self.pieces(b"")
            out = self.z.flush(_PIECE)
            if out:
                yield out


class CappedBody(httpx.AsyncByteStream):
    """A response's bytes, decoded, stopped with `CapExceeded` past `limit` bytes."""

    def __init__(self, inner: httpx.AsyncByteStream, limit: int, what: str, cap: str,
                 codings: list[str]) -> None:
        self._inner = inner
        self._limit = limit
        self._what = what
        self._cap = cap
        self._codings = codings

    async def __aiter__(self) -> AsyncIterator[bytes]:
        left = self._limit
        if not self._codings:
            async for part in self._inner:
                left -= len(part)
                if left < 0:
                    raise CapExceeded(self._what, self._limit, self._cap)
                yield part
            return
        # Applied in the order listed, so undone last to first.
        inflaters = [_Inflater(c) for c in reversed(self._codings)]
        async for part in self._inner:
            for out in _through(inflaters, [part]):
                left -= len(out)
                if left < 0:
                    raise CapExceeded(self._what, self._limit, self._cap)
                yield out
        for i, inflater in enumerate(inflaters):  # what each coding held back to the end
            for out in _through(inflaters[i + 1:], inflater.end()):
                left -= len(out)
                if left < 0:
                    raise CapExceeded(self._what, self._limit, self._cap)
                yield out

    async def aclose(self) -> None:
        await self._inner.aclose()


def _through(inflaters: list[_Inflater], parts: Iterator[bytes] | list[bytes]) -> Iterator[bytes]:
    """`parts` through each coding in turn, lazily: nothing bigger than a piece is held."""
    pieces: Iterator[bytes] = iter(parts)
    for inflater in inflaters:
        pieces = _inflated(inflater, pieces)
    return pieces


def _inflated(inflater: _Inflater, pieces: Iterator[bytes]) -> Iterator[bytes]:
    for piece in pieces:
        yield from inflater.pieces(piece)


# -- our errors --------------------------------------------------------------------------------


def map_httpx_error(exc: httpx.HTTPError, vendor: str, timeout_s: float | None = None) -> TransportError:
    # `exc` stays reachable as our error's __context__, and its request carries the key in
    # its headers: it forgets the request (`exc.request` then raises, as httpx's own does
    # for an error raised before a request existed).
    if isinstance(exc, httpx.RequestError):
        exc._request = None
    if isinstance(exc, CapExceeded):
        return ResponseTooLargeError(
            f"{exc.what} ran over {_size(exc.limit)}, the cap for one answer; the server is "
            f"misbehaving (or the answer really is that big: raise {exc.setting})",
            vendor=vendor, limit_bytes=exc.limit, setting=exc.setting)
    if isinstance(exc, httpx.TimeoutException):
        what = {
            httpx.ConnectTimeout: "connecting",
            httpx.ReadTimeout: "waiting for data",
            httpx.WriteTimeout: "sending the request",
            httpx.PoolTimeout: "waiting for a free connection",
        }.get(type(exc), "waiting")
        limit = f" ({timeout_s:g} s)" if timeout_s else ""
        return VendorTimeoutError(
            f"timed out {what}{limit}; the vendor is slow or hanging. Raise the timeout or try "
            f"another vendor", vendor=vendor)
    if isinstance(exc, httpx.ConnectError):
        return ConnectError(f"could not connect ({exc}); check the base URL and that the "
                            f"server is running", vendor=vendor)
    if isinstance(exc, httpx.DecodingError):
        return ProtocolError(f"sent a body that does not decode ({exc})", vendor=vendor)
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
        # A reset before any byte reads as ReadError; a cut body as RemoteProtocolError.
        if "reset" in str(exc).lower() or isinstance(exc, httpx.ReadError | httpx.WriteError):
            return ConnectError(f"the connection was reset ({type(exc).__name__})", vendor=vendor)
        when = "before any response" if "without sending a response" in str(exc) \
            else "mid-response"
        return ProtocolError(f"the connection closed {when} ({exc})", vendor=vendor)
    return TransportError(f"{type(exc).__name__}: {exc}", vendor=vendor)
