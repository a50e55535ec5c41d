"""Issue 14.11 end to end against the emulators' injected faults: failures a retry
recovers within their call do not open the default breaker; a real outage still does;
every wait of 2 s or more (Retry-After, a circuit to half-open, a client-side limit) is
announced before it ends (stream event, on_wait callback, log line) and cancelling the
call ends it at once with the attempt recorded as cancelled.

No test sits out a long wait: each reads the announcement, then cancels (the only time
bounds are gross stalls, far under the waits' own lengths)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import pytest

from llmdispatch_nb import Waiting
from llmdispatch_nb.errors import CircuitOpenError, ServerError
from llmdispatch_nb.resilience import CircuitBreaker, Limit, RetryPolicy
from llmdispatch_nb.sim import Fault, SimServer
from tests._resilience_support import MINI, dispatcher, fresh, records, start

FAST = RetryPolicy(base_s=0.01, jitter=0)


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    with start() as s:
        yield s


@pytest.fixture(autouse=True)
def _fresh(sim: SimServer) -> None:
    fresh(sim)


def first_wait(stream: object) -> tuple[Waiting, float]:
    """The stream's first Waiting event and when it came; then the call is cancelled."""
    t0 = time.monotonic()
    for ev in stream:  # type: ignore[attr-defined]
        if isinstance(ev, Waiting):
            took = time.monotonic() - t0
            stream.close()  # type: ignore[attr-defined]
            return ev, took
    raise AssertionError("the call ended without announcing a wait")


def cancelled_record(d: object, when: float = 5.0) -> object:
    """The cancelled attempt's ledger record (the loop records it as the task unwinds)."""
    end = time.monotonic() + when
    while time.monotonic() < end:
        got = [r for r in records(d) if r.status == "cancelled"]  # type: ignore[arg-type]
        if got:
            return got[-1]
        time.sleep(0.02)
    raise AssertionError(f"no cancelled record: {[r.status for r in records(d)]}")  # type: ignore[arg-type]


def test_failures_recovered_within_their_calls_do_not_open_the_default_breaker(
        sim: SimServer) -> None:
    # The case: three 429/503 in five attempts, each recovered by its call's retry.
    # Counted as before, 3 of 5 opened the circuit for 30 s and the next call waited it out.
    sim.emulators["openai"].faults.script(
        Fault("429", retry_after=0.01), None, Fault("503", retry_after=0.01), None,
        Fault("429", retry_after=0.01), None)
    with dispatcher(sim, breaker=CircuitBreaker(), retry=FAST) as d:
        for _ in range(3):
            r = d.send("Hello.", MINI)
            assert [a.status for a in r.attempts] == ["error", "ok"]
        snap = d.breaker.snapshot()[MINI]
        assert snap["state"] == "closed" and snap["failures"] == 0 and snap["recovered"] == 3
        t0 = time.monotonic()
        nxt = d.send("And now?", MINI)
        assert time.monotonic() - t0 < 10  # not the 30 s cool-down (a gross stall only)
        assert [a.status for a in nxt.attempts] == ["ok"]


def test_a_real_outage_still_opens_the_default_breaker(sim: SimServer) -> None:
    emu = sim.emulators["openai"]
    emu.faults.rate(1.0, "503")
    with dispatcher(sim, breaker=CircuitBreaker(), retry=FAST, wait_for_breaker=False) as d:
        for _ in range(2):  # three attempts each, none recovered: all six count
            with pytest.raises(ServerError):
                d.send("Anyone there?", MINI)
        assert d.breaker.state(MINI) == "open"
        assert d.breaker.snapshot()[MINI]["recovered"] == 0
        before = emu.count
        with pytest.raises(CircuitOpenError):
            d.send("Still there?", MINI)
        assert emu.count == before  # refused without sending


def test_a_failure_after_a_recovered_one_still_counts_both_when_unrecovered(
        sim: SimServer) -> None:
    # A breaker of its own with min_calls=2: one call failing twice (no answer) trips it,
    # while the same two failures recovered by a third attempt would not.
    sim.emulators["openai"].faults.script("500", "500", None, "500", "500", "500")
    br = CircuitBreaker(min_calls=2, window=4, cooldown_s=30)
    with dispatcher(sim, breaker=br, retry=FAST) as d:
        d.send("Recovered on the third try.", MINI)
        assert br.state(MINI) == "closed" and br.snapshot()[MINI]["recovered"] == 2
        with pytest.raises(ServerError):
            d.send("Not this time.", MINI, fallbacks=[])
        assert br.state(MINI) == "open"


def test_a_long_retry_after_is_announced_on_the_stream_and_cancel_ends_it(
        sim: SimServer, caplog: pytest.LogCaptureFixture) -> None:
    sim.emulators["openai"].faults.script(Fault("429", retry_after=10))
    with dispatcher(sim) as d, caplog.at_level(logging.INFO, logger="llmdispatch_nb"):
        ev, took = first_wait(d.stream("Hello.", MINI))
        assert (ev.cause, ev.target, ev.seconds) == ("retry", MINI, 10.0)
        assert "Retry-After" in ev.reason and "429" in ev.reason
        assert took < 8  # announced before the wait ends (a gross stall only)
        rec = cancelled_record(d)
        assert "while waiting 10.0 s" in rec.error_message  # type: ignore[attr-defined]
        statuses = [r.status for r in records(d)]
        assert statuses == ["error", "cancelled"]
        assert any("waiting 10 s for openai:gpt-4o-mini" in m for m in caplog.messages)


def test_send_reports_a_wait_to_on_wait_and_then_its_end(sim: SimServer) -> None:
    sim.emulators["openai"].faults.script(Fault("503", retry_after=2.2))
    seen: list[Waiting] = []
    with dispatcher(sim) as d:
        r = d.send("Hello.", MINI, on_wait=seen.append)
        assert r.text
    assert [(w.cause, w.seconds) for w in seen] == [("retry", 2.2), ("retry", 0.0)]
    assert seen[-1].over and "503" in seen[0].reason


def test_a_short_wait_is_not_announced(sim: SimServer) -> None:
    sim.emulators["openai"].faults.script(Fault("429", retry_after=0.2))
    seen: list[Waiting] = []
    with dispatcher(sim) as d:
        d.send("Hello.", MINI, on_wait=seen.append)
    assert seen == []


def test_a_breaker_wait_is_announced_and_cancel_records_it(sim: SimServer) -> None:
    with dispatcher(sim, breaker=CircuitBreaker(cooldown_s=30)) as d:
        d.breaker.trip(MINI, 20)
        ev, _ = first_wait(d.stream("Hello.", MINI))
        assert ev.cause == "breaker" and ev.target == MINI
        assert ev.seconds is not None and 15 < ev.seconds <= 20
        assert "circuit breaker is open" in ev.reason
        rec = cancelled_record(d)
        assert "circuit breaker is open" in rec.error_message  # type: ignore[attr-defined]
        assert sim.emulators["openai"].count == 0  # nothing was sent


def test_a_limiter_wait_is_announced_and_cancel_records_it(sim: SimServer) -> None:
    with dispatcher(sim, limits={MINI: Limit(rpm=1)}) as d:
        d.send("The minute's one request.", MINI)
        ev, _ = first_wait(d.stream("The next one.", MINI))
        assert ev.cause == "limit" and ev.seconds is not None and ev.seconds > 30
        assert "1 requests per minute used" in ev.reason
        rec = cancelled_record(d)
        assert "limit slot" in rec.error_message  # type: ignore[attr-defined]


def test_a_concurrency_wait_is_announced_once_it_lasts(sim: SimServer) -> None:
    # Nobody can say when a concurrency slot frees: it is announced after 2 s of waiting,
    # with no length, and its end is announced when the slot comes.
    sim.emulators["openai"].faults.script(Fault("hang", hang_s=3.0))
    seen: list[Waiting] = []
    with dispatcher(sim, limits={MINI: Limit(concurrent=1)}, retry=RetryPolicy.none()) as d:
        blocker = threading.Thread(target=lambda: _swallow(d), daemon=True)
        blocker.start()
        while sim.emulators["openai"].count == 0:
            time.sleep(0.01)
        r = d.send("Behind the hanging one.", MINI, on_wait=seen.append)
        blocker.join(10)
    assert r.text
    assert [w.cause for w in seen] == ["limit", "limit"]
    assert seen[0].seconds is None and "concurrent" in seen[0].reason and seen[1].over


def _swallow(d: object) -> None:
    try:
        d.send("Hang.", MINI)  # type: ignore[attr-defined]
    except Exception:
        pass


def test_a_submitted_call_can_be_cancelled_during_its_wait(sim: SimServer) -> None:
    sim.emulators["openai"].faults.script(Fault("503", retry_after=10))
    announced = threading.Event()
    with dispatcher(sim) as d:
        fut = d.submit("Hello.", MINI, on_wait=lambda w: announced.set())
        assert announced.wait(8)  # before the 10 s wait ends (a gross stall only)
        assert fut.cancel()
        rec = cancelled_record(d)
        assert "while waiting 10.0 s" in rec.error_message  # type: ignore[attr-defined]
        assert [r.status for r in records(d)] == ["error", "cancelled"]
