"""Retries end to end, over loopback, timed by the emulators' own request log: every delay
header each vendor sends (retry-after in seconds and as an HTTP date, retry-after-ms,
Gemini's RetryInfo), re-read from the latest error, capped, inside the call deadline;
backoff when the server names no delay; and what is never retried.

Delays are checked as lower bounds between the arrivals the emulator logged (a retry that
ignored the header would come sooner); upper bounds appear only where they tell two
headers apart, with a wide margin.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from llmdispatch_nb.errors import (
    AuthenticationError,
    BadRequestError,
    ContextLengthError,
    LLMDispatchError,
    QuotaExhaustedError,
    RateLimitError,
    VendorTimeoutError,
)
from llmdispatch_nb.resilience import RetryPolicy
from llmdispatch_nb.sim import Fault, SimServer
from tests._resilience_support import (
    HAIKU,
    MINI,
    MODEL,
    arrivals,
    counts,
    dispatcher,
    fresh,
    gaps,
    records,
    serve_odd,
    start,
)

# Backoff far shorter than any server delay used here: a retry that ignored the server's
# delay would arrive visibly too early.
QUICK = dict(base_s=0.01, max_backoff_s=0.02, jitter=0.0)


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    with start() as s:
        yield s


@pytest.fixture(autouse=True)
def _fresh(sim: SimServer) -> None:
    fresh(sim)


@pytest.fixture(scope="module")
def odd() -> Iterator[SimServer]:
    yield from serve_odd()


def test_retry_after_seconds_is_waited_and_read_from_the_latest_error(sim: SimServer) -> None:
    # Short then long: a client that kept the first value would retry the second time
    # after 0.1 s, not 0.45 s.
    sim.emulators["openai"].faults.script(Fault("429", retry_after=0.1),
                                          Fault("429", retry_after=0.45))
    with dispatcher(sim, retry=RetryPolicy(max_attempts=3, **QUICK)) as d:
        r = d.send("Name a river.", MINI)
        recs = records(d)
    at = arrivals(sim, "openai")
    assert len(at) == 3
    g = gaps(at)
    assert g[0] >= 0.1 and g[1] >= 0.45
    assert [a.status for a in r.attempts] == ["error", "error", "ok"]
    assert [a.error for a in r.attempts[:2]] == ["RateLimitError", "RateLimitError"]
    assert [(x.status, x.http_status, x.retried) for x in recs] == [
        ("error", 429, False), ("error", 429, True), ("ok", 200, True)]
    assert not any(x.fell_back for x in recs)


@pytest.mark.parametrize("vendor", ["openai", "anthropic", "azure"])
def test_retry_after_ms_is_preferred_to_whole_seconds(sim: SimServer, vendor: str) -> None:
    # "429-ms" sends retry-after-ms: 250 beside retry-after: 1 (what these vendors do).
    sim.emulators[vendor].faults.script(Fault("429-ms", retry_after=0.25))
    with dispatcher(sim, retry=RetryPolicy(max_attempts=2, **QUICK)) as d:
        r = d.send("Name a lake.", MODEL[vendor])
    (gap,) = gaps(arrivals(sim, vendor))
    assert r.vendor == vendor
    assert 0.25 <= gap < 0.9  # the whole-seconds header would have meant >= 1 s


def test_gemini_retry_info_delay_is_honoured(sim: SimServer) -> None:
    # Gemini sends no header: the delay is RetryInfo.retryDelay ("0.3s") in the body.
    sim.emulators["google"].faults.script(Fault("429", retry_after=0.3),
                                          Fault("429-ms", retry_after=0.15))
    with dispatcher(sim, retry=RetryPolicy(max_attempts=3, **QUICK)) as d:
        r = d.send("Name a mountain.", MODEL["google"])
    g = gaps(arrivals(sim, "google"))
    assert len(g) == 2 and g[0] >= 0.3 and g[1] >= 0.15
    assert r.vendor == "google" and [a.status for a in r.attempts] == ["error", "error", "ok"]


def test_retry_after_as_an_http_date_is_honoured(odd: SimServer) -> None:
    # An HTTP date has whole seconds: "now + 2 s" written down is at least 1 s away.
    emu = odd.emulators["openai"]
    emu.reset()
    emu.http_date = True
    try:
        emu.faults.script(Fault("429", retry_after=2.0))
        with dispatcher(odd, retry=RetryPolicy(max_attempts=2, **QUICK)) as d:
            r = d.send("Name a sea.", MINI)
    finally:
        emu.http_date = False
    (gap,) = gaps(arrivals(odd, "openai"))
    assert gap >= 1.0
    assert [a.status for a in r.attempts] == ["error", "ok"]


def test_a_server_delay_above_the_cap_moves_on_to_the_fallback(sim: SimServer) -> None:
    sim.emulators["openai"].faults.script(Fault("429", retry_after=5.0))
    policy = RetryPolicy(max_attempts=3, max_retry_after_s=0.5, **QUICK)
    with dispatcher(sim, retry=policy, fallbacks={MINI: [HAIKU]}) as d:
        r = d.send("Name a desert.", MINI)
        recs = records(d)
    assert counts(sim)["openai"] == 1 and counts(sim)["anthropic"] == 1
    assert r.vendor == "anthropic"
    # It did not sit out the 5 s first.
    assert arrivals(sim, "anthropic")[0] - arrivals(sim, "openai")[0] < 4.0
    assert [(x.vendor, x.status, x.retried, x.fell_back, x.route_reason) for x in recs] == [
        ("openai", "error", False, False, "target"),
        ("anthropic", "ok", False, True, f"fallback for {MINI}")]


def test_retries_end_inside_the_call_deadline(sim: SimServer) -> None:
    sim.emulators["openai"].faults.script(*[Fault("429", retry_after=0.3)] * 10)
    with dispatcher(sim, retry=RetryPolicy(max_attempts=10, **QUICK), deadline_s=1.0) as d:
        with pytest.raises(RateLimitError):
            d.send("Name a glacier.", MINI)
        recs = records(d)
    at = arrivals(sim, "openai")
    # 0, 0.3, 0.6, 0.9 fit in 1 s; a fifth at 1.2 would not, so it is not even started.
    assert 2 <= len(at) <= 4
    assert at[-1] - at[0] <= 1.0
    assert len(recs) == len(at) and all(x.http_status == 429 for x in recs)


def test_a_hang_ends_at_the_deadline_and_no_fallback_starts_after_it(sim: SimServer) -> None:
    sim.emulators["openai"].faults.script(Fault("hang", hang_s=3.0))
    with dispatcher(sim, retry=RetryPolicy(max_attempts=3, **QUICK), deadline_s=0.5,
                    fallbacks={MINI: [HAIKU]}) as d:
        with pytest.raises(VendorTimeoutError, match="deadline"):
            d.send("Name a canyon.", MINI)
        recs = records(d)
    # The fallback is not sent a request it has no time left to answer.
    assert counts(sim)["openai"] == 1 and counts(sim)["anthropic"] == 0
    assert [(x.vendor, x.error_class) for x in recs] == [("openai", "VendorTimeoutError")]


@pytest.mark.parametrize(("backoff", "expected"), [
    ("exponential", [0.08, 0.16, 0.32]),
    ("linear", [0.08, 0.16, 0.24]),
    ("fixed", [0.08, 0.08, 0.08]),
])
def test_backoff_without_a_server_delay(sim: SimServer, backoff: str, expected: list[float]) -> None:
    # A 500 names no delay, so the policy's own backoff applies (no jitter here).
    sim.emulators["openai"].faults.script("500", "500", "500")
    policy = RetryPolicy(max_attempts=4, backoff=backoff, base_s=0.08,  # type: ignore[arg-type]
                         max_backoff_s=1.0, jitter=0.0)
    with dispatcher(sim, retry=policy) as d:
        r = d.send("Name an island.", MINI)
    g = gaps(arrivals(sim, "openai"))
    assert len(g) == 3
    assert all(got >= want for got, want in zip(g, expected, strict=True)), g
    assert [a.error for a in r.attempts] == ["ServerError"] * 3 + [None]


@pytest.mark.parametrize("vendor", ["openai", "anthropic", "google", "azure"])
def test_x_should_retry_false_is_not_retried(sim: SimServer, vendor: str) -> None:
    sim.emulators[vendor].faults.script("429-no-retry")
    with dispatcher(sim, retry=RetryPolicy(max_attempts=5, **QUICK)) as d, \
            pytest.raises(RateLimitError) as caught:
        d.send("Name a bay.", MODEL[vendor])
    assert caught.value.retryable is False
    assert counts(sim)[vendor] == 1


@pytest.mark.parametrize(("vendor", "fault", "error"), [
    ("openai", "400", BadRequestError),
    ("anthropic", "400", BadRequestError),
    ("google", "400", BadRequestError),
    ("openai", "401", AuthenticationError),
    ("anthropic", "401", AuthenticationError),
    ("azure", "401", AuthenticationError),
    ("openai", "context-length", ContextLengthError),
    ("google", "context-length", ContextLengthError),
])
def test_client_errors_are_not_retried(sim: SimServer, vendor: str, fault: str,
                                       error: type[LLMDispatchError]) -> None:
    sim.emulators[vendor].faults.script(fault, fault)
    with dispatcher(sim, retry=RetryPolicy(max_attempts=5, **QUICK)) as d:
        with pytest.raises(error):
            d.send("Name a strait.", MODEL[vendor])
        recs = records(d)
    assert counts(sim)[vendor] == 1
    assert len(recs) == 1 and recs[0].retried is False


def test_403_from_gemini_without_a_key_is_not_retried(sim: SimServer) -> None:
    with dispatcher(sim, google_key=False, retry=RetryPolicy(max_attempts=5, **QUICK)) as d, \
            pytest.raises(AuthenticationError) as caught:
        d.send("Name a fjord.", MODEL["google"])
    assert caught.value.status == 403
    assert counts(sim)["google"] == 1


def test_404_for_an_unknown_model_is_not_retried(sim: SimServer) -> None:
    with dispatcher(sim, retry=RetryPolicy(max_attempts=5, **QUICK)) as d, \
            pytest.raises(BadRequestError) as caught:
        d.send("Name a delta.", "openai:gpt-no-such-model")
    assert caught.value.status == 404
    assert counts(sim)["openai"] == 1


@pytest.mark.parametrize("status", [403, 422])
def test_403_and_422_are_not_retried(odd: SimServer, status: int) -> None:
    emu = odd.emulators["openai"]
    emu.reset()
    emu.status_for_400 = status
    try:
        emu.faults.script("400", "400")
        with dispatcher(odd, retry=RetryPolicy(max_attempts=5, **QUICK)) as d, \
                pytest.raises((AuthenticationError, BadRequestError)) as caught:
            d.send("Name a cape.", MINI)
    finally:
        emu.status_for_400 = None
    assert caught.value.status == status  # type: ignore[union-attr]
    assert emu.count == 1


@pytest.mark.parametrize("vendor", ["openai", "anthropic", "google"])
def test_an_exhausted_quota_is_not_retried_but_falls_back(sim: SimServer, vendor: str) -> None:
    fallback = "azure:gpt-4o-mini"
    sim.emulators[vendor].faults.script("quota", "quota")
    with dispatcher(sim, retry=RetryPolicy(max_attempts=5, **QUICK),
                    default_fallbacks=[fallback]) as d:
        r = d.send("Name a plain.", MODEL[vendor])
        recs = records(d)
    assert counts(sim)[vendor] == 1 and counts(sim)["azure"] == 1
    assert r.vendor == "azure"
    assert r.attempts[0].error == QuotaExhaustedError.__name__
    assert [(x.vendor, x.status, x.fell_back, x.route_reason) for x in recs] == [
        (vendor, "error", False, "target"), ("azure", "ok", True, "default fallback")]


@pytest.mark.parametrize(("vendor", "fault", "error"), [
    ("openai", "408", "ServerError"),
    ("openai", "409", "ServerError"),
    ("google", "500", "ServerError"),
    ("azure", "503", "OverloadedError"),
    ("anthropic", "529", "OverloadedError"),
    ("openai", "reset", "ConnectError"),
    ("anthropic", "malformed-json", "ProtocolError"),
])
def test_retryable_failures_are_retried_on_the_same_candidate(sim: SimServer, vendor: str,
                                                              fault: str, error: str) -> None:
    sim.emulators[vendor].faults.script(fault)
    with dispatcher(sim, retry=RetryPolicy(max_attempts=2, **QUICK)) as d:
        r = d.send("Try again.", MODEL[vendor])
    assert [(a.vendor, a.status, a.error) for a in r.attempts] == [
        (vendor, "error", error), (vendor, "ok", None)]
    assert counts(sim)[vendor] == 2


def test_retries_are_capped_per_error_class(sim: SimServer) -> None:
    # Five attempts in general, but only one retry for rate limits.
    sim.emulators["openai"].faults.script(*[Fault("429", retry_after=0.01)] * 2)
    policy = RetryPolicy(max_attempts=5, per_error={"RateLimitError": 1}, **QUICK)
    with dispatcher(sim, retry=policy) as d:
        with pytest.raises(RateLimitError):
            d.send("Rate limited.", MINI)
        sim.emulators["openai"].faults.script("500", "500", "500")
        r = d.send("Server errors get the general allowance.", MINI)
    assert counts(sim)["openai"] == 2 + 4  # one try and one retry; three 500s and the answer
    assert [a.status for a in r.attempts] == ["error"] * 3 + ["ok"]
