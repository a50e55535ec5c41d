"""Connections per vendor host in small pools (`_pool.ShardedTransport`), over loopback
against the OpenAI emulator: calls spread over shards only when many are in flight, every
slot comes back (answers, streams, errors, streams broken off), and remote hosts get a
transport of their own only when no proxy is set."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from llmdispatch_nb import Dispatcher, Endpoint, Secret
from llmdispatch_nb._clients import new_client
from llmdispatch_nb._pool import ShardedTransport
from llmdispatch_nb.errors import LLMDispatchError
from llmdispatch_nb.ledger import MemoryLedger
from llmdispatch_nb.resilience import RetryPolicy
from llmdispatch_nb.sim import SimServer
from tests.conftest import CANARY_KEY

TARGET = "openai:gpt-4o-mini"


def make(sim: SimServer) -> Dispatcher:
    ep = Endpoint("openai", "openai", sim.base_url("openai"), key=Secret(CANARY_KEY),
                  simulated=True)
    return Dispatcher([ep], dotenv=False, ledger=MemoryLedger(), retry=RetryPolicy.none(),
                      timeout=httpx.Timeout(5.0, connect=5.0))


def transport_of(d: Dispatcher, url: str) -> ShardedTransport:
    t = d._client_for_loop()._transport_for_url(httpx.URL(url))
    assert isinstance(t, ShardedTransport)
    return t


def test_one_call_at_a_time_keeps_to_one_shard(openai_sim: SimServer) -> None:
    async def main() -> tuple[int, ShardedTransport]:
        d = make(openai_sim)
        for i in range(12):
            assert (await d.asend(f"one at a time {i}", TARGET)).text
            async for _ in d.astream(f"streamed, one at a time {i}", TARGET, max_tokens=5):
                pass
        t = transport_of(d, openai_sim.base_url("openai"))
        shards = len(t._shards)
        await d.aclose()
        return shards, t

    shards, t = asyncio.run(main())
    assert shards == 1
    assert t._shards == []  # closed with the dispatcher


def test_many_calls_at_once_spread_over_small_pools_and_all_slots_come_back(
        openai_sim: SimServer) -> None:
    openai_sim.emulators["openai"].reset()
    openai_sim.emulators["openai"].faults.script("500", "500", "500")

    async def main() -> tuple[int, list[int], int]:
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
        # One more stream, broken off after its first piece: its slot comes back too.
        s = d.astream("broken off", TARGET, max_tokens=200)
        async for _ in s:
            break
        await asyncio.sleep(0.05)
        shards, in_flight = len(t._shards), [sh.in_flight for sh in t._shards]
        await d.aclose()
        return shards, in_flight, sum(1 for x in out if x == "ServerError")

    shards, in_flight, failed = asyncio.run(main())
    assert failed == 3
    assert shards > 8 and in_flight == [0] * shards


def test_a_remote_host_has_its_own_transport_unless_a_proxy_is_set(
        monkeypatch: pytest.MonkeyPatch) -> None:
    eps = [Endpoint("openai", "openai", "https://api.openai.com/v1", key=Secret(CANARY_KEY)),
           Endpoint("local", "compat", "http://127.0.0.1:11434/v1")]
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                 "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    direct = new_client(eps, httpx.Timeout(5.0))
    remote = direct._transport_for_url(httpx.URL("https://api.openai.com/v1/chat/completions"))
    local = direct._transport_for_url(httpx.URL("http://127.0.0.1:11434/v1/chat/completions"))
    assert isinstance(remote, ShardedTransport) and isinstance(local, ShardedTransport)
    assert remote is not local

    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    proxied = new_client(eps, httpx.Timeout(5.0))
    remote = proxied._transport_for_url(httpx.URL("https://api.openai.com/v1/chat/completions"))
    local = proxied._transport_for_url(httpx.URL("http://127.0.0.1:11434/v1/chat/completions"))
    assert not isinstance(remote, ShardedTransport)  # httpx's own, through the proxy
    assert isinstance(local, ShardedTransport)  # loopback never through a proxy
