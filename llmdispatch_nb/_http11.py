"""HTTP/1.1 under httpx, straight on asyncio's protocol callbacks.

Why: with 200 calls in flight (`bench/fanout.py`), the client spent about 6 ms of CPU a call
and 90% of it below httpx's API: httpcore's pool and connection state, h11's event machine,
anyio's stream and cancel-scope wrappers (and an epoll re-registration on every read, as
anyio pauses the socket between reads). That kept a 2,000-call fan-out CPU-bound at 1.5x its
ideal wall time. This transport is what remains when those layers go: one `asyncio.Protocol`
per connection that buffers bytes, and a parser for the one message shape a client reads,
a response. httpx stays the client: it builds the request (headers, Host, Content-Length),
decodes the body (gzip, charset) and maps nothing, since the errors raised here are httpx's
own (`ConnectError`, `ReadTimeout`, `RemoteProtocolError`, ...).

What it does: keep-alive connections per origin (the one freed last is reused first),
closed at once when the server closes them; a cap on open connections with a fair queue
(`PoolTimeout` past the pool timeout); httpx's four timeouts (connect, write, pool, and
read as the longest silence between bytes); TLS through `ssl`; the three body framings of
RFC 9112 (Content-Length, chunked, until close); 1xx responses skipped; a response head
over 64 KiB, a bad status line, header or chunk size is a `RemoteProtocolError`, as is a
connection closed before the body is complete. A body broken off early closes its
connection (what is left of it cannot be skipped safely).

Not here: HTTP/2, proxies (`new_client` mounts this only where no proxy applies), and
`Expect: 100-continue` (httpx never sends it).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl as ssl_module
import threading
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import httpx

_HEAD_LIMIT = 64 * 1024  # a response head (status line and headers) larger than this is refused
_HIGH_WATER = 256 * 1024  # stop reading the socket while this much is unread
_NO_BODY_STATUS = frozenset({204, 304})
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")
_CHUNKED_CUT = "peer closed connection without sending complete message body: " \
    "incomplete chunked read"
_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([0-9]{3})(?: (.*))?")


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


def _expire(waiter: asyncio.Future[None], exc: type[httpx.TimeoutException], what: str) -> None:
    if not waiter.done():
        waiter.set_exception(exc(what))


class _Connection(asyncio.Protocol):
    """One socket: bytes in a buffer, a waiter woken when more arrive or the peer closes."""

    def __init__(self, pool: _Origin) -> None:
        self.pool = pool
        self.loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.eof = False  # the peer closed (or the connection failed)
        self.lost: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.reading_paused = False
        self.writing_paused = False
        self.idle_since = -1.0  # >= 0 while in the pool's idle stack
        # The current wait's deadline and what missing it raises. One timer per connection
        # checks it and re-arms itself while waits go on: a timer per wait (one per
        # streamed event) cost a twentieth of the client's CPU.
        self.deadline: float | None = None
        self.timeout_error: tuple[type[httpx.TimeoutException], str] = (httpx.ReadTimeout, "")
        self.timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > _HIGH_WATER and not self.reading_paused and self.transport:
            self.reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.lost = exc
        self._wake()
        if self.idle_since >= 0:  # the server closed a keep-alive connection
            self.pool.forget(self)

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._wake()

    def _wake(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- used by a request -----------------------------------------------------------------

    @property
    def usable(self) -> bool:
        return not self.eof and not self.buffer and self.transport is not None \
            and not self.transport.is_closing()

    async def wait(self, timeout: float | None, exc: type[httpx.TimeoutException],
                   what: str) -> None:
        """Until more bytes arrive, the peer closes, or writing may go on."""
        if self.reading_paused and self.transport is not None:
            self.reading_paused = False
            self.transport.resume_reading()
        waiter = self.waiter = self.loop.create_future()
        if timeout is None:
            self.deadline = None
        else:
            self.deadline = deadline = self.loop.time() + timeout
            self.timeout_error = (exc, what)
            if self.timer is None:
                self.timer = self.loop.call_at(deadline, self._check_deadline)
        try:
            await waiter
        finally:
            self.waiter = None

    def _check_deadline(self) -> None:
        self.timer = None
        waiter, deadline = self.waiter, self.deadline
        if waiter is None or waiter.done() or deadline is None:
            return  # no wait going on; the next one arms a timer again
        if self.loop.time() >= deadline:
            exc, what = self.timeout_error
            waiter.set_exception(exc(what))
        else:  # a later wait than the one this timer was set for
            self.timer = self.loop.call_at(deadline, self._check_deadline)

    async def more(self, timeout: float | None) -> bool:
        """Wait for more bytes; False once the peer has closed."""
        if self.eof:
            return False
        await self.wait(timeout, httpx.ReadTimeout, "timed out waiting for response data")
        return bool(self.buffer) or not self.eof

    def failure(self, what: str) -> httpx.TransportError:
        if self.lost is not None and isinstance(self.lost, ConnectionResetError | BrokenPipeError):
            return httpx.ReadError(f"{what}: the connection was reset by the peer")
        return httpx.RemoteProtocolError(what)

    async def send(self, request: httpx.Request, timeouts: dict[str, Any]) -> None:
        raw = request.headers.raw
        head = b"".join([b"%s %s HTTP/1.1\r\n" % (request.method.encode("ascii"), request.url.raw_path),
                         *[b"%s: %s\r\n" % pair for pair in raw], b"\r\n"])
        # A CR, LF or NUL inside a name or value would let it write headers of its own:
        # every line break must be one of ours (three scans of the head in C, not a
        # search per header).
        lines = len(raw) + 2
        if head.count(b"\n") != lines or head.count(b"\r") != lines or b"\0" in head:
            raise httpx.LocalProtocolError("illegal header name or value")
        transport = self.transport
        assert transport is not None
        try:
            body = request.content
        except httpx.RequestNotRead:
            chunked = request.headers.get("transfer-encoding", "").lower() == "chunked"
            transport.write(head)
            await self.drain(timeouts.get("write"))
            async for part in request.stream:  # type: ignore[union-attr]
                if part:
                    transport.write(b"%x\r\n%s\r\n" % (len(part), part) if chunked else part)
                    await self.drain(timeouts.get("write"))
            if chunked:
                transport.write(b"0\r\n\r\n")
        else:
            transport.write(head + body if body else head)
        await self.drain(timeouts.get("write"))

    async def drain(self, timeout: float | None) -> None:
        while self.writing_paused:
            if self.eof:
                raise httpx.WriteError("the connection closed while sending the request")
            await self.wait(timeout, httpx.WriteTimeout, "timed out sending the request")

    async def take_until(self, mark: bytes, timeout: float | None, what: str,
                         closed: str) -> bytes:
        """The bytes before the next `mark` (which is taken too); `what` names them in the
        error when they run over 64 KiB, `closed` is the error if the peer closes first."""
        start = 0
        while (end := self.buffer.find(mark, start)) < 0:
            if len(self.buffer) > _HEAD_LIMIT:
                raise httpx.RemoteProtocolError(f"{what} is over 64 KiB")
            start = max(0, len(self.buffer) - len(mark) + 1)
            if not await self.more(timeout):
                raise self.failure(closed)
        taken = bytes(self.buffer[:end])
        del self.buffer[:end + len(mark)]
        return taken

    async def read_head(self, timeout: float | None) -> tuple[int, int, bytes, list[tuple[bytes, bytes]]]:
        """(minor version, status, reason, headers) of the next response that is not 1xx."""
        while True:
            head = await self.take_until(b"\r\n\r\n", timeout, "the response head",
                                         "Server disconnected without sending a response")
            status_line, *header_lines = head.split(b"\r\n")
            match = _STATUS_LINE.fullmatch(status_line)
            if match is None:
                raise httpx.RemoteProtocolError(f"malformed status line {status_line[:80]!r}")
            headers = []
            for line in header_lines:
                name, colon, value = line.partition(b":")
                if not colon or not name or name != name.strip() or name[:1] in b" \t":
                    raise httpx.RemoteProtocolError(f"malformed response header {line[:80]!r}")
                headers.append((name, value.strip(b" \t")))
            status = int(match.group(2))
            if status >= 200 or status == 101:
                return int(match.group(1)), status, match.group(3) or b"", headers


class _Body(httpx.AsyncByteStream):
    """A response body read off its connection; the connection goes back to its pool
    when the body has been read to its end, and is closed if it is closed before."""

    def __init__(self, conn: _Connection, framing: str, length: int, keep_alive: bool,
                 read_timeout: float | None) -> None:
        self._conn: _Connection | None = conn
        self._framing = framing  # "length", "chunked", "close"
        self._length = length
        self._keep_alive = keep_alive
        self._timeout = read_timeout
        if framing == "length" and length == 0:
            self._done()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self._conn
        if conn is None:
            return
        if self._framing == "length":
            remaining = self._length
            while remaining:
                buffer = conn.buffer
                if not buffer and not await conn.more(self._timeout):
                    raise conn.failure(
                        "peer closed connection without sending complete message body: "
                        f"received {self._length - remaining} bytes, expected {self._length}")
                if len(buffer) <= remaining:
                    part = bytes(buffer)
                    buffer.clear()
                else:
                    part = bytes(buffer[:remaining])
                    del buffer[:remaining]
                remaining -= len(part)
                if not remaining:
                    self._done()
                yield part
        elif self._framing == "chunked":
            # Closed with this generator, not left for the garbage collector to close on a
            # loop that may be gone by then (Python 3.13 warns of that).
            async with contextlib.aclosing(self._chunks(conn)) as chunks:
                async for part in chunks:
                    yield part
        else:
            while conn.buffer or await conn.more(self._timeout):
                part = bytes(conn.buffer)
                conn.buffer.clear()
                if part:
                    yield part
            self._done(reusable=False)

    async def _line(self, conn: _Connection) -> bytes:
        return await conn.take_until(b"\r\n", self._timeout, "a chunk header or trailer",
                                     _CHUNKED_CUT)

    async def _chunks(self, conn: _Connection) -> AsyncGenerator[bytes, None]:
        while True:
            size_text = (await self._line(conn)).split(b";", 1)[0].strip(b" \t")
            if not _CHUNK_SIZE.fullmatch(size_text):  # int() alone takes "0x1f", "1_0", "-1"
                raise httpx.RemoteProtocolError(f"malformed chunk size {size_text[:20]!r}")
            size = int(size_text, 16)
            if size == 0:
                while await self._line(conn):  # trailers, up to the empty line
                    pass
                self._done()
                return
            remaining = size
            while remaining:  # hand over what has arrived, not waiting for the whole chunk
                if not conn.buffer and not await conn.more(self._timeout):
                    raise conn.failure(_CHUNKED_CUT)
                part = bytes(conn.buffer[:remaining])
                del conn.buffer[:len(part)]
                remaining -= len(part)
                yield part
            if await self._line(conn):
                raise httpx.RemoteProtocolError("a chunk is longer than its size says")

    def _done(self, reusable: bool = True) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.pool.release(conn, reusable and self._keep_alive)

    async def aclose(self) -> None:
        self._done(reusable=False)


class _Origin:
    """The connections to one scheme://host:port: at most `owner.max_connections` open,
    calls past that waiting in line for one."""

    def __init__(self, owner: Http11Transport, scheme: bytes, host: str, port: int) -> None:
        self.owner = owner
        self.loop = asyncio.get_running_loop()
        self.scheme = scheme
        self.host = host
        self.port = port
        self.idle: list[_Connection] = []  # freed last at the end
        self.open = 0
        self.waiters: deque[asyncio.Future[None]] = deque()

    async def connection(self, timeouts: dict[str, Any]) -> _Connection:
        """An idle connection, else a new one, else the next one freed."""
        deadline: float | None = None
        again = False
        while True:
            conn = self.take_idle()
            if conn is not None:
                return conn
            if self.open < self.owner.max_connections:
                break
            pool_timeout = timeouts.get("pool")
            if deadline is None and pool_timeout is not None:
                deadline = self.loop.time() + pool_timeout
            # Woken but beaten to the connection: back to the head of the line.
            await self.wait_in_line(deadline, front=again)
            again = True
        self.open += 1
        try:
            return await self.connect(timeouts.get("connect"))
        except BaseException:
            self.open -= 1
            self.wake_one()
            raise

    async def wait_in_line(self, deadline: float | None, front: bool) -> None:
        waiter = self.loop.create_future()
        self.waiters.appendleft(waiter) if front else self.waiters.append(waiter)
        timer = None if deadline is None else self.loop.call_at(
            deadline, _expire, waiter, httpx.PoolTimeout, "timed out waiting for a free connection")
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.wake_one()  # our turn came as we left: pass it on
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def wake_one(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def take_idle(self) -> _Connection | None:
        expiry = self.loop.time() - self.owner.keepalive_expiry
        while self.idle:
            conn = self.idle.pop()
            conn.idle_since, idle_since = -1.0, conn.idle_since
            if conn.usable and idle_since >= expiry:
                return conn
            self.close(conn)
        return None

    async def connect(self, timeout: float | None) -> _Connection:
        conn = _Connection(self)
        tls = self.scheme == b"https"
        try:
            async with asyncio.timeout(timeout):
                # Happy eyeballs (RFC 8305), as anyio does for httpcore: a host whose IPv6
                # route is broken still connects over IPv4 after 0.25 s, not a timeout.
                await self.loop.create_connection(
                    lambda: conn, self.host, self.port,
                    ssl=self.owner.ssl_context if tls else None,
                    server_hostname=self.host if tls else None, happy_eyeballs_delay=0.25)
        except TimeoutError:
            raise httpx.ConnectTimeout(f"timed out connecting to {self.host}:{self.port}") from None
        except (OSError, ssl_module.SSLError) as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
        return conn

    def release(self, conn: _Connection, reusable: bool) -> None:
        if reusable and conn.usable and not self.owner.closed:
            conn.idle_since = self.loop.time()
            self.idle.append(conn)
            if len(self.idle) > self.owner.max_keepalive:
                self.close(self.idle[0])
            self.wake_one()
        else:
            self.close(conn)

    def forget(self, conn: _Connection) -> None:
        """A connection the server closed while it sat idle."""
        if conn.idle_since >= 0:
            self.close(conn)

    def close(self, conn: _Connection) -> None:
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None
        if conn.transport is not None:
            conn.transport.abort()  # nothing of ours is left to send; do not linger
            conn.transport = None
        conn.eof = True
        if conn.idle_since >= 0:
            conn.idle_since = -1.0
            self.idle.remove(conn)
        self.open -= 1
        self.wake_one()


class Http11Transport(httpx.AsyncBaseTransport):
    """HTTP/1.1 connections for httpx on one event loop (the dispatcher makes a client per
    loop): at most `max_connections` open to each host, up to `max_keepalive` idle ones
    per host kept for `keepalive_expiry` seconds."""

    def __init__(self, *, ssl_context: ssl_module.SSLContext | None = None,
                 max_connections: int = 256, max_keepalive: int = 64,
                 keepalive_expiry: float = 4.0) -> None:
        # 4 s, under the 5 s after which uvicorn (vLLM, LM Studio's and many Python
        # servers, our emulators) closes an idle connection: at 5 s on both sides, a call
        # could go out on a connection whose close was already on its way, and fail.
        self._ssl_context = ssl_context
        self.max_connections = max(1, max_connections)
        self.max_keepalive = max_keepalive
        self.keepalive_expiry = keepalive_expiry
        self.closed = False
        self._origins: dict[tuple[bytes, str, int], _Origin] = {}

    @property
    def ssl_context(self) -> ssl_module.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = shared_ssl_context()
        return self._ssl_context

    @property
    def open_count(self) -> int:
        return sum(origin.open for origin in self._origins.values())

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.closed:
            raise RuntimeError("the transport is closed")
        url = request.url
        key = (url.raw_scheme, url.host, url.port or (443 if url.raw_scheme == b"https" else 80))
        origin = self._origins.get(key)
        if origin is None:
            origin = self._origins[key] = _Origin(self, *key)
        timeouts: dict[str, Any] = request.extensions.get("timeout", {})
        read_timeout = timeouts.get("read")
        conn = await origin.connection(timeouts)
        try:
            await conn.send(request, timeouts)
            minor, status, reason, headers = await conn.read_head(read_timeout)
            framing, length, keep_alive = _framing(request, minor, status, headers)
        except BaseException:
            origin.close(conn)
            raise
        return httpx.Response(
            status, headers=headers,
            stream=_Body(conn, framing, length, keep_alive, read_timeout),
            extensions={"http_version": b"HTTP/1.%d" % minor, "reason_phrase": reason})

    async def aclose(self) -> None:
        # Connections still carrying a body close when that body is closed.
        self.closed = True
        for origin in self._origins.values():
            for conn in list(origin.idle):
                origin.close(conn)
            while origin.waiters:
                waiter = origin.waiters.popleft()
                if not waiter.done():
                    waiter.set_exception(httpx.PoolTimeout("the client was closed"))


def _framing(request: httpx.Request, minor: int, status: int,
             headers: list[tuple[bytes, bytes]]) -> tuple[str, int, bool]:
    """How the body ends (RFC 9112 section 6.3), its length, and whether the connection
    may carry another request afterwards."""
    connection = b""
    transfer = b""
    lengths = set()
    for name, value in headers:
        lower = name.lower()
        if lower == b"content-length":
            lengths.add(value)
        elif lower == b"transfer-encoding":
            transfer = value.lower()
        elif lower == b"connection":
            connection = value.lower()
    keep_alive = minor == 1 and b"close" not in connection \
        and "close" not in request.headers.get("connection", "").lower()
    if request.method == "HEAD" or status in _NO_BODY_STATUS or 100 <= status < 200:
        return "length", 0, keep_alive
    if transfer:
        if transfer.rsplit(b",", 1)[-1].strip() == b"chunked":
            return "chunked", 0, keep_alive
        return "close", 0, False
    if lengths:
        if len(lengths) > 1 or not next(iter(lengths)).isdigit():
            raise httpx.RemoteProtocolError(f"bad Content-Length {sorted(lengths)!r}")
        return "length", int(next(iter(lengths))), keep_alive
    return "close", 0, False
