"""The emulators' shared ASGI base and the loopback server that runs them.

`serve()` starts every emulator on its own port of 127.0.0.1 with uvicorn, on one event
loop in one background thread, and returns a `SimServer` that tells each base URL.

Faults that live below HTTP need the socket: a connection reset (RST, via SO_LINGER 0) and
a mid-stream disconnect. uvicorn gives an ASGI app no socket, so a small subclass of its
h11 protocol files each connection's transport under the client's address, where the app
finds it through `scope["client"]`.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import struct
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ._core import FaultPlan, Received, RequestLog, stamp

# Keyed by (client host, client port, server port): one client port can carry connections
# to two emulators at once (Linux shares an ephemeral port across destinations), and a
# reset meant for one must not cut the other.
_TRANSPORTS: dict[tuple[str, int, int], asyncio.Transport] = {}


def _key(transport: asyncio.BaseTransport) -> tuple[str, int, int] | None:
    peer, own = transport.get_extra_info("peername"), transport.get_extra_info("sockname")
    return (peer[0], peer[1], own[1]) if peer and own else None


def _tracking_protocol() -> type[asyncio.Protocol]:
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class TrackingH11Protocol(H11Protocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            sock = transport.get_extra_info("socket")
            if sock is not None:
                # Without this, headers and body leave as two segments and Nagle holds the
                # second for the client's delayed ACK: ~40 ms added to every keep-alive call.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            key = _key(transport)
            if key:
                _TRANSPORTS[key] = transport
            super().connection_made(transport)

        def connection_lost(self, exc: Exception | None) -> None:
            key = _key(self.transport) if self.transport else None
            # Only our own entry: a new connection may already reuse this client port.
            if key and _TRANSPORTS.get(key) is self.transport:
                del _TRANSPORTS[key]
            super().connection_lost(exc)

    return TrackingH11Protocol


def reset_connection(request: Request) -> None:
    """Drop the client's TCP connection with a RST, as a crashed proxy or peer would."""
    client, server = request.scope.get("client"), request.scope.get("server")
    transport = _TRANSPORTS.get((client[0], client[1], server[1])) if client and server else None
    if transport is None:
        raise RuntimeError("no transport for this connection; is the emulator served by serve()?")
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    transport.abort()


async def hang(request: Request, seconds: float) -> None:
    """Send nothing; return when the client gives up (or after `seconds`)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        try:
            message = await asyncio.wait_for(request.receive(), timeout=min(1.0, end - loop.time()))
        except TimeoutError:
            continue
        if message["type"] == "http.disconnect":
            return


class Emulator:
    """One vendor's API as an ASGI app. Subclasses add routes and the vendor's shapes.

    `api_key=None` accepts any non-empty key (the default, as a demo needs); a string
    requires exactly that key, to test 401s. `time_scale` multiplies every profile delay
    (0 = instant, for fast tests). `requests` logs each request received.
    """

    vendor: str = ""

    def __init__(self, *, api_key: str | None = None, time_scale: float = 1.0, seed: int = 0) -> None:
        from starlette.applications import Starlette

        self.api_key = api_key
        self.time_scale = time_scale
        self.faults = FaultPlan()
        self.requests = RequestLog()
        self._rng = random.Random(seed)
        self._ids = 0
        self.app = Starlette(routes=self.routes())

    # Subclasses return their starlette routes.
    def routes(self) -> list[Any]:
        raise NotImplementedError

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)

    @property
    def count(self) -> int:
        """Generation requests received (models listings not counted)."""
        return len(self.requests.chat())

    def reset(self) -> None:
        self.faults.clear()
        self.requests.clear()

    def next_id(self, prefix: str) -> str:
        self._ids += 1
        return f"{prefix}{self._rng.getrandbits(64):016x}{self._ids:06d}"

    def log(self, request: Request, model: str | None, stream: bool, fault: str | None) -> None:
        self.requests.add(Received(stamp(), request.method, request.url.path, model, stream, fault,
                                   request.headers.get("x-stainless-retry-count"),
                                   getattr(request.state, "json_body", None)))

    def rng(self) -> random.Random:
        return random.Random(self._rng.random())

    @staticmethod
    async def json_body(request: Request) -> Any:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return None
        request.state.json_body = body  # kept for the request log
        return body


def json_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


_COMPACT = json.JSONEncoder(separators=(",", ":"))  # one encoder, not one per event


def sse_frame(data: Any, event: str | None = None) -> bytes:
    payload = data if isinstance(data, str) else _COMPACT.encode(data)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()


class SimServer:
    """Emulators served on loopback. Use as a context manager, or call `close()`."""

    def __init__(self, emulators: Mapping[str, Emulator], host: str = "127.0.0.1") -> None:
        self.emulators = dict(emulators)
        self.host = host
        self.ports: dict[str, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._servers: list[Any] = []
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> SimServer:
        import uvicorn

        socks = {}
        for name in self.emulators:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((self.host, 0))
            s.listen(2048)
            s.setblocking(False)
            socks[name] = s
            self.ports[name] = s.getsockname()[1]
        proto = _tracking_protocol()
        for name, emu in self.emulators.items():
            # log_config=None: uvicorn's default runs logging.config.dictConfig, which holds
            # the logging lock while ipykernel's output thread wants it: a fresh kernel's
            # first Dispatcher() stalled 10-30 s with "IOStream.flush timed out".
            config = uvicorn.Config(emu, log_config=None, log_level="warning", http=proto,
                                    lifespan="off",
                                    access_log=False, timeout_keep_alive=30, backlog=2048)
            self._servers.append((uvicorn.Server(config), socks[name]))

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._serve_all())
            except BaseException as exc:  # reported to start()'s caller
                self._error = exc
                self._ready.set()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="llmdispatch-sim", daemon=True)
        self._thread.start()
        if not self._ready.wait(15) or self._error:
            raise RuntimeError(f"emulators failed to start: {self._error!r}")
        return self

    async def _serve_all(self) -> None:
        tasks = [asyncio.create_task(srv.serve(sockets=[sock])) for srv, sock in self._servers]
        while not all(srv.started for srv, _ in self._servers):
            if any(t.done() for t in tasks):
                break
            await asyncio.sleep(0.005)
        self._ready.set()
        await asyncio.gather(*tasks)

    def base_url(self, vendor: str) -> str:
        """The URL a client of that vendor would be configured with."""
        port = self.ports[vendor]
        root = f"http://{self.host}:{port}"
        emu = self.emulators[vendor]
        suffix = getattr(emu, "base_path", "")
        return root + suffix

    def close(self) -> None:
        for srv, _ in self._servers:
            srv.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        self._servers.clear()

    def __enter__(self) -> SimServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def total_requests(self) -> int:
        return sum(e.count for e in self.emulators.values())


EMULATORS: dict[str, str] = {
    "openai": "llmdispatch_nb.sim.openai:OpenAIEmulator",
    "anthropic": "llmdispatch_nb.sim.anthropic:AnthropicEmulator",
    "google": "llmdispatch_nb.sim.gemini:GeminiEmulator",
    "azure": "llmdispatch_nb.sim.azure:AzureEmulator",
}


def make_emulator(vendor: str, **kw: Any) -> Emulator:
    import importlib

    module, _, cls = EMULATORS[vendor].partition(":")
    factory: Callable[..., Emulator] = getattr(importlib.import_module(module), cls)
    return factory(**kw)


def serve(vendors: Sequence[str] = ("openai", "anthropic", "google", "azure"), *,
          host: str = "127.0.0.1", **kw: Any) -> SimServer:
    """Start the emulators on loopback (real sockets) and return the running server.

    Keyword arguments (`api_key`, `time_scale`, `seed`) go to every emulator.
    """
    unknown = [v for v in vendors if v not in EMULATORS]
    if unknown:
        raise ValueError(f"no emulator for {unknown}; known: {', '.join(EMULATORS)}")
    return SimServer({v: make_emulator(v, **kw) for v in vendors}, host=host).start()
