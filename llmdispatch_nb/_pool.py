"""Connections to one vendor host, kept in small pools ("shards") of a few connections.

Why: httpcore 1.x's connection pool walks every connection it holds each time a request
starts or ends; for each idle one it asks the socket whether it is readable (two system
calls) and counts the whole pool again. With 50 calls in flight to one vendor that walk
took more than half of the client's CPU (`bench/fanout.py`, raw httpx included). Several
small pools behind one transport keep every walk short; a request goes to the first
shard with a free connection, so one call at a time keeps reusing the same connection.

Only public httpx API: each shard is an `httpx.AsyncHTTPTransport`; a response's stream
is wrapped to know when its connection is free again.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import AsyncIterator
from typing import Any

import httpx

_ssl_context: ssl.SSLContext | None = None
_ssl_lock = threading.Lock()


def shared_ssl_context() -> ssl.SSLContext:
    """One verifying SSL context for every shard (httpx's default: certifi, or
    SSL_CERT_FILE / SSL_CERT_DIR). Building one takes about 10 ms; a new shard each time
    cost a tenth of a 2,000-call fan-out."""
    global _ssl_context
    with _ssl_lock:
        if _ssl_context is None:
            _ssl_context = httpx.create_ssl_context()
        return _ssl_context


class _Shard:
    __slots__ = ("in_flight", "transport")

    def __init__(self, transport: httpx.AsyncHTTPTransport) -> None:
        self.transport = transport
        self.in_flight = 0


class _Freeing(httpx.AsyncByteStream):
    """A response body that hands its shard's slot back when closed."""

    def __init__(self, stream: httpx.AsyncByteStream, shard: _Shard) -> None:
        self._stream = stream
        self._shard: _Shard | None = shard

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        shard, self._shard = self._shard, None
        if shard is not None:
            shard.in_flight -= 1
        await self._stream.aclose()


class ShardedTransport(httpx.AsyncBaseTransport):
    """Up to `max_connections` connections to one host, `shard_size` per httpcore pool.
    Used by one event loop (the dispatcher makes a client per loop)."""

    def __init__(self, *, max_connections: int = 256, shard_size: int = 8,
                 **transport_options: Any) -> None:
        self._size = shard_size
        self._max_shards = max(1, max_connections // shard_size)
        self._options = transport_options
        self._shards: list[_Shard] = []

    def _pick(self) -> _Shard:
        least: _Shard | None = None
        for shard in self._shards:
            if shard.in_flight < self._size:
                return shard
            if least is None or shard.in_flight < least.in_flight:
                least = shard
        if len(self._shards) < self._max_shards or least is None:
            limits = httpx.Limits(max_connections=self._size, max_keepalive_connections=self._size)
            options = {"verify": shared_ssl_context(), **self._options}
            shard = _Shard(httpx.AsyncHTTPTransport(limits=limits, **options))
            self._shards.append(shard)
            return shard
        return least  # every shard full: wait in the least busy one's queue

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        shard = self._pick()
        shard.in_flight += 1
        try:
            response = await shard.transport.handle_async_request(request)
        except BaseException:
            shard.in_flight -= 1
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _Freeing(response.stream, shard)
        return response

    async def aclose(self) -> None:
        shards, self._shards = self._shards, []
        for shard in shards:
            await shard.transport.aclose()
