"""A vendor sending garbage (issue 14): a raw-socket loopback server of the test's own answers
each adapter (OpenAI, Azure, an OpenAI-compatible server, Anthropic, Gemini), plain and
streamed, with seeded random garbage: random bytes, truncated JSON, valid JSON of the
wrong shape (the vendor's own reply with keys dropped and values swapped for other types),
wrong content types, broken SSE framing, random status codes and bodies, odd header
values, a connection closed at a random byte, and a server that stops sending.

Each call must end in a response or one typed error of ours (`LLMDispatchError`), never a
raw KeyError/TypeError/JSONDecodeError/AttributeError; with a ledger row for every request
the server read; no budget reservation left open; and no hang (a short deadline, and a
gross-stall guard of seconds).
Case counts: 5 vendors x 2 modes x 60 cases = 600 calls; about 25-40 s on 2 cores (the
hangs and trickles, ~5% of cases, each wait out the 1 s deadline). WIRE_FUZZ_SEED=N runs another seed.
"""

from __future__ import annotations

import json
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from llmdispatch_nb import Dispatcher, Endpoint, Secret
from llmdispatch_nb.errors import LLMDispatchError
from llmdispatch_nb.ledger import Ledger
from llmdispatch_nb.resilience import CircuitBreaker, RetryPolicy

CASES = 60  # per vendor and mode
SEED = int(os.environ.get("WIRE_FUZZ_SEED", "1414"))
DEADLINE_S = 1.0
STALL_S = 15.0  # a gross stall, not a timing

TARGETS = {"openai": "openai:gpt-4o-mini", "azure": "azure:gpt-4o-mini",
           "local": "local:llama3.2", "anthropic": "anthropic:claude-haiku-4-5",
           "google": "google:gemini-2.5-flash"}

# -- the server ------------------------------------------------------------------------------

# What the server does with one request: send bytes, then "close" or "hang"; or
# "trickle" them a byte at a time.
Plan = tuple[bytes, str]


@dataclass
class GarbageServer:
    """Reads each request whole, then answers with whatever `plan(path, body)` says."""

    plan: Callable[[str, Any], Plan] = lambda path, body: (b"", "close")
    requests: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            try:
                head, body = self._read(conn)
            except (OSError, ValueError):
                return
            if head is None:
                return
            self.requests += 1
            path = head.split(b" ")[1].decode("latin-1") if b" " in head else "/"
            try:
                parsed = json.loads(body) if body else None
            except ValueError:
                parsed = None
            payload, then = self.plan(path, parsed)
            try:
                if then == "trickle":  # a byte at a time, forever: each read succeeds
                    for i in range(len(payload)):
                        conn.sendall(payload[i:i + 1])
                        if self._stop.wait(0.05):
                            return
                    payload, then = b"", "hang"
                conn.sendall(payload)
                if then == "hang":  # keep the socket open, send nothing more
                    self._stop.wait(DEADLINE_S * 4)
            except OSError:
                pass

    @staticmethod
    def _read(conn: socket.socket) -> tuple[bytes | None, bytes]:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return None, b""
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(rest) < length:
            chunk = conn.recv(65536)
            if not chunk:
                break
            rest += chunk
        return head, rest

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        self._thread.join(5)


# -- garbage -------------------------------------------------------------------------------


def shape(path: str) -> str:
    if "enerateContent" in path:
        return "gemini"
    return "anthropic" if path.startswith("/v1/messages") else "openai"


def good_reply(kind: str) -> Any:
    if kind == "anthropic":
        return {"id": "msg_1", "model": "claude-haiku-4-5", "type": "message", "role": "assistant",
                "stop_reason": "end_turn", "content": [{"type": "text", "text": "Hi"}],
                "usage": {"input_tokens": 5, "output_tokens": 2}}
    if kind == "gemini":
        return {"candidates": [{"content": {"parts": [{"text": "Hi"}], "role": "model"},
                                "finishReason": "STOP", "index": 0}],
                "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 2,
                                  "totalTokenCount": 7},
                "modelVersion": "gemini-2.5-flash", "responseId": "r1"}
    return {"id": "c1", "object": "chat.completion", "model": "gpt-4o-mini",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "Hi"}}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}


def good_events(kind: str) -> list[Any]:
    if kind == "anthropic":
        return [{"type": "message_start", "message": {
                    "id": "m1", "model": "claude-haiku-4-5", "usage": {"input_tokens": 5}}},
                {"type": "content_block_start", "index": 0,
                 "content_block": {"type": "text", "text": ""}},
                {"type": "content_block_delta", "index": 0,
                 "delta": {"type": "text_delta", "text": "Hi"}},
                {"type": "content_block_stop", "index": 0},
                {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                 "usage": {"output_tokens": 2}},
                {"type": "message_stop"}]
    if kind == "gemini":
        return [good_reply("gemini")]
    return [{"id": "c1", "model": "gpt-4o-mini", "choices": [
                {"index": 0, "delta": {"role": "assistant", "content": "Hi"}, "finish_reason": None}]},
            {"id": "c1", "model": "gpt-4o-mini", "choices": [
                {"index": 0, "delta": {}, "finish_reason": "stop"}]},
            {"id": "c1", "model": "gpt-4o-mini", "choices": [],
             "usage": {"prompt_tokens": 5, "completion_tokens": 2}},
            "[DONE]"]


def odd_value(rng: random.Random) -> Any:
    return rng.choice([None, 0, -1, 1.5, 2**70, -(2**70), 1e308, "x", "", "\ud800", [], {},
                       [1, 2], {"a": None}, True, False, "NaN", [None], [[[]]], "9" * 30])


def mutate(rng: random.Random, value: Any, depth: int = 0) -> Any:
    """The same JSON with some keys dropped and some values swapped for other types."""
    if rng.random() < 0.12 and depth > 0:
        return odd_value(rng)
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if rng.random() < 0.1:
                continue  # a missing key
            out[k] = mutate(rng, v, depth + 1)
        if rng.random() < 0.05:
            out[rng.choice(["error", "type", "usage", "choices", "candidates"])] = odd_value(rng)
        return out
    if isinstance(value, list):
        items = [mutate(rng, v, depth + 1) for v in value]
        if items and rng.random() < 0.1:
            items = items * rng.randint(2, 3)
        return items
    return value


def dumps(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode("utf-8", "surrogatepass")


def random_bytes(rng: random.Random, n: int | None = None) -> bytes:
    return bytes(rng.randrange(256) for _ in range(n if n is not None else rng.randint(0, 300)))


CONTENT_TYPES = ["application/json", "text/event-stream", "text/html", "text/plain",
                 "application/octet-stream", "", "application/json; charset=latin-1",
                 "text/event-stream; charset=\x01", "multipart/mixed; boundary=x"]
ODD_HEADERS = [("retry-after", "nan"), ("retry-after", "-1"), ("retry-after", "1e309"),
               ("retry-after", "Wed, 99 Foo 2026 99:99:99 GMT"), ("retry-after", "9" * 40),
               ("retry-after-ms", "inf"), ("retry-after-ms", "-5"), ("x-request-id", ""),
               ("x-request-id", "\xff\xfe"), ("request-id", "a" * 5000),
               ("x-ratelimit-reset-requests", "soon"), ("content-encoding", "gzip"),
               ("content-encoding", "br"), ("content-encoding", "bogus"),
               ("x-should-retry", "maybe"), ("openai-processing-ms", "-1")]
STATUSES = [200] * 10 + [201, 204, 301, 302, 304, 400, 401, 403, 404, 408, 409, 413, 422, 429,
                         499, 500, 502, 503, 504, 529, 599, 102, 600, 999]


# A tool call as each wire streams it, spliced into some streams.
TOOL_EVENTS: dict[str, list[Any]] = {
    "openai": [{"choices": [{"index": 0, "delta": {"tool_calls": [{
        "index": 0, "id": "t1", "type": "function",
        "function": {"name": "f", "arguments": '{"a"'}}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{
            "index": 0, "function": {"arguments": ': 1}'}}]}}]}],
    "anthropic": [{"type": "content_block_start", "index": 1,
                   "content_block": {"type": "tool_use", "id": "t1", "name": "f", "input": {}}},
                  {"type": "content_block_delta", "index": 1,
                   "delta": {"type": "input_json_delta", "partial_json": '{"a": 1}'}},
                  {"type": "content_block_stop", "index": 1}],
    "gemini": [{"candidates": [{"content": {"parts": [
        {"functionCall": {"name": "f", "args": {"a": 1}}}]}}]}],
}


def sse_body(rng: random.Random, kind: str) -> bytes:
    good = good_events(kind)
    if rng.random() < 0.3:
        good[1:1] = TOOL_EVENTS[kind]
    events = [mutate(rng, e) if not isinstance(e, str) and rng.random() < 0.5 else e
              for e in good]
    parts = []
    for e in events:
        data = e.encode() if isinstance(e, str) else dumps(e)
        roll = rng.random()
        if roll < 0.05:
            data = data[: rng.randint(0, len(data))]  # a truncated event
        elif roll < 0.08:
            data = random_bytes(rng, 40)
        prefix = rng.choice([b"data: "] * 8 + [b"data:", b"data :", b"", b"event: error\ndata: ",
                                                b": comment\ndata: ", b"DATA: "])
        end = rng.choice([b"\n\n"] * 8 + [b"\n", b"\r\n\r\n", b"\r\r", b"", b"\n\n\n\n"])
        parts.append(prefix + data + end)
    if rng.random() < 0.1:
        parts.insert(rng.randrange(len(parts) + 1), random_bytes(rng))
    return b"".join(parts)


def http(status: int, body: bytes, headers: list[tuple[str, str]], length: str | None) -> bytes:
    lines = [f"HTTP/1.1 {status} Whatever".encode()]
    for name, value in headers:
        lines.append(name.encode() + b": " + value.encode("latin-1", "replace"))
    if length is not None:
        lines.append(b"content-length: " + length.encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def garbage(rng: random.Random, path: str, body: Any) -> Plan:
    """One seeded answer to one request."""
    kind = shape(path)
    streamed = "alt=sse" in path or (isinstance(body, dict) and bool(body.get("stream")))
    roll = rng.random()
    if roll < 0.04:
        return random_bytes(rng), "close"  # not even HTTP
    status = rng.choice(STATUSES)
    what = rng.random()
    if what < 0.15:
        payload = random_bytes(rng)
    elif what < 0.25:
        whole = dumps(good_reply(kind))
        payload = whole[: rng.randint(0, len(whole) - 1)]  # truncated JSON
    elif what < 0.3:
        payload = rng.choice([b"[" * 100_000, b'{"a":' * 50_000, b"NaN", b"null", b"1e99999",
                              b'"\\ud800"', b"[]", b"{}", b'{"error": null}', b'{"error": 5}',
                              b'{"error": {"message": ["x"], "code": {}, "type": 7}}'])
    elif streamed and what < 0.75:
        payload = sse_body(rng, kind)
    else:
        payload = dumps(mutate(rng, good_reply(kind)))
    ctype = "text/event-stream" if streamed and rng.random() < 0.7 else rng.choice(CONTENT_TYPES)
    headers = [("content-type", ctype)] if ctype else []
    headers += rng.sample(ODD_HEADERS, k=rng.choice([0, 0, 0, 1, 2]))
    length: str | None = str(len(payload))
    framing = rng.random()
    if framing < 0.1:
        length = str(len(payload) + rng.randint(1, 500))  # promises more than it sends
    elif framing < 0.15:
        length = rng.choice(["-1", "abc", "1e3", "99999999999999999999"])
    elif framing < 0.25:
        length = None  # read until close
    wire = http(status, payload, headers, length)
    end = rng.random()
    if end < 0.12:
        return wire[: rng.randint(0, len(wire))], "close"  # closed at a random byte
    if end < 0.16:
        return wire[: rng.randint(0, len(wire))], "hang"  # stops sending
    if end < 0.17:
        return wire, "trickle"  # never stops sending, never finishes
    return wire, "close"


# -- the calls ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[GarbageServer]:
    s = GarbageServer()
    yield s
    s.close()


def dispatcher(url: str) -> Dispatcher:
    k = Secret("sk-fuzz-0123456789abcdef")
    eps = [Endpoint("openai", "openai", f"{url}/v1", key=k),
           Endpoint("azure", "azure", url, key=k, auth="api-key", route="deployments",
                    api_version="2024-10-21", deployments={"gpt-4o-mini": "gpt-4o-mini"}),
           Endpoint("local", "compat", f"{url}/v1", key=k, priced=False),
           Endpoint("anthropic", "anthropic", url, key=k),
           Endpoint("google", "gemini", url, key=k)]
    # One attempt a call (one request, one row), and a breaker that never opens, so every
    # case reaches the adapter instead of being refused by the garbage before it.
    return Dispatcher(eps, dotenv=False, retry=RetryPolicy(max_attempts=1), cache=False,
                      ledger=Ledger.memory(), deadline_s=DEADLINE_S, timeout=DEADLINE_S,
                      breaker=CircuitBreaker(threshold=1, min_calls=10**6, window=10**6,
                                             long_retry_after_s=1e9),
                      budget=100.0)


def one_call(d: Dispatcher, target: str, stream: bool) -> tuple[str, float]:
    """'ok', or the error's class name; and how long it took. A raw error is re-raised."""
    start = time.monotonic()
    try:
        if stream:
            s = d.stream("hello", target, max_tokens=20)
            for _ in s:
                pass
            assert s.response is not None
            r = s.response
        else:
            r = d.send("hello", target, max_tokens=20)
        # An answer made of garbage must still be an answer of our types.
        assert isinstance(r.text, str) and isinstance(r.finish_reason, str), repr(r)[:300]
        assert all(isinstance(n, int) and n >= 0 for n in
                   (r.usage.input_tokens, r.usage.output_tokens) if n is not None), r.usage
        outcome = "ok"
    except LLMDispatchError as exc:
        outcome = type(exc).__name__
    return outcome, time.monotonic() - start


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("vendor", list(TARGETS))
def test_garbage_from_a_vendor_ends_in_a_response_or_one_typed_error(
        server: GarbageServer, vendor: str, stream: bool) -> None:
    rng = random.Random(f"{SEED}-{vendor}-{stream}")
    server.plan = lambda path, body: garbage(rng, path, body)
    failures: list[str] = []
    outcomes: dict[str, int] = {}
    with dispatcher(server.url) as d:
        for i in range(CASES):
            before_req, before_rows = server.requests, len(d.session_records())
            try:
                outcome, elapsed = one_call(d, TARGETS[vendor], stream)
            except Exception as exc:  # a raw error: the promise is broken
                failures.append(f"case {i}: raw {type(exc).__name__}: {str(exc)[:200]}")
                continue
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            if elapsed > STALL_S:
                failures.append(f"case {i}: {outcome} after {elapsed:.1f}s")
            rows = d.session_records()[before_rows:]
            sent = server.requests - before_req
            on_wire = [r for r in rows if r.status in ("ok", "error", "cancelled")]
            if len(on_wire) != max(sent, 1) and not (sent == 0 and len(rows) == 1):
                failures.append(f"case {i}: {outcome}: {sent} requests read, ledger rows "
                                f"{[(r.status, r.error_class) for r in rows]}")
            if d.budget.reserved:
                failures.append(f"case {i}: {outcome}: reservation left open "
                                f"{d.budget.reserved}")
    assert not failures, f"{len(failures)} of {CASES} broke a promise:\n" + "\n".join(failures[:20])
    # The garbage reached past the transport: some calls got as far as a typed parse error
    # or an answer, not only connection failures.
    assert len(outcomes) >= 3, outcomes
