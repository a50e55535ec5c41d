"""Caps on what a response may bring (issue 14, item 7), through the public API against a
tiny misbehaving server of this file's own on loopback: a gzip bomb, an endless stream, a
line that never ends, a body with no length that never ends. Each must end at once in a
`ResponseTooLargeError` with the text so far kept and the attempt in the ledger, while the
memory the call took stays near the cap (tracemalloc's peak, a loose bound), not near what
the server had on offer. The caps are scaled down through the environment so the tests are
quick; the server's offers stay far above them and are bounded, so a missing cap fails a
test (a timeout, or a peak far over the bound) instead of hanging it."""

from __future__ import annotations

import asyncio
import gzip
import json
import tracemalloc
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from llmdispatch_nb import Dispatcher, Endpoint, Secret
from llmdispatch_nb._clients import new_client
from llmdispatch_nb._sse import SSEDecoder, iter_sse
from llmdispatch_nb._transport import MIB, CapExceeded, ResponseCaps, response_caps
from llmdispatch_nb.errors import ConfigurationError, ResponseTooLargeError
from llmdispatch_nb.ledger import MemoryLedger
from tests.conftest import CANARY_KEY

Writer = Callable[[asyncio.StreamWriter], Awaitable[None]]
TARGET = "local:llama3"


class Misbehaving:
    """A loopback server that reads each request and answers with `write(writer)`; it counts
    the requests (a cap is not retryable: one request per call)."""

    def __init__(self, write: Writer) -> None:
        self.write = write
        self.requests = 0
        self.server: asyncio.Server | None = None
        self.tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.append(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next((int(line.split(b":")[1]) for line in head.lower().split(b"\r\n")
                           if line.startswith(b"content-length:")), 0)
            await reader.readexactly(length)
            self.requests += 1
            await self.write(writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client hung up on us, as it should
        except asyncio.CancelledError:
            pass  # the test is over (asyncio logs a handler that ends cancelled)
        finally:
            writer.close()


def chunk(text: str) -> bytes:
    """One OpenAI-style stream event carrying `text`."""
    body = {"id": "c1", "object": "chat.completion.chunk", "model": "llama3",
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def answer(text: str) -> bytes:
    return json.dumps({"id": "c1", "object": "chat.completion", "model": "llama3",
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                    "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": 3, "completion_tokens": 2,
                                 "total_tokens": 5}}).encode()


async def drip(writer: asyncio.StreamWriter, piece: bytes, up_to: int) -> None:
    """Write `piece` again and again, `up_to` bytes in all, as fast as the client reads."""
    sent = 0
    while sent < up_to:
        writer.write(piece)
        await writer.drain()
        sent += len(piece)
    await asyncio.sleep(3600)  # then hang: only a cap (or the timeout) ends the call


def call(write: Writer, *, stream: bool) -> tuple[BaseException | str, list[Any], int, int]:
    """One call through a Dispatcher: (its error or its text, its ledger records, the
    requests the server saw, tracemalloc's peak in bytes during the call)."""
    async def main() -> tuple[BaseException | str, list[Any], int, int]:
        server = Misbehaving(write)
        async with server as url:
            ep = Endpoint("local", "compat", url, key=Secret(CANARY_KEY))
            async with Dispatcher([ep], dotenv=False, ledger=MemoryLedger(), cache=False,
                                  timeout=httpx.Timeout(60.0, connect=5.0)) as d:
                tracemalloc.start()
                try:
                    if stream:
                        s = d.astream("hi", TARGET)
                        async for _ in s:
                            pass
                        out: BaseException | str = s.text
                    else:
                        out = (await d.asend("hi", TARGET)).text
                except Exception as exc:
                    out = exc
                finally:
                    peak = tracemalloc.get_traced_memory()[1]
                    tracemalloc.stop()
                d.ledger.flush()
                return out, list(d.ledger.records), server.requests, peak

    return asyncio.run(main())


def bomb(decoded: int) -> bytes:
    """`decoded` zero bytes gzipped (about a thousandth of that on the wire)."""
    z = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    block = bytes(MIB)
    return b"".join([*(z.compress(block) for _ in range(decoded // MIB)), z.flush()])


def plain(body: bytes, *headers: bytes) -> Writer:
    async def write(writer: asyncio.StreamWriter) -> None:
        extra = b"".join(h + b"\r\n" for h in headers)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n%s\r\n%s" % (len(body), extra, body))
        await writer.drain()
        await asyncio.sleep(3600)
    return write


def assert_capped(out: BaseException | str, records: list[Any], requests: int, peak: int,
                  setting: str, bound_mb: float) -> ResponseTooLargeError:
    assert isinstance(out, ResponseTooLargeError), out
    assert setting in str(out) and out.setting == setting and not out.retryable
    assert CANARY_KEY not in str(out)
    assert requests == 1  # not retried: the same request would bring the same answer
    assert [r.error_class for r in records] == ["ResponseTooLargeError"]  # in the ledger
    assert peak < bound_mb * MIB, f"peak {peak / MIB:.1f} MiB"
    return out


def test_a_gzip_bomb_ends_at_the_body_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMDISPATCH_MAX_BODY_MB", "2")
    wire = bomb(128 * MIB)  # 128 MiB once decoded, about 125 KB sent
    out, records, requests, peak = call(plain(wire, b"Content-Encoding: gzip"), stream=False)
    assert_capped(out, records, requests, peak, "LLMDISPATCH_MAX_BODY_MB", 24)


def test_a_bomb_inside_a_bomb_is_decoded_a_piece_at_a_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMDISPATCH_MAX_BODY_MB", "1")
    inner = bomb(64 * MIB)
    wire = gzip.compress(inner, 9)  # "gzip, gzip": a thousand times a thousand
    out, records, requests, peak = call(plain(wire, b"Content-Encoding: gzip, gzip"),
                                        stream=False)
    assert_capped(out, records, requests, peak, "LLMDISPATCH_MAX_BODY_MB", 24)


@pytest.mark.parametrize("coding, pack", [
    ("gzip", lambda b: gzip.compress(b)),
    ("deflate", zlib.compress),  # zlib-wrapped, as RFC 9110 says
    ("deflate", lambda b: zlib.compress(b)[2:-4]),  # raw deflate, as some servers send
    ("gzip, deflate", lambda b: zlib.compress(gzip.compress(b))),
])
def test_compressed_answers_under_the_cap_still_read(coding: str, pack: Callable[[bytes], bytes],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMDISPATCH_MAX_BODY_MB", "1")
    text = "a compressed answer " * 100
    out, records, _, _ = call(
        plain(pack(answer(text)), b"Content-Encoding: " + coding.encode()), stream=False)
    assert out == text
    assert [r.status for r in records] == ["ok"]


def test_a_request_may_carry_a_cap_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    # A batch's result file holds many answers: its request may allow more than one answer.
    monkeypatch.setenv("LLMDISPATCH_MAX_BODY_MB", "0.01")
    body = b"x" * 50_000

    async def main() -> tuple[int, str]:
        async with Misbehaving(plain(body)) as url, Misbehaving(plain(body)) as url2:
            client = new_client(httpx.Timeout(5.0))
            try:
                big = httpx.Request("GET", url, extensions={"llmdispatch_max_body": 100_000})
                got = len((await client.send(big)).content)
                with pytest.raises(CapExceeded) as info:
                    await client.send(httpx.Request("GET", url2))
                return got, str(info.value)
            finally:
                await client.aclose()

    got, refused = asyncio.run(main())
    assert got == 50_000 and "LLMDISPATCH_MAX_BODY_MB" in refused


def test_a_body_with_no_length_that_never_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMDISPATCH_MAX_BODY_MB", "2")

    async def write(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     b"Connection: close\r\n\r\n{\"choices\": [")
        await drip(writer, b"{}, " * 16_384, 256 * MIB)

    out, records, requests, peak = call(write, stream=False)
    assert_capped(out, records, requests, peak, "LLMDISPATCH_MAX_BODY_MB", 24)


def sse_head(writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n")


def chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def test_an_endless_stream_ends_at_the_stream_cap_with_its_text(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMDISPATCH_MAX_STREAM_MB", "2")

    async def write(writer: asyncio.StreamWriter) -> None:
        sse_head(writer)
        await drip(writer, chunked(chunk("river ") * 64), 200 * MIB)  # "a 200 MB stream"

    out, records, requests, peak = call(write, stream=True)
    err = assert_capped(out, records, requests, peak, "LLMDISPATCH_MAX_STREAM_MB", 48)
    assert err.partial_text.startswith("river river") and "streamed answer" in str(err)
    assert records[0].response == err.partial_text  # the text so far, in the ledger too


def test_a_line_that_never_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMDISPATCH_MAX_SSE_EVENT_MB", "0.25")

    async def write(writer: asyncio.StreamWriter) -> None:
        sse_head(writer)
        writer.write(chunked(chunk("before the long line")))
        writer.write(chunked(b"data: {\"choices\": [{\"delta\": {\"content\": \""))
        await drip(writer, chunked(b"x" * 16_384), 64 * MIB)

    out, records, requests, peak = call(write, stream=True)
    err = assert_capped(out, records, requests, peak, "LLMDISPATCH_MAX_SSE_EVENT_MB", 24)
    assert err.partial_text == "before the long line" and "one line" in str(err)


def test_an_event_of_endless_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMDISPATCH_MAX_SSE_EVENT_MB", "0.25")

    async def write(writer: asyncio.StreamWriter) -> None:
        sse_head(writer)
        await drip(writer, chunked(b"data: more\n" * 1000), 64 * MIB)

    out, records, requests, peak = call(write, stream=True)
    err = assert_capped(out, records, requests, peak, "LLMDISPATCH_MAX_SSE_EVENT_MB", 24)
    assert err.partial_text == "" and "one event" in str(err)


def test_the_sse_decoder_caps_a_line_and_an_event_alone() -> None:
    caps = ResponseCaps(body=MIB, stream=MIB, sse_event=100)
    events = list(SSEDecoder(caps).feed(b"data: " + b"x" * 90 + b"\n\n"))
    assert events[0].data == "x" * 90
    with pytest.raises(CapExceeded, match="one line"):
        list(SSEDecoder(caps).feed(b"data: " + b"x" * 200))
    with pytest.raises(CapExceeded, match="one event"):
        list(SSEDecoder(caps).feed(b"data: 12345\n" * 30))
    assert iter_sse([b"data: ok\n\n"])[0].data == "ok"  # the defaults are far above


@pytest.mark.parametrize("value", ["0", "-1", "lots", "nan", "inf"])
def test_a_bad_cap_setting_is_one_configuration_error(value: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMDISPATCH_MAX_STREAM_MB", value)
    with pytest.raises(ConfigurationError, match="LLMDISPATCH_MAX_STREAM_MB"):
        response_caps()


def test_the_default_caps() -> None:
    caps = response_caps()
    assert (caps.body, caps.stream, caps.sse_event) == (128 * MIB, 128 * MIB, 16 * MIB)
