"""HTTP/1.1 under httpx on aiohttp's client: llhttp's C parser, aiohttp's connection pool.

Why: the project once carried its own HTTP/1.1 client (`_http11.py`, 537 lines parsing
bytes from remote servers). A kept, fuzzed, widely deployed parser and pool is one place
fewer where a security or correctness bug would be ours alone to find, and measured in our
call path it costs about what ours did (`bench/RESULTS.md`, "The transport"). httpx stays
the API the adapters build requests for and the rest of the package reads responses from;
this is the thin piece between: a request goes to an `aiohttp.ClientSession`, its response
comes back as an `httpx.Response` whose body is aiohttp's stream.

Errors raised here are httpx's own (`ConnectError`, `ReadTimeout`, `RemoteProtocolError`,
...), so `_transport.map_httpx_error` stays the one place where they become ours.

What aiohttp is told, and why:
* no cookies, no automatic Accept/Accept-Encoding/User-Agent headers, no decompression:
  the request goes out as the adapter built it, and the body is decoded under its cap by
  `_transport.CappedBody`;
* no proxies from the environment (`trust_env=False`): `_clients.new_client` mounts this
  transport only where no proxy applies (loopback always);
* idle connections closed after 4 s, under the 5 s after which uvicorn (vLLM, LM Studio's
  and many Python servers, our emulators) closes one: at 5 s on both sides a call could
  go out on a connection whose close is already on its way;
* timeouts as httpx's: connect, read (the longest silence between bytes) and pool (the
  wait for a free connection, which aiohttp counts together with connecting).

aiohttp is imported on the first request, not at `import llmdispatch_nb` (it costs about
0.15 s, most of a light import's budget).
"""

from __future__ import annotations

import asyncio
import ssl as ssl_module
import threading
from collections.abc import AsyncIterator
from typing import Any

import httpx

_ssl_context: ssl_module.SSLContext | None = None
_ssl_lock = threading.Lock()


def shared_ssl_context() -> ssl_module.SSLContext:
    """One verifying SSL context for every transport (httpx's default: certifi, or
    SSL_CERT_FILE / SSL_CERT_DIR). Building one takes about 10 ms, a tenth of a
    2,000-call fan-out when each client built its own."""
    global _ssl_context
    with _ssl_lock:
        if _ssl_context is None:
            _ssl_context = httpx.create_ssl_context()
            _ssl_context.set_alpn_protocols(["http/1.1"])  # as httpcore asks, for HTTP/1.1
        return _ssl_context


def _as_httpx(exc: BaseException, reading: bool) -> Exception:
    """aiohttp's error (or asyncio's timeout) as the httpx error it stands for. `reading`:
    the response head had arrived, so a closed connection cut the body short."""
    import aiohttp

    text = str(exc) or type(exc).__name__
    reset = any(isinstance(e, ConnectionResetError | BrokenPipeError)
                for e in (exc, exc.__cause__, exc.__context__, *exc.args))
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(f"timed out connecting or waiting for a connection: {text}")
    if isinstance(exc, aiohttp.ServerTimeoutError | asyncio.TimeoutError):
        return httpx.ReadTimeout("timed out waiting for response data")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(text)
    if reset or "reset by peer" in text:
        return httpx.ReadError(f"the connection was reset by the peer ({text})")
    if isinstance(exc, aiohttp.ClientPayloadError) or (
            reading and isinstance(exc, aiohttp.ServerDisconnectedError)):
        return httpx.RemoteProtocolError(
            f"peer closed connection without sending complete message body: {text}")
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return httpx.RemoteProtocolError("Server disconnected without sending a response")
    if isinstance(exc, aiohttp.ClientResponseError):  # a malformed status line or header
        return httpx.RemoteProtocolError(f"malformed response: {exc.message}")
    if isinstance(exc, aiohttp.ClientOSError):
        return httpx.ReadError(text)
    return httpx.RemoteProtocolError(text)


def _errors() -> tuple[type[BaseException], ...]:
    import aiohttp

    return (aiohttp.ClientError, asyncio.TimeoutError)


_LARGE = 1024 * 1024  # as aiohttp's TOO_LARGE_BYTES_BODY
_HEAD_LIMIT = 64 * 1024


async def _pieces(data: bytes) -> AsyncIterator[memoryview]:
    view = memoryview(data)
    for start in range(0, len(view), 256 * 1024):
        yield view[start:start + 256 * 1024]


class _Body(httpx.AsyncByteStream):
    """aiohttp's response body, piece by piece as it arrives. Read to its end, the
    connection goes back to the pool; closed before, the connection is closed."""

    def __init__(self, response: Any) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        content = self._response.content
        try:
            while data := await content.readany():
                yield data
        except _errors() as exc:
            self._response.close()
            raise _as_httpx(exc, reading=True) from exc
        self._response.release()

    async def aclose(self) -> None:
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()  # what is left of it cannot be skipped safely


class Http11Transport(httpx.AsyncBaseTransport):
    """HTTP/1.1 connections for httpx on one event loop (the dispatcher makes a client per
    loop): at most `max_connections` open, idle ones kept `keepalive_expiry` seconds."""

    def __init__(self, *, ssl_context: ssl_module.SSLContext | None = None,
                 max_connections: int = 256, keepalive_expiry: float = 4.0) -> None:
        self._ssl_context = ssl_context
        self.max_connections = max(1, max_connections)
        self.keepalive_expiry = keepalive_expiry
        self.closed = False
        self._session: Any = None
        self._timeouts: dict[tuple[Any, ...], Any] = {}

    @property
    def ssl_context(self) -> ssl_module.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = shared_ssl_context()
        return self._ssl_context

    @property
    def open_count(self) -> int:
        """Connections open now, in use or idle (for tests and the bench: it reads the
        connector's own books, which aiohttp does not publish)."""
        return self.in_use_count + sum(
            proto.is_connected() for conns in self._books("_conns", {}).values()
            for proto, _ in conns)

    @property
    def in_use_count(self) -> int:
        """Connections carrying a request or a body now."""
        return len(self._books("_acquired", ()))

    def _books(self, name: str, empty: Any) -> Any:
        connector = self._session.connector if self._session is not None else None
        return empty if connector is None else getattr(connector, name, empty)

    def _open(self) -> Any:
        import aiohttp

        connector = aiohttp.TCPConnector(
            limit=self.max_connections, limit_per_host=0,
            keepalive_timeout=self.keepalive_expiry,
            # Happy eyeballs (RFC 8305): a host whose IPv6 route is broken still connects
            # over IPv4 after 0.25 s, not a timeout.
            happy_eyeballs_delay=0.25)
        self._session = aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False,
            trust_env=False, timeout=aiohttp.ClientTimeout(total=None),
            skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent"),
            # A status line or header up to 64 KiB, as before (aiohttp's default is 8 KiB,
            # which a gateway's long cookie or policy header could pass).
            max_line_size=_HEAD_LIMIT, max_field_size=_HEAD_LIMIT)
        return self._session

    def _timeout(self, timeouts: dict[str, Any]) -> Any:
        key = (timeouts.get("connect"), timeouts.get("read"), timeouts.get("pool"))
        timeout = self._timeouts.get(key)
        if timeout is None:
            import aiohttp

            connect, read, pool = key
            timeout = self._timeouts[key] = aiohttp.ClientTimeout(
                total=None, sock_connect=connect, sock_read=read,
                connect=None if connect is None or pool is None else connect + pool)
        return timeout

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.closed:
            raise RuntimeError("the transport is closed")
        headers = request.headers
        raw = headers.raw
        # A CR, LF or NUL inside a name or value would let it write headers of its own
        # (aiohttp refuses CR and LF, not NUL): refused here, three scans in C.
        joined = b"".join(b"".join(pair) for pair in raw)
        if b"\r" in joined or b"\n" in joined or b"\0" in joined:
            raise httpx.LocalProtocolError("illegal header name or value")
        session = self._session or self._open()
        try:
            data: Any = request.content or None
            if data is not None and len(data) > _LARGE:
                # aiohttp warns of bytes this large (written at once, they could hold up
                # the loop); handed over a piece at a time, still under Content-Length.
                data = _pieces(data)
        except httpx.RequestNotRead:
            data = request.stream  # sent chunked by aiohttp
            headers = httpx.Headers([(k, v) for k, v in raw if k.lower() != b"transfer-encoding"])
        url = request.url
        try:
            response = await session.request(
                request.method, str(url), headers=headers.multi_items(), data=data,
                allow_redirects=False, timeout=self._timeout(request.extensions.get("timeout", {})),
                ssl=self.ssl_context if url.scheme == "https" else True)
        except _errors() as exc:
            raise _as_httpx(exc, reading=False) from exc
        except ValueError as exc:  # aiohttp's refusal of a request it cannot send
            raise httpx.LocalProtocolError(str(exc)) from exc
        return httpx.Response(
            response.status, headers=response.raw_headers, stream=_Body(response),
            extensions={"http_version": b"HTTP/%d.%d" % tuple(response.version),
                        "reason_phrase": (response.reason or "").encode("latin-1", "replace")})

    async def aclose(self) -> None:
        self.closed = True
        if self._session is not None:
            await self._session.close()

    def __del__(self) -> None:
        # Dropped unclosed (its loop ended without closing its client): close the sockets
        # now, else aiohttp warns of an unclosed session from the garbage collector, where
        # a test suite that turns warnings into errors cannot tell whose it was.
        session = self._session
        if session is not None and not session.closed:
            try:
                session.connector._close()
            except Exception:  # its loop is gone: the sockets go with the process
                pass
