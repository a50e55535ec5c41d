"""A tiny misbehaving vendor of the tests' own, on loopback: each test hands it a function
that sees the request (path, headers, the key it carried, the JSON body) and returns the
answer to send, a whole body or a list of SSE events. The wire tests use it to be a
gateway that reflects the key back, or a server whose usage counts are garbage, which the
emulators (faithful to the vendors) never are.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    key: str  # the credential the request carried, in whichever header its vendor uses
    body: Any


@dataclass
class Answer:
    status: int = 200
    body: Any = None  # JSON-able, or bytes sent as they are
    events: list[str] | None = None  # SSE `data:` payloads (already JSON text), for a stream
    headers: dict[str, str] = field(default_factory=dict)


Script = Callable[[Seen], Answer]


def _key_of(headers: dict[str, str]) -> str:
    for name in ("x-api-key", "api-key", "x-goog-api-key"):
        if headers.get(name):
            return headers[name]
    return headers.get("authorization", "").removeprefix("Bearer ").strip()


class WireServer:
    """`with WireServer() as s: s.script = fn; ... s.url`"""

    def __init__(self) -> None:
        self.script: Script = lambda seen: Answer(500, {"error": {"message": "no script"}})
        self.seen: list[Seen] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet: pytest turns noise into errors
                pass

            def do_GET(self) -> None:
                self.do_POST()

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw
                headers = {k.lower(): v for k, v in self.headers.items()}
                seen = Seen(self.path, headers, _key_of(headers), body)
                server.seen.append(seen)
                answer = server.script(seen)
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                if answer.events is not None:
                    payload = "".join(f"data: {e}\n\n" for e in answer.events).encode()
                    self.send_header("content-type", "text/event-stream")
                else:
                    payload = answer.body if isinstance(answer.body, bytes) else \
                        json.dumps(answer.body).encode()
                    self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> WireServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)


def serve_wire() -> Iterator[WireServer]:
    """A fixture's body: one server for the module."""
    with WireServer() as s:
        yield s
