"""One pooled `httpx.AsyncClient` per event loop the dispatcher's calls run on.

Async callers' calls run on the caller's own loop (no hop to the dispatcher's thread and
back, which cost about a third of our per-call overhead); sync calls run on the
dispatcher's loop thread. An httpx client's connections belong to the loop that opened
them, so each loop gets its own client.

A caller's loop may end before the dispatcher does (`asyncio.run` per cell or per script).
Its client is closed when the loop shuts down: `adopt` starts a small async generator on
that loop, and every loop closes the async generators still open as it shuts down
(`loop.shutdown_asyncgens`, which `asyncio.run` calls), which runs its `finally`.
"""

from __future__ import annotations

import asyncio
import importlib
import threading
import urllib.request
from collections.abc import AsyncGenerator, Callable

import httpx

from ._aiohttp import Http11Transport, shared_ssl_context
from ._transport import response_caps, response_hook

_LOOPBACK = ("127.0.0.1", "localhost", "[::1]")


def new_client(timeout: httpx.Timeout) -> httpx.AsyncClient:
    """A client whose connections are `_aiohttp.Http11Transport`'s (aiohttp's pool and C
    parser under httpx: about half the CPU per call of httpx's default transport with 200
    calls in flight, `bench/RESULTS.md`). When a proxy is configured (HTTP(S)_PROXY,
    ALL_PROXY, the system's), remote hosts go through httpx's own transports instead, which
    apply it and NO_PROXY; that transport then shares our SSL context (building its own
    took 45-100 ms a client).

    Loopback (the emulators, a local Ollama) never goes through a proxy, which would
    otherwise swallow every demo call. Every body is read under the caps of
    `_transport.response_caps()`, as set when the client is made."""
    hooks = {"response": [response_hook(response_caps())]}
    transport = Http11Transport()
    mounts: dict[str, httpx.AsyncBaseTransport | None] = {
        f"all://{host}": transport for host in _LOOPBACK}
    if any(k != "no" for k in urllib.request.getproxies()):  # as httpx reads them
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
        return httpx.AsyncClient(timeout=timeout, mounts=mounts, verify=shared_ssl_context(),
                                 limits=limits, event_hooks=hooks)
    return httpx.AsyncClient(timeout=timeout, transport=transport, mounts=mounts,
                             event_hooks=hooks)


_warmed = threading.Event()


def _warm_transport() -> None:
    """Import aiohttp in the background, once per process: the transport needs it on the
    first call, and there its 0.15-0.4 s would be added to that call's latency."""
    if _warmed.is_set():
        return
    _warmed.set()
    threading.Thread(target=importlib.import_module, args=("aiohttp",), daemon=True,
                     name="llmdispatch-import").start()


class LoopClients:
    def __init__(self, make: Callable[[], httpx.AsyncClient]) -> None:
        _warm_transport()
        self._make = make
        self._clients: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}
        self._closers: dict[asyncio.AbstractEventLoop, AsyncGenerator[None, None]] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def get(self) -> httpx.AsyncClient:
        """The running loop's client (made on first use)."""
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = self._clients[loop] = self._make()
        return client

    def __len__(self) -> int:
        return len(self._clients)

    async def adopt(self) -> None:
        """Make sure the running loop has a client, closed when the loop shuts down."""
        loop = asyncio.get_running_loop()
        if loop in self._closers:
            return
        closer = self._close_at_end(loop, self.get())
        self._closers[loop] = closer
        await closer.asend(None)

    async def _close_at_end(self, loop: asyncio.AbstractEventLoop,
                            client: httpx.AsyncClient) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            self._closers.pop(loop, None)
            if self._clients.get(loop) is client:
                del self._clients[loop]
            await client.aclose()

    async def aclose_here(self) -> None:
        """Close the running loop's client, if it has one."""
        loop = asyncio.get_running_loop()
        closer = self._closers.get(loop)
        if closer is not None:
            await closer.aclose()
            return
        client = self._clients.pop(loop, None)
        if client is not None:
            await client.aclose()

    def close_others(self, own: asyncio.AbstractEventLoop | None) -> None:
        """Close the clients of the loops other than `own` (from a sync `close()`)."""
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        for loop in list(self._clients):
            if loop is own:
                continue
            if loop.is_closed():
                # Its connections went with it; nothing can be awaited there any more.
                self._clients.pop(loop, None)
                self._closers.pop(loop, None)
            elif loop is running:
                # A sync close() inside that loop cannot wait for it: close as soon as the
                # caller yields (and, failing that, when the loop shuts down).
                task = loop.create_task(self.aclose_here())
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)
            elif loop.is_running():
                fut = asyncio.run_coroutine_threadsafe(self.aclose_here(), loop)
                try:
                    fut.result(timeout=5)
                except Exception:  # timed out, or that loop stopped meanwhile
                    fut.cancel()
            # A loop neither running nor closed closes its client when it shuts down.
