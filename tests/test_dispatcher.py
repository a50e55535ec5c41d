"""The Dispatcher's own behaviour, over loopback against the OpenAI emulator: sync calls
from threads and from inside a running loop, async calls from a foreign loop, streams
(drained, broken off, async), one ledger record per attempt, and no leaked key."""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from llmdispatch_nb import Dispatcher, Endpoint, Secret, TextDelta, UsageUpdate
from llmdispatch_nb.errors import (
    AuthenticationError,
    ConnectError,
    LLMDispatchError,
    VendorTimeoutError,
)
from llmdispatch_nb.ledger import MemoryLedger
from llmdispatch_nb.resilience import RetryPolicy
from llmdispatch_nb.sim import SimServer, serve
from tests.conftest import CANARY_KEY, assert_no_canary

TARGET = "openai:gpt-4o-mini"


@pytest.fixture
def d(openai_sim: SimServer) -> Dispatcher:
    openai_sim.emulators["openai"].reset()
    ep = Endpoint("openai", "openai", openai_sim.base_url("openai"), key=Secret(CANARY_KEY),
                  simulated=True)
    # No retries here: these tests are about one exchange; retries have their own tests.
    disp = Dispatcher([ep], dotenv=False, ledger=MemoryLedger(), retry=RetryPolicy.none(),
                      timeout=httpx.Timeout(2.0, connect=2.0))
    yield disp
    disp.close()


def test_send_returns_text_usage_cost_and_timing(d: Dispatcher) -> None:
    r = d.send("Name three rivers.", TARGET, max_tokens=50, temperature=0)
    assert r.text and r.vendor == "openai" and r.model.startswith("gpt-4o-mini")
    assert r.usage.output_tokens > 0 and r.usage.source == "reported"
    assert r.cost.usd is not None and r.cost.usd > 0 and r.cost.source == "genai-prices"
    assert r.latency_s > 0 and r.simulated and r.call_id
    assert [a.status for a in r.attempts] == ["ok"]


def test_sync_calls_from_many_threads_at_once(d: Dispatcher, openai_sim: SimServer) -> None:
    with ThreadPoolExecutor(8) as pool:
        texts = list(pool.map(lambda i: d.send(f"question {i}", TARGET).text, range(24)))
    assert len(texts) == 24 and all(texts)
    assert openai_sim.emulators["openai"].count == 24


def test_sync_call_inside_a_running_event_loop_does_not_deadlock(d: Dispatcher) -> None:
    # What a Jupyter cell does: the kernel's loop is running while the cell calls send().
    async def cell() -> str:
        return d.send("from inside a running loop", TARGET).text

    assert asyncio.run(cell())


def test_async_calls_from_a_foreign_loop(d: Dispatcher) -> None:
    async def main() -> list[str]:
        rs = await asyncio.gather(*(d.asend(f"q{i}", TARGET) for i in range(10)))
        return [r.text for r in rs]

    assert all(asyncio.run(main()))


def test_sync_call_from_the_dispatcher_loop_is_refused(d: Dispatcher) -> None:
    async def inside() -> None:
        d.send("hi", TARGET)

    with pytest.raises(RuntimeError, match="asend"):
        d._loop.run(inside())


def test_stream_yields_text_then_usage_and_a_response(d: Dispatcher) -> None:
    s = d.stream("Tell me a story.", TARGET, max_tokens=40)
    events = list(s)
    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert len(deltas) > 3
    assert any(isinstance(e, UsageUpdate) for e in events)
    r = s.response
    assert r is not None and r.text == "".join(e.text for e in deltas) == s.text
    assert r.ttft_s is not None and 0 < r.ttft_s <= r.latency_s
    assert r.usage.source == "reported" and r.usage.output_tokens == len(deltas)
    assert r.finish_reason == "length"


def test_breaking_out_of_a_stream_cancels_the_call(d: Dispatcher) -> None:
    s = d.stream("A long answer please.", TARGET)
    for _ in s:
        break
    assert s._future is not None
    # The call is cancelled, not left running; a fresh call still works.
    assert d.send("still alive?", TARGET).text


def test_async_stream_from_a_foreign_loop(d: Dispatcher) -> None:
    async def main() -> tuple[str, str]:
        s = d.astream("hello", TARGET)
        parts = [t async for t in s.text_deltas()]
        assert s.response is not None
        return "".join(parts), s.response.text

    joined, full = asyncio.run(main())
    assert joined == full and joined


def test_every_attempt_lands_in_the_ledger(d: Dispatcher, openai_sim: SimServer) -> None:
    emu = openai_sim.emulators["openai"]
    emu.faults.script("500")
    with pytest.raises(LLMDispatchError):
        d.send("fails once", TARGET)
    d.send("then works", TARGET)
    recs = d.ledger.records
    assert [r.status for r in recs] == ["error", "ok"]
    assert recs[0].http_status == 500 and recs[0].error_class == "ServerError"
    assert len(recs) == emu.count


def test_a_retried_call_records_each_attempt(openai_sim: SimServer) -> None:
    emu = openai_sim.emulators["openai"]
    emu.reset()
    emu.faults.script("500", "503")
    ep = Endpoint("openai", "openai", openai_sim.base_url("openai"), key=Secret("k"))
    with Dispatcher([ep], dotenv=False, ledger=MemoryLedger(),
                    retry=RetryPolicy(base_s=0.01, max_backoff_s=0.02)) as disp:
        r = disp.send("retry me", TARGET)
        recs = disp.ledger.records
    assert [(x.status, x.retried, x.attempt) for x in recs] == [
        ("error", False, 1), ("error", True, 2), ("ok", True, 3)]
    assert {x.call_id for x in recs} == {r.call_id}
    assert [a.status for a in r.attempts] == ["error", "error", "ok"]
    assert emu.count == 3
    assert_no_canary(*[repr(r) for r in recs])


def test_hang_becomes_a_timeout_not_a_hang(d: Dispatcher, openai_sim: SimServer) -> None:
    openai_sim.emulators["openai"].faults.script("hang", "hang")
    with pytest.raises(VendorTimeoutError, match="timed out"):
        d.send("anyone there?", TARGET)
    with pytest.raises(VendorTimeoutError):
        list(d.stream("anyone there?", TARGET))


def test_a_closed_port_is_a_connect_error() -> None:
    with Dispatcher([Endpoint("openai", "openai", "http://127.0.0.1:9/v1", key=Secret("k"))],
                    dotenv=False, ledger=MemoryLedger()) as d:
        with pytest.raises(ConnectError, match="could not connect"):
            d.send("hi", TARGET)
        assert d.ledger.records[0].status == "error"


def test_the_key_never_leaks_into_errors_reprs_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with serve(["openai"], time_scale=0, api_key="the-right-key") as sim:
        ep = Endpoint("openai", "openai", sim.base_url("openai"), key=Secret(CANARY_KEY))
        with Dispatcher([ep], dotenv=False, ledger=MemoryLedger()) as d:
            with pytest.raises(AuthenticationError) as e:
                d.send("hi", TARGET)
            with pytest.raises(AuthenticationError) as e2:
                list(d.stream("hi", TARGET))
            texts = [str(e.value), repr(e.value), e.value.body_excerpt, str(e2.value), repr(d),
                     repr(d.endpoints), *[repr(r) for r in d.ledger.records], caplog.text]
    assert_no_canary(*texts)


def test_close_is_idempotent_and_threads_end(openai_sim: SimServer) -> None:
    ep = Endpoint("openai", "openai", openai_sim.base_url("openai"), key=Secret("k"))
    before = {t.name for t in threading.enumerate()}
    d = Dispatcher([ep], dotenv=False, ledger=MemoryLedger())
    d.send("hi", TARGET)
    d.close()
    d.close()
    after = {t.name for t in threading.enumerate() if t.is_alive()}
    assert "llmdispatch-loop" not in after - before


def test_an_environment_proxy_is_not_used_for_loopback(openai_sim: SimServer,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # A proxy that answers nothing: loopback calls must go direct, not through it.
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    ep = Endpoint("openai", "openai", openai_sim.base_url("openai"), key=Secret("k"))
    with Dispatcher([ep], dotenv=False, ledger=MemoryLedger(), retry=RetryPolicy.none()) as d:
        assert d.send("through no proxy", TARGET).text
