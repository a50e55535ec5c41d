"""The circuit breaker end to end: every transition driven by real calls against the
emulators' injected faults, seen at the emulator (a skipped candidate gets no request)
and in the response's trail.

    closed -> open (min_calls failures, or at once on a long Retry-After)
    open -> requests skipped to the fallback, nothing sent
    open -> half_open: one probe -> closed on success / open again on failure
    every candidate open: wait for the soonest half-open within the deadline, or
    CircuitOpenError when it cannot (or when waiting is switched off)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from llmdispatch_nb import Dispatcher, Response
from llmdispatch_nb.errors import (
    AllCandidatesFailedError,
    BadRequestError,
    CircuitOpenError,
    ServerError,
)
from llmdispatch_nb.resilience import CircuitBreaker, RetryPolicy
from llmdispatch_nb.sim import Fault, SimServer
from tests._resilience_support import (
    HAIKU,
    MINI,
    arrivals,
    counts,
    dispatcher,
    fresh,
    records,
    start,
)

NO_RETRY = RetryPolicy.none()


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    with start() as s:
        yield s


@pytest.fixture(autouse=True)
def _fresh(sim: SimServer) -> None:
    fresh(sim)


def breaker(**kw: float) -> CircuitBreaker:
    return CircuitBreaker(cooldown_s=0.3, min_calls=2, window=4, **kw)  # type: ignore[arg-type]


def wait_until_half_open(d: Dispatcher, key: str) -> None:
    end = time.monotonic() + 5
    while d.breaker.state(key) == "open" and time.monotonic() < end:
        time.sleep(0.02)
    assert d.breaker.state(key) == "half_open"


def open_circuit(sim: SimServer, d: Dispatcher, vendor: str, target: str) -> None:
    """Two failing calls: with min_calls=2 and a 50% threshold the circuit opens."""
    sim.emulators[vendor].faults.script("500", "500")
    for _ in range(2):
        try:
            d.send("Fail, please.", target)
        except ServerError:
            pass
    assert d.breaker.state(target) == "open"


def test_closed_opens_after_min_calls_then_skips_without_sending(sim: SimServer) -> None:
    sim.emulators["openai"].faults.script("500", "500")
    with dispatcher(sim, retry=NO_RETRY, breaker=breaker(), fallbacks={MINI: [HAIKU]}) as d:
        first = d.send("One.", MINI)
        assert d.breaker.state(MINI) == "closed"  # one failure, fewer than min_calls
        d.send("Two.", MINI)
        assert d.breaker.state(MINI) == "open"
        third = d.send("Three.", MINI)
    assert first.attempts[0].status == "error"
    assert third.vendor == "anthropic"
    assert third.attempts[0].status == "skipped"
    assert (third.attempts[0].error or "").startswith("circuit open")
    assert counts(sim)["openai"] == 2  # the third call sent openai nothing
    assert counts(sim)["anthropic"] == 3


def test_half_open_lets_one_probe_through_and_closes_on_success(sim: SimServer) -> None:
    with dispatcher(sim, retry=NO_RETRY, breaker=breaker(), fallbacks={MINI: [HAIKU]}) as d:
        open_circuit(sim, d, "openai", MINI)
        wait_until_half_open(d, MINI)
        # The probe is slow enough (~0.4 s) that a second call arrives while it is out.
        sim.emulators["openai"].time_scale = 1.0

        async def both() -> list[Response]:
            probe = asyncio.ensure_future(d.asend("Probe.", MINI, max_tokens=8))
            await asyncio.sleep(0.05)
            other = await d.asend("Meanwhile.", MINI, max_tokens=8)
            return [await probe, other]

        probe, other = asyncio.run(both())
        assert d.breaker.state(MINI) == "closed"
        after = d.send("Closed again.", MINI, max_tokens=8)
    assert probe.vendor == "openai"
    assert other.vendor == "anthropic" and other.attempts[0].status == "skipped"
    assert (other.attempts[0].error or "").startswith("circuit half-open with its one probe")
    assert after.vendor == "openai"
    assert counts(sim)["openai"] == 2 + 1 + 1  # the failures, the probe, the call after


def test_a_failed_probe_opens_the_circuit_again(sim: SimServer) -> None:
    with dispatcher(sim, retry=NO_RETRY, breaker=breaker(), fallbacks={MINI: [HAIKU]}) as d:
        open_circuit(sim, d, "openai", MINI)
        wait_until_half_open(d, MINI)
        sim.emulators["openai"].faults.script("503")
        r = d.send("Probe fails.", MINI)
        assert d.breaker.state(MINI) == "open"
        assert d.breaker.snapshot()[MINI]["trips"] == 2
        skipped = d.send("Still open.", MINI)
    assert r.vendor == "anthropic" and r.attempts[0].error == "OverloadedError"
    assert skipped.attempts[0].status == "skipped"
    assert counts(sim)["openai"] == 3


def test_a_429_with_a_long_retry_after_opens_at_once_for_that_long(sim: SimServer) -> None:
    sim.emulators["openai"].faults.script(Fault("429", retry_after=5.0))
    policy = RetryPolicy(max_attempts=3, max_retry_after_s=0.5)
    with dispatcher(sim, retry=policy, breaker=breaker(long_retry_after_s=0.5),
                    fallbacks={MINI: [HAIKU]}) as d:
        r = d.send("Rate limited for long.", MINI)
        # One failure (min_calls is 2), yet open; for the server's 5 s, not the 0.3 s cool-down.
        assert d.breaker.state(MINI) == "open"
        assert d.breaker.opens_in(MINI) > 3.0
        again = d.send("Skip it.", MINI)
    assert r.vendor == "anthropic" and again.vendor == "anthropic"
    assert again.attempts[0].status == "skipped"
    assert counts(sim)["openai"] == 1


def test_with_every_candidate_open_the_call_waits_for_the_soonest(sim: SimServer) -> None:
    # Openai's circuit is open for 2 s (its Retry-After), anthropic's for the 0.3 s cool-down:
    # the call waits for anthropic to half-open and is served by its probe.
    sim.emulators["openai"].faults.script(Fault("429", retry_after=2.0))
    policy = RetryPolicy(max_attempts=1, max_retry_after_s=0.5)
    with dispatcher(sim, retry=policy, breaker=breaker(long_retry_after_s=0.5),
                    fallbacks={MINI: [HAIKU]}, deadline_s=5.0) as d:
        sim.emulators["anthropic"].faults.script("500", "500")
        with pytest.raises(AllCandidatesFailedError):
            d.send("Both fail.", MINI)  # openai 429 (opens), anthropic 500
        with pytest.raises(ServerError):
            d.send("Anthropic fails again.", HAIKU)
        assert d.breaker.state(MINI) == d.breaker.state(HAIKU) == "open"
        r = d.send("Wait for one.", MINI)
    assert r.vendor == "anthropic"
    assert [(a.vendor, a.status) for a in r.attempts] == [
        ("openai", "skipped"), ("anthropic", "skipped"), ("openai", "skipped"), ("anthropic", "ok")]
    at = arrivals(sim, "anthropic")
    assert at[-1] - at[-2] >= 0.3  # it waited out the cool-down; it did not fail at once
    assert counts(sim)["openai"] == 1


def test_a_single_open_candidate_is_waited_for_then_probed(sim: SimServer) -> None:
    with dispatcher(sim, retry=NO_RETRY, breaker=breaker(), deadline_s=5.0) as d:
        open_circuit(sim, d, "openai", MINI)
        r = d.send("Wait, then probe.", MINI)
        assert d.breaker.state(MINI) == "closed"
    assert [a.status for a in r.attempts] == ["skipped", "ok"]
    at = arrivals(sim, "openai")
    assert len(at) == 3 and at[2] - at[1] >= 0.3


def test_circuit_open_error_when_the_wait_does_not_fit_the_deadline(sim: SimServer) -> None:
    with dispatcher(sim, retry=NO_RETRY, breaker=breaker()) as d:
        open_circuit(sim, d, "openai", MINI)
        d.deadline_s = 0.2  # only now: the calls that open it must not race a short deadline
        with pytest.raises(CircuitOpenError) as caught:
            d.send("No time to wait.", MINI)
        recs = records(d)
    assert caught.value.reopens_in is not None and 0.0 < caught.value.reopens_in <= 0.3
    assert counts(sim)["openai"] == 2
    # Nothing was sent, but the call is in the ledger (and so in the stats) as refused.
    assert [(x.status, x.error_class) for x in recs[2:]] == [("refused", "CircuitOpenError")]
    assert d.stats()["calls"] == 3 and d.stats()["failures"] == 3


def test_circuit_open_error_at_once_when_waiting_is_switched_off(sim: SimServer) -> None:
    # A 30 s cool-down inside a 60 s deadline: a call that waited would be served (after
    # 30 s) instead of raising.
    with dispatcher(sim, retry=NO_RETRY, breaker=CircuitBreaker(cooldown_s=30, min_calls=2),
                    wait_for_breaker=False, deadline_s=60.0) as d:
        open_circuit(sim, d, "openai", MINI)
        with pytest.raises(CircuitOpenError, match=r"circuit open \(\d+\.\d s left\)") as caught:
            d.send("Do not wait.", MINI)
    assert caught.value.reopens_in is not None and caught.value.reopens_in > 20
    assert counts(sim)["openai"] == 2


def test_circuit_open_error_while_the_probe_is_out_says_so(sim: SimServer) -> None:
    # Half-open with the probe out: the error must not claim the circuit "half-opens in
    # 120 s" (the probe timeout); the probe's answer is what decides.
    with dispatcher(sim, retry=NO_RETRY, breaker=breaker(), wait_for_breaker=False) as d:
        open_circuit(sim, d, "openai", MINI)
        wait_until_half_open(d, MINI)
        sim.emulators["openai"].time_scale = 1.0

        async def both() -> tuple[Response, BaseException]:
            probe = asyncio.ensure_future(d.asend("Probe.", MINI, max_tokens=8))
            await asyncio.sleep(0.05)
            with pytest.raises(CircuitOpenError) as caught:
                await d.asend("Meanwhile.", MINI, max_tokens=8)
            return await probe, caught.value

        probe, error = asyncio.run(both())
    assert probe.vendor == "openai" and d.breaker.state(MINI) == "closed"
    assert "one probe call out (the probe's answer decides" in str(error)
    assert "half-opens in" not in str(error)
    assert counts(sim)["openai"] == 3  # two that opened it, the probe; nothing else sent


def test_client_errors_do_not_open_the_circuit(sim: SimServer) -> None:
    sim.emulators["openai"].faults.script("400", "400", "400", "400")
    with dispatcher(sim, retry=NO_RETRY, breaker=breaker()) as d:
        for _ in range(4):
            with pytest.raises(BadRequestError):
                d.send("Bad request.", MINI)
        assert d.breaker.state(MINI) == "closed"
        assert d.send("Still closed.", MINI).vendor == "openai"
    assert counts(sim)["openai"] == 5
