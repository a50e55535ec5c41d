"""Async calls run on the caller's own event loop (no hop to the dispatcher's thread), with
a client per loop that closes when that loop ends; the shared limiter serves calls on
several loops and threads at once. Over loopback against the OpenAI emulator."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from itertools import pairwise

import httpx
import pytest

from llmdispatch_nb import CallRecord, Dispatcher, Endpoint, Secret, TextDelta
from llmdispatch_nb.errors import LLMDispatchError
from llmdispatch_nb.ledger import MemoryLedger
from llmdispatch_nb.resilience import Limit, RetryPolicy
from llmdispatch_nb.sim import SimServer
from tests.conftest import CANARY_KEY

TARGET = "openai:gpt-4o-mini"


def make(sim: SimServer, **kw: object) -> Dispatcher:
    ep = Endpoint("openai", "openai", sim.base_url("openai"), key=Secret(CANARY_KEY),
                  simulated=True)
    return Dispatcher([ep], dotenv=False, ledger=MemoryLedger(), retry=RetryPolicy.none(),
                      timeout=httpx.Timeout(5.0, connect=5.0), **kw)  # type: ignore[arg-type]


@pytest.fixture
def d(openai_sim: SimServer) -> Iterator[Dispatcher]:
    openai_sim.emulators["openai"].reset()
    disp = make(openai_sim)
    yield disp
    disp.close()


def test_async_calls_run_on_the_callers_thread_and_sync_ones_on_the_dispatchers(
        d: Dispatcher) -> None:
    threads: list[str] = []
    d.on_record(lambda rec: threads.append(threading.current_thread().name))

    async def main() -> None:
        await d.asend("async, plain", TARGET)
        async for _ in d.astream("async, streamed", TARGET):
            pass

    asyncio.run(main())
    me = threading.current_thread().name
    assert threads == [me, me]
    assert not any(t.name == "llmdispatch-loop" for t in threading.enumerate()), \
        "async calls alone need no loop thread"
    d.send("sync", TARGET)
    assert threads[-1] == "llmdispatch-loop"


def test_run_and_arun_put_a_whole_fan_out_on_the_dispatchers_loop(d: Dispatcher) -> None:
    threads: list[str] = []
    d.on_record(lambda rec: threads.append(threading.current_thread().name))

    async def fan_out(n: int) -> list[str]:
        rs = await asyncio.gather(*(d.asend(f"call {i}", TARGET) for i in range(n)))
        return [r.text for r in rs]

    assert len(d.run(fan_out(5))) == 5  # from plain sync code: no asyncio.run needed

    async def from_a_cell() -> tuple[list[str], list[str]]:
        # A notebook cell runs inside a loop, where asyncio.run refuses; arun awaits.
        return await d.arun(fan_out(3)), d.run(fan_out(2))

    three, two = asyncio.run(from_a_cell())
    assert len(three) == 3 and len(two) == 2
    assert threads == ["llmdispatch-loop"] * 10  # every call on the dispatcher's loop

    async def inside() -> None:
        d.run(fan_out(1))

    with pytest.raises(RuntimeError, match=r"use `await dispatcher\.asend"):
        d.run(inside())  # a sync run from the dispatcher's own loop would deadlock


def test_the_callers_client_closes_when_its_loop_ends(d: Dispatcher) -> None:
    seen: list[httpx.AsyncClient] = []

    async def main() -> str:
        r = await d.asend("first loop", TARGET)
        seen.append(d._client_for_loop())
        return r.text

    assert asyncio.run(main())
    assert seen[0].is_closed and len(d._clients) == 0
    # A second asyncio.run gets a fresh client; the dispatcher works on, undisturbed.
    assert asyncio.run(main()) and seen[1] is not seen[0] and seen[1].is_closed


def test_async_with_closes_the_dispatcher_and_its_connections(openai_sim: SimServer) -> None:
    async def main() -> tuple[httpx.AsyncClient, str]:
        async with make(openai_sim) as disp:
            text = (await disp.asend("inside async with", TARGET)).text
            client = disp._client_for_loop()
        assert client.is_closed
        return client, text

    _, text = asyncio.run(main())
    assert text


def test_close_from_inside_the_callers_loop_still_closes_its_client(
        openai_sim: SimServer) -> None:
    async def main() -> httpx.AsyncClient:
        disp = make(openai_sim)
        await disp.asend("then a sync close", TARGET)
        client = disp._client_for_loop()
        disp.close()  # sync, inside the running loop: it cannot wait there
        await asyncio.sleep(0.05)
        return client

    assert asyncio.run(main()).is_closed


def test_breaking_out_of_an_async_stream_cancels_the_call(
        d: Dispatcher, openai_sim: SimServer, monkeypatch: pytest.MonkeyPatch) -> None:
    # At the model's real pace, so the answer is still coming when the loop breaks off
    # (with no pacing all 400 tokens can arrive before the break is seen).
    monkeypatch.setattr(openai_sim.emulators["openai"], "time_scale", 1.0)

    async def main() -> str:
        s = d.astream("A long answer, please.", TARGET, max_tokens=400)
        async for ev in s:
            assert isinstance(ev, TextDelta)
            break
        await asyncio.sleep(0.05)
        assert s._future is not None and s._future.cancelled()
        return (await d.asend("still fine?", TARGET)).text

    assert asyncio.run(main())
    statuses = [r.status for r in d.ledger.records]
    assert statuses == ["cancelled", "ok"]


def test_closing_the_dispatcher_under_running_calls_ends_them_with_a_clear_error(
        openai_sim: SimServer, monkeypatch: pytest.MonkeyPatch) -> None:
    # Calls from other threads (a sync send, a sync stream, an async call on another loop)
    # are on the dispatcher's loop when it closes: each must end, recorded, not wait forever.
    monkeypatch.setattr(openai_sim.emulators["openai"], "time_scale", 1.0)
    disp = make(openai_sim)
    ended: dict[str, str] = {}
    started = threading.Barrier(4)

    def plain() -> None:
        started.wait()
        try:
            disp.send("A long answer, please.", TARGET, max_tokens=400)
        except LLMDispatchError as exc:
            ended["send"] = str(exc)

    def streamed() -> None:
        s = disp.stream("A long streamed answer, please.", TARGET, max_tokens=400)
        started.wait()
        try:
            for _ in s:
                pass
        except LLMDispatchError as exc:
            ended["stream"] = str(exc)

    def other_loop() -> None:
        async def main() -> None:
            started.wait()
            try:
                await disp.arun(disp.asend("A long answer, please.", TARGET, max_tokens=400))
            except LLMDispatchError as exc:
                ended["arun"] = str(exc)
        asyncio.run(main())

    threads = [threading.Thread(target=f) for f in (plain, streamed, other_loop)]
    for t in threads:
        t.start()
    emu = openai_sim.emulators["openai"]
    before = len(emu.requests.chat())
    started.wait()
    end = time.monotonic() + 10
    while len(emu.requests.chat()) < before + 3 and time.monotonic() < end:
        time.sleep(0.01)  # until all three are at the emulator (their answers take ~4 s)
    disp.close()
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads), "a call outlived the dispatcher"
    assert ended["send"].startswith("the dispatcher was closed while this call was running")
    assert ended["arun"] == ended["send"]
    assert ended["stream"].startswith("the call behind this stream was cancelled before it "
                                      "ended (its dispatcher was closed")
    assert sorted(r.status for r in disp.ledger.records) == ["cancelled"] * 3


def test_one_limiter_serves_loops_in_several_threads_one_call_at_a_time(
        openai_sim: SimServer) -> None:
    # Each thread runs its own loop; a slot freed on one loop must wake a call waiting on
    # another, or these calls would wait until the deadline.
    disp = make(openai_sim, limits={"openai": Limit(concurrent=1)}, deadline_s=30)
    records: list[CallRecord] = []
    disp.on_record(records.append)
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        async def main() -> None:
            await asyncio.gather(*(disp.asend(f"thread {n} call {i}", TARGET, max_tokens=30)
                                   for i in range(6)))
        try:
            asyncio.run(main())
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    disp.close()
    assert not errors and len(records) == 18 and all(r.status == "ok" for r in records)
    # One at a time: each attempt started after the one before it had finished.
    spans = sorted((r.timestamp, r.timestamp + (r.latency_s or 0)) for r in records)
    assert all(start >= prev_end - 0.002 for (_, prev_end), (start, _) in pairwise(spans))
    assert disp.limiter.snapshot()["openai"]["in_flight"] == 0
    assert disp.limiter.snapshot()["openai"]["waiting"] == 0
