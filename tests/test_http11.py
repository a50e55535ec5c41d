"""The HTTP/1.1 transport (`_aiohttp.py`: aiohttp under httpx) over loopback sockets:
against the OpenAI emulator for the calls the dispatcher makes, and against a server that
writes whatever bytes a test scripts, for each way a response can be framed, broken or
withheld. Every failure must be one of httpx's own errors (so `_transport.py` makes it
ours), quickly, with the connection's slot back in the pool.

These tests were written for the hand-written transport this one replaced and kept as
behaviour: what a broken response raises is checked by its type, not by our old parser's
wording, and connections are counted at the server where a test could."""

from __future__ import annotations

import asyncio
import datetime
import gzip
import ipaddress
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
import uvicorn

from llmdispatch_nb import Dispatcher, Endpoint, Secret
from llmdispatch_nb._aiohttp import Http11Transport
from llmdispatch_nb._clients import new_client
from llmdispatch_nb.errors import LLMDispatchError, ProtocolError
from llmdispatch_nb.ledger import MemoryLedger
from llmdispatch_nb.resilience import RetryPolicy
from llmdispatch_nb.sim import SimServer
from tests.conftest import CANARY_KEY

TARGET = "openai:gpt-4o-mini"
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def make(sim: SimServer) -> Dispatcher:
    ep = Endpoint("openai", "openai", sim.base_url("openai"), key=Secret(CANARY_KEY),
                  simulated=True)
    return Dispatcher([ep], dotenv=False, ledger=MemoryLedger(), retry=RetryPolicy.none(),
                      timeout=httpx.Timeout(5.0, connect=5.0))


def transport_of(d: Dispatcher, url: str) -> Http11Transport:
    t = d._client_for_loop()._transport_for_url(httpx.URL(url))
    assert isinstance(t, Http11Transport)
    return t


def idle_count(t: Http11Transport) -> int:
    return t.open_count - t.in_use_count


# -- against the emulator ------------------------------------------------------------------------


def test_one_call_at_a_time_keeps_to_one_connection(openai_sim: SimServer) -> None:
    async def main() -> tuple[int, int, Http11Transport]:
        d = make(openai_sim)
        for i in range(12):
            assert (await d.asend(f"one at a time {i}", TARGET)).text
            async for _ in d.astream(f"streamed, one at a time {i}", TARGET, max_tokens=5):
                pass
        t = transport_of(d, openai_sim.base_url("openai"))
        opened = t.open_count
        idle = idle_count(t)
        await d.aclose()
        return opened, idle, t

    opened, idle, t = asyncio.run(main())
    assert (opened, idle) == (1, 1)
    assert t.open_count == 0 and t.closed  # closed with the dispatcher


def test_an_idle_connection_is_let_go_before_a_uvicorn_server_closes_it() -> None:
    # At the same idle limit on both sides a call could take a connection whose close is
    # already on its way; ours must expire first.
    assert Http11Transport().keepalive_expiry < uvicorn.Config(app=None).timeout_keep_alive

    async def main() -> tuple[int, int]:
        t = Http11Transport(keepalive_expiry=1.0)  # wide enough for a slow machine
        script = Scripted(ok(b"one"), ok(b"two"), ok(b"three"), ok(b"never"))
        async with script as url:
            for pause in (0.0, 0.0, 1.2):
                await asyncio.sleep(pause)
                await get(t, url)
            made = script.connections
            for _ in range(100):  # the expired connection is closed, not kept beside
                if script.open_now == 1:
                    break
                await asyncio.sleep(0.02)
            still_open = script.open_now
        await t.aclose()
        return made, still_open

    # Reused within the limit, replaced after it; the old one closed.
    assert asyncio.run(main()) == (2, 1)


def test_many_calls_at_once_and_every_connection_comes_back(openai_sim: SimServer) -> None:
    openai_sim.emulators["openai"].reset()
    openai_sim.emulators["openai"].faults.script("500", "500", "500")

    async def main() -> tuple[list[str], int, int]:
        d = make(openai_sim)
        t = transport_of(d, openai_sim.base_url("openai"))

        async def one(i: int) -> str:
            try:
                if i % 3 == 0:
                    s = d.astream(f"streamed {i}", TARGET, max_tokens=20)
                    return "".join([piece async for piece in s.text_deltas()])
                return (await d.asend(f"plain {i}", TARGET, max_tokens=20)).text
            except LLMDispatchError as exc:
                return type(exc).__name__

        out = await asyncio.gather(*(one(i) for i in range(40)))
        # One more stream, broken off after its first piece: its connection is closed (the
        # rest of its body cannot be skipped), not handed to the next call.
        s = d.astream("broken off", TARGET, max_tokens=200)
        async for _ in s:
            break
        await asyncio.sleep(0.05)
        opened, idle = t.open_count, idle_count(t)
        await d.aclose()
        return out, opened, idle

    out, opened, idle = asyncio.run(main())
    assert out.count("ServerError") == 3
    assert all(x and x != "ServerError" for x in out if x != "ServerError")
    assert opened > 8 and opened == idle  # nothing in flight, nothing leaked


def test_every_host_takes_this_transport_but_where_a_proxy_applies(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy",
                 "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)

    def transports() -> tuple[httpx.AsyncBaseTransport, ...]:
        client = new_client(httpx.Timeout(5.0))
        return tuple(client._transport_for_url(httpx.URL(url)) for url in (
            "https://api.openai.com/v1/chat/completions",
            "https://api.anthropic.com/v1/messages",
            "http://127.0.0.1:11434/v1/chat/completions"))

    openai, anthropic, local = transports()
    assert isinstance(openai, Http11Transport) and anthropic is openai and local is openai

    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("NO_PROXY", "api.anthropic.com")
    openai, anthropic, local = transports()
    # httpx's own: through the proxy, and straight for NO_PROXY's hosts.
    assert not isinstance(openai, Http11Transport)
    assert not isinstance(anthropic, Http11Transport) and anthropic is not openai
    assert isinstance(local, Http11Transport)  # loopback never through a proxy


def test_demo_calls_reach_the_emulators_with_a_dead_proxy_set(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://proxy.invalid:3128")  # nothing answers there
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with Dispatcher(env={}, dotenv=False, ledger=MemoryLedger(), sim_time_scale=0) as d:
        assert d.send("through no proxy", "openai:gpt-4o-mini").text
        assert "".join(d.stream("nor this", "anthropic:claude-haiku-4-5").text_deltas())


# -- against scripted bytes ------------------------------------------------------------------------


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """(head, body) of one request, its body framed by Content-Length or chunked."""
    head = await reader.readuntil(b"\r\n\r\n")
    lower = head.lower()
    if b"transfer-encoding: chunked" in lower:
        body = b""
        while size := int((await reader.readline()).strip(), 16):
            body += await reader.readexactly(size)
            await reader.readexactly(2)
        await reader.readexactly(2)
        return head, body
    length = 0
    for line in lower.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head, await reader.readexactly(length)


class Scripted:
    """A loopback server answering each request with the next of `replies`: bytes, or a
    handler of its own. It counts connections (and the most open at once) and keeps each
    request it read. A connection is closed once no reply is left."""

    def __init__(self, *replies: bytes | Handler) -> None:
        self.replies = list(replies)
        self.connections = 0
        self.requests: list[tuple[bytes, bytes]] = []
        self.server: asyncio.Server | None = None
        self.handlers: list[asyncio.Task[None]] = []
        self.open_now = self.most_at_once = 0

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for task in self.handlers:
            task.cancel()
        await asyncio.gather(*self.handlers, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open_now += 1
        self.most_at_once = max(self.most_at_once, self.open_now)
        task = asyncio.current_task()
        assert task is not None
        self.handlers.append(task)
        try:
            while self.replies:
                try:
                    self.requests.append(await read_request(reader))
                except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
                    return
                reply = self.replies.pop(0)
                if isinstance(reply, bytes):
                    writer.write(reply)
                    await writer.drain()
                else:  # the connection stays open for the next request, if any comes
                    await reply(reader, writer)
        finally:
            self.open_now -= 1
            writer.close()


def ok(body: bytes, *headers: bytes) -> bytes:
    extra = b"".join(h + b"\r\n" for h in headers)
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


async def get(t: Http11Transport, url: str) -> httpx.Response:
    """One POST through `t`, read whole (a client of its own that leaves `t` open)."""
    client = httpx.AsyncClient(transport=t, timeout=httpx.Timeout(2.0))
    r = await client.post(url, content=b"ping")
    await r.aread()
    return r


def test_each_framing_of_a_body_reads_whole() -> None:
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: yes\r\n\r\n")
    zipped = gzip.compress(b"unzipped by httpx")
    script = Scripted(
        ok(b"plain"),
        chunked,
        b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"after a 100"),
        b"HTTP/1.1 204 No Content\r\n\r\n",
        ok(zipped, b"Content-Encoding: gzip"),
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the server closes",
    )

    async def main() -> list[tuple[int, bytes]]:
        t = Http11Transport()
        async with script as url:
            out = [(r.status_code, r.content) for r in [await get(t, url) for _ in range(6)]]
        await t.aclose()
        return out

    assert asyncio.run(main()) == [
        (200, b"plain"), (200, b"hello world"), (200, b"after a 100"), (204, b""),
        (200, b"unzipped by httpx"), (200, b"until the server closes")]
    assert script.connections == 1  # kept alive through all six
    assert all(body == b"ping" for _, body in script.requests)


def test_a_long_header_is_read_up_to_64_kib() -> None:
    # A gateway's long cookie or policy header; aiohttp alone stops at 8 KiB.
    async def main() -> tuple[bytes, int]:
        t = Http11Transport()
        async with Scripted(ok(b"fine", b"X-Long: " + b"y" * 40_000)) as url:
            r = await get(t, url)
        await t.aclose()
        return r.content, len(r.headers["x-long"])

    assert asyncio.run(main()) == (b"fine", 40_000)


def test_a_streamed_request_body_goes_chunked() -> None:
    script = Scripted(ok(b"got it"))

    async def parts() -> AsyncIterator[bytes]:
        for p in (b"one ", b"", b"two ", b"three"):
            yield p

    async def main() -> bytes:
        t = Http11Transport()
        async with script as url, httpx.AsyncClient(transport=t) as client:
            r = await client.post(url, content=parts())
            return r.content

    assert asyncio.run(main()) == b"got it"
    head, body = script.requests[0]
    assert b"transfer-encoding: chunked" in head.lower() and body == b"one two three"


def test_large_bodies_both_ways_go_through_flow_control() -> None:
    """8 MiB up (the socket's buffer fills: writing waits) and 8 MiB down, in chunks and by
    length (more than the read buffer's high-water mark: reading pauses)."""
    big = bytes(range(256)) * (32 * 1024)

    async def echo_chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(0, len(big), 100_000):
            part = big[i:i + 100_000]
            writer.write(b"%x\r\n%s\r\n" % (len(part), part))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async def main() -> tuple[bytes, bytes, int]:
        t = Http11Transport()
        script = Scripted(ok(big), echo_chunked)
        async with script as url, httpx.AsyncClient(transport=t) as client:
            by_length = (await client.post(url, content=big)).content
            chunked = b""
            async with client.stream("POST", url, content=b"x") as r:
                async for part in r.aiter_raw():
                    chunked += part
                    await asyncio.sleep(0)  # a slow reader
        return by_length, chunked, len(script.requests[0][1])

    by_length, chunked, sent = asyncio.run(main())
    assert by_length == big and chunked == big and sent == len(big)


@pytest.mark.parametrize("reply", [
    b"HTTP/1.1 2OO OK\r\n\r\n",  # a bad status code
    b"SSH-2.0-OpenSSH\r\n\r\n",  # not HTTP at all
    b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",  # a header with no colon
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",  # a bad chunk size
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x2\r\nab\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",  # too long
    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf",  # cut short
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",  # a chunk cut short
    b"",  # closed at once
    b"HTTP/1.1 200 OK\r\nX-Big: " + b"x" * 70_000,  # a head that never ends
])
def test_a_broken_response_is_one_httpx_error(reply: bytes) -> None:
    async def main() -> None:
        t = Http11Transport()
        async with Scripted(reply) as url:
            with pytest.raises(httpx.RemoteProtocolError):
                await get(t, url)
        assert t.open_count == 0  # the broken connection is closed, its slot free
        await t.aclose()

    asyncio.run(main())


@pytest.mark.parametrize("reply, words", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"id\"", "closed mid-response"),
    (b"", "closed before any response"),
])
def test_a_broken_response_through_the_dispatcher_is_a_protocol_error(
        reply: bytes, words: str) -> None:
    async def main() -> tuple[str, list[str | None]]:
        async with Scripted(reply) as url:
            ep = Endpoint("local", "compat", url + "/v1", key=Secret(CANARY_KEY))
            async with Dispatcher([ep], dotenv=False, ledger=MemoryLedger(),
                                  retry=RetryPolicy.none()) as d:
                with pytest.raises(ProtocolError) as info:
                    await d.asend("hi", "local:llama3")
                d.ledger.flush()
                return str(info.value), [r.error_class for r in d.ledger.records]

    message, recorded = asyncio.run(main())
    assert words in message and CANARY_KEY not in message
    assert recorded == ["ProtocolError"]  # the attempt is in the ledger


def test_a_reset_is_a_read_error_and_a_silent_server_a_read_timeout() -> None:
    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nslow")
        await asyncio.sleep(5)

    async def main() -> float:
        t = Http11Transport()
        async with Scripted(reset) as url:
            with pytest.raises(httpx.ReadError, match="reset"):
                await get(t, url)
        async with Scripted(hang) as url, httpx.AsyncClient(transport=t) as client:
            loop = asyncio.get_running_loop()
            start = loop.time()
            with pytest.raises(httpx.ReadTimeout):
                r = await client.post(url, content=b"x", timeout=httpx.Timeout(0.3))
                await r.aread()
            took = loop.time() - start
        assert t.open_count == 0
        return took

    assert asyncio.run(main()) < 2.0


def test_the_read_timeout_counts_silence_not_the_whole_answer() -> None:
    async def dribble(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(8):  # 0.8 s in all, never 0.3 s without a byte
            await asyncio.sleep(0.1)
            writer.write(b"1\r\n.\r\n")
        await asyncio.sleep(1.0)  # then silence
        writer.write(b"0\r\n\r\n")

    async def main() -> bytes:
        t = Http11Transport()
        got = b""
        async with Scripted(dribble) as url, httpx.AsyncClient(transport=t) as client:
            with pytest.raises(httpx.ReadTimeout):
                async with client.stream("POST", url, content=b"x",
                                         timeout=httpx.Timeout(0.3)) as r:
                    async for part in r.aiter_raw():
                        got += part
        return got

    assert asyncio.run(main()) == b"." * 8


def test_a_connection_the_server_closes_is_not_reused() -> None:
    async def main() -> tuple[int, int]:
        t = Http11Transport()
        script = Scripted(ok(b"one", b"Connection: close"), ok(b"two"))
        async with script as url:
            assert (await get(t, url)).content == b"one"
            assert (await get(t, url)).content == b"two"
        first = script.connections
        # A keep-alive connection the server closes while idle leaves the pool at once.
        script = Scripted(ok(b"three"))
        async with script as url:
            assert (await get(t, url)).content == b"three"
            for _ in range(100):
                if t.open_count == 0:
                    break
                await asyncio.sleep(0.01)
        opened = t.open_count
        await t.aclose()
        return first, opened

    assert asyncio.run(main()) == (2, 0)


def test_the_connection_cap_queues_calls_and_the_pool_timeout_ends_a_wait() -> None:
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(0.2)
        writer.write(ok(b"slow"))
        await writer.drain()

    async def main() -> tuple[list[bytes], int, float]:
        t = Http11Transport(max_connections=2)
        script = Scripted(*[slow] * 8)  # six calls, then two that hold both connections
        async with script as url, httpx.AsyncClient(transport=t) as client:
            async def one() -> bytes:
                r = await client.post(url, content=b"x")
                return r.content

            answers = await asyncio.gather(*(one() for _ in range(6)))
            most = script.most_at_once
            # Two calls hold both connections; a third may wait 0.05 s for one.
            held = [asyncio.create_task(one()) for _ in range(2)]
            await asyncio.sleep(0.05)
            loop = asyncio.get_running_loop()
            start = loop.time()
            # aiohttp counts the wait for a connection with connecting: a ConnectTimeout.
            with pytest.raises(httpx.TimeoutException):
                await client.post(url, content=b"x", timeout=httpx.Timeout(0.05))
            waited = loop.time() - start
            await asyncio.gather(*held)
        return answers, most, waited

    answers, most, waited = asyncio.run(main())
    assert answers == [b"slow"] * 6 and most == 2  # six calls, never more than two at once
    assert waited < 1.0


def test_a_call_cancelled_mid_body_frees_its_connection() -> None:
    async def dribble(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nstart")
        await asyncio.sleep(5)

    async def main() -> int:
        t = Http11Transport()
        async with Scripted(dribble) as url, httpx.AsyncClient(transport=t) as client:
            async def call() -> None:
                async with client.stream("POST", url, content=b"x") as r:
                    async for _ in r.aiter_raw():
                        pass

            task = asyncio.create_task(call())
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return t.open_count

    assert asyncio.run(main()) == 0


@pytest.mark.parametrize("name, value", [
    (b"x-evil", b"a\r\nInjected: yes"), (b"x-evil", b"a\nInjected: yes"),
    (b"x-evil", b"a\rb"), (b"x-evil", b"a\0b"), (b"x-evil\r\nInjected", b"yes"),
])
def test_a_header_with_a_line_break_is_refused_before_sending(name: bytes, value: bytes) -> None:
    async def main() -> int:
        script = Scripted(ok(b"never"))
        t = Http11Transport()
        async with script as url:
            request = httpx.Request("POST", url, content=b"x", headers={"X-Ok": "fine"})
            request.headers._list.append((name, name.lower(), value))
            with pytest.raises(httpx.LocalProtocolError):
                await t.handle_async_request(request)
        await t.aclose()
        return len(script.requests)

    assert asyncio.run(main()) == 0


def self_signed(tmp: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_tls_verifies_the_server_and_carries_calls(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    trusting = ssl.create_default_context(cafile=str(cert))

    async def main() -> tuple[bytes, int]:
        script = Scripted(ok(b"over tls"), ok(b"again"), ok(b"never"))
        script_server = await asyncio.start_server(script._serve, "127.0.0.1", 0, ssl=server_ctx)
        port = script_server.sockets[0].getsockname()[1]
        try:
            t = Http11Transport(ssl_context=trusting)
            async with httpx.AsyncClient(transport=t) as client:
                first = (await client.post(f"https://localhost:{port}/", content=b"x")).content
                second = (await client.post(f"https://127.0.0.1:{port}/", content=b"x")).content
                assert first + second == b"over tlsagain"
            # A client that does not trust the certificate refuses the server.
            async with httpx.AsyncClient(transport=Http11Transport(
                    ssl_context=ssl.create_default_context())) as client:
                with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                    await client.post(f"https://localhost:{port}/", content=b"x")
            return first, script.connections
        finally:
            script_server.close()

    first, connections = asyncio.run(main())
    # One connection per origin (localhost, 127.0.0.1); the refused handshake never
    # reached the server's handler.
    assert first == b"over tls" and connections == 2


def test_connecting_nowhere_is_a_connect_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: refused

    async def main() -> None:
        t = Http11Transport()
        with pytest.raises(httpx.ConnectError):
            await get(t, f"http://127.0.0.1:{port}/")
        assert t.open_count == 0
        await t.aclose()

    asyncio.run(main())
