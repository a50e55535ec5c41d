"""Connections to one vendor host, each in an httpcore pool of its own ("shards").

Why: httpcore 1.x's connection pool walks every connection it holds each time a request
starts or ends; for each idle one it asks the socket whether it is readable (two system
calls) and counts the whole pool again. With 50 calls in flight to one vendor that walk
took more than half of the client's CPU (`bench/fanout.py`, raw httpx included). With one
connection per pool every walk is one step; this transport keeps the free ones in a
stack, so finding a connection is one step too.

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
    """A response body that hands its shard back when closed."""

    def __init__(self, stream: httpx.AsyncByteStream, owner: ShardedTransport,
                 shard: _Shard) -> None:
        self._stream = stream
        self._owner = owner
        self._shard: _Shard | None = shard

    def __aiter__(self) -> AsyncIterator[bytes]:
        # The inner iterator itself: no generator of ours between each chunk and the caller.
        return self._stream.__aiter__()

    async def aclose(self) -> None:
        shard, self._shard = self._shard, None
        if shard is not None:
            self._owner._release(shard)
        await self._stream.aclose()


class ShardedTransport(httpx.AsyncBaseTransport):
    """Up to `max_connections` connections to one host, each in an httpcore pool of its
    own. A request takes the connection freed last (warm, and one call at a time keeps
    reusing one connection); past `max_connections` in flight, requests queue on the
    shards in turn. Used by one event loop (the dispatcher makes a client per loop)."""

    def __init__(self, *, max_connections: int = 256, **transport_options: Any) -> None:
        self._max = max(1, max_connections)
        self._options = transport_options
        self._shards: list[_Shard] = []
        self._free: list[_Shard] = []  # shards with nothing in flight, freed last at the end
        self._turn = 0
        self._closed = False

    def _take(self) -> _Shard:
        if self._free:
            shard = self._free.pop()
        elif len(self._shards) < self._max:
            limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
            options = {"verify": shared_ssl_context(), **self._options}
            shard = _Shard(httpx.AsyncHTTPTransport(limits=limits, **options))
            self._shards.append(shard)
        else:  # every connection busy: wait in line on the next shard
            self._turn = (self._turn + 1) % len(self._shards)
            shard = self._shards[self._turn]
        shard.in_flight += 1
        return shard

    def _release(self, shard: _Shard) -> None:
        shard.in_flight -= 1
        if shard.in_flight == 0 and not self._closed:
            self._free.append(shard)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        shard = self._take()
        try:
            response = await shard.transport.handle_async_request(request)
        except BaseException:
            self._release(shard)
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _Freeing(response.stream, self, shard)
        return response

    async def aclose(self) -> None:
        self._closed = True
        shards, self._shards, self._free = self._shards, [], []
        for shard in shards:
            await shard.transport.aclose()
