"""CircuitBreaker: every transition, on an injected clock."""

from __future__ import annotations

import pytest

from llmdispatch_nb.errors import (
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    ConnectError,
    ContextLengthError,
    MidStreamError,
    OverloadedError,
    ProtocolError,
    QuotaExhaustedError,
    RateLimitError,
    ServerError,
    VendorError,
    VendorTimeoutError,
)
from llmdispatch_nb.resilience import CircuitBreaker, counts_as_failure

KEY = "openai:gpt-4o"


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, s: float) -> None:
        self.t += s


def server_error() -> ServerError:
    return ServerError("boom", vendor="openai", status=500)


def rate_limited(retry_after: float | None) -> RateLimitError:
    return RateLimitError("slow down", vendor="openai", status=429, retry_after=retry_after)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def breaker(clock: Clock) -> CircuitBreaker:
    return CircuitBreaker(clock=clock)


def fail(b: CircuitBreaker, n: int, key: str = KEY) -> None:
    for _ in range(n):
        b.record(key, False, server_error())


def succeed(b: CircuitBreaker, n: int, key: str = KEY) -> None:
    for _ in range(n):
        b.record(key, True)


# -- what counts ------------------------------------------------------------------------


@pytest.mark.parametrize("error", [
    ServerError("x", vendor="v", status=500), OverloadedError("x", vendor="v", status=529),
    ServerError("x", vendor="v", status=408), rate_limited(1.0),
    QuotaExhaustedError("x", vendor="v", status=429), ConnectError("x", vendor="v"),
    VendorTimeoutError("x", vendor="v"), ProtocolError("x", vendor="v"),
    MidStreamError("x", vendor="v", partial_text="abc"),
    VendorError("x", vendor="v", status=502), None,
])
def test_vendor_trouble_counts_as_failure(error: object) -> None:
    assert counts_as_failure(error)  # type: ignore[arg-type]


@pytest.mark.parametrize("error", [
    BadRequestError("x", vendor="v", status=400), AuthenticationError("x", vendor="v", status=401),
    AuthenticationError("x", vendor="v", status=403), BadRequestError("x", vendor="v", status=404),
    BadRequestError("x", vendor="v", status=422), ContextLengthError("x", vendor="v", status=400),
])
def test_client_errors_do_not_count(error: VendorError, breaker: CircuitBreaker) -> None:
    assert not counts_as_failure(error)
    for _ in range(30):
        breaker.record(KEY, False, error)
    assert breaker.state(KEY) == "closed"


# -- closed -> open ------------------------------------------------------------------------


def test_unknown_key_is_closed_and_allowed(breaker: CircuitBreaker) -> None:
    assert breaker.state("nobody:x") == "closed"
    assert breaker.allow("nobody:x")
    assert breaker.opens_in("nobody:x") == 0.0


def test_not_opened_before_min_calls(breaker: CircuitBreaker) -> None:
    fail(breaker, 4)
    assert breaker.state(KEY) == "closed"
    assert breaker.allow(KEY)
    fail(breaker, 1)
    assert breaker.state(KEY) == "open"
    assert not breaker.allow(KEY)


def test_opens_at_the_threshold_rate(breaker: CircuitBreaker) -> None:
    succeed(breaker, 5)
    fail(breaker, 4)  # 4 of 9 < 0.5
    assert breaker.state(KEY) == "closed"
    fail(breaker, 1)  # 5 of 10 == 0.5
    assert breaker.state(KEY) == "open"


def test_rolling_window_forgets_old_failures(clock: Clock) -> None:
    b = CircuitBreaker(window=10, min_calls=5, threshold=0.5, clock=clock)
    fail(b, 4)
    succeed(b, 10)  # the 4 failures fall out of the last 10
    fail(b, 4)  # 4 of 10
    assert b.state(KEY) == "closed"
    fail(b, 1)  # 5 of the last 10
    assert b.state(KEY) == "open"


def test_keys_are_independent(breaker: CircuitBreaker) -> None:
    fail(breaker, 5)
    assert breaker.state(KEY) == "open"
    assert breaker.state("azure:gpt-4o") == "closed"
    assert breaker.allow("azure:gpt-4o")


def test_long_retry_after_429_opens_at_once(breaker: CircuitBreaker, clock: Clock) -> None:
    breaker.record(KEY, False, rate_limited(45.0))
    assert breaker.state(KEY) == "open"
    assert breaker.opens_in(KEY) == 45.0  # longer than the 30 s cool-down


def test_short_retry_after_429_does_not_open_at_once(breaker: CircuitBreaker) -> None:
    breaker.record(KEY, False, rate_limited(30.0))  # not above long_retry_after_s
    breaker.record(KEY, False, rate_limited(None))
    assert breaker.state(KEY) == "closed"


def test_open_time_is_cooldown_when_longer_than_retry_after(breaker: CircuitBreaker,
                                                            clock: Clock) -> None:
    fail(breaker, 4)
    breaker.record(KEY, False, rate_limited(2.0))
    assert breaker.state(KEY) == "open"
    assert breaker.opens_in(KEY) == 30.0


def test_open_time_is_retry_after_when_longer(clock: Clock) -> None:
    b = CircuitBreaker(cooldown_s=10, long_retry_after_s=100, clock=clock)
    fail(b, 4, KEY)
    b.record(KEY, False, rate_limited(25.0))
    assert b.opens_in(KEY) == 25.0


# -- open -> half-open -> closed / open --------------------------------------------------


def test_open_becomes_half_open_after_the_cooldown(breaker: CircuitBreaker, clock: Clock) -> None:
    fail(breaker, 5)
    clock.advance(29.9)
    assert breaker.state(KEY) == "open"
    assert breaker.opens_in(KEY) == pytest.approx(0.1)
    assert not breaker.allow(KEY)
    clock.advance(0.1)
    assert breaker.state(KEY) == "half_open"
    assert breaker.opens_in(KEY) == 0.0


def test_half_open_grants_exactly_one_probe(breaker: CircuitBreaker, clock: Clock) -> None:
    fail(breaker, 5)
    clock.advance(30)
    assert breaker.allow(KEY)
    assert [breaker.allow(KEY) for _ in range(5)] == [False] * 5
    clock.advance(60)  # still waiting for the probe's outcome
    assert not breaker.allow(KEY)
    assert breaker.state(KEY) == "half_open"


def test_probe_success_closes_and_resets_the_window(breaker: CircuitBreaker, clock: Clock) -> None:
    fail(breaker, 5)
    clock.advance(30)
    assert breaker.allow(KEY)
    breaker.record(KEY, True)
    assert breaker.state(KEY) == "closed"
    assert all(breaker.allow(KEY) for _ in range(3))
    fail(breaker, 4)  # a fresh window: 4 failures are below min_calls
    assert breaker.state(KEY) == "closed"
    assert breaker.snapshot()[KEY]["calls"] == 4


def test_probe_failure_reopens(breaker: CircuitBreaker, clock: Clock) -> None:
    fail(breaker, 5)
    clock.advance(30)
    assert breaker.allow(KEY)
    breaker.record(KEY, False, ConnectError("reset", vendor="openai"))
    assert breaker.state(KEY) == "open"
    assert breaker.opens_in(KEY) == 30.0
    assert not breaker.allow(KEY)
    assert breaker.snapshot()[KEY]["trips"] == 2


def test_probe_failure_with_long_retry_after_reopens_for_that_long(breaker: CircuitBreaker,
                                                                   clock: Clock) -> None:
    fail(breaker, 5)
    clock.advance(30)
    assert breaker.allow(KEY)
    breaker.record(KEY, False, rate_limited(90.0))
    assert breaker.opens_in(KEY) == 90.0


def test_probe_answered_with_a_client_error_closes(breaker: CircuitBreaker, clock: Clock) -> None:
    fail(breaker, 5)
    clock.advance(30)
    assert breaker.allow(KEY)
    breaker.record(KEY, False, BadRequestError("bad", vendor="openai", status=400))
    assert breaker.state(KEY) == "closed"


def test_released_probe_lets_another_through(breaker: CircuitBreaker, clock: Clock) -> None:
    fail(breaker, 5)
    clock.advance(30)
    assert breaker.allow(KEY)
    breaker.release(KEY)  # e.g. the budget refused the call before it was sent
    assert breaker.allow(KEY)
    assert not breaker.allow(KEY)


def test_lost_probe_is_replaced_after_probe_timeout(clock: Clock) -> None:
    b = CircuitBreaker(probe_timeout_s=50, clock=clock)
    fail(b, 5)
    clock.advance(30)
    assert b.allow(KEY)
    clock.advance(49)
    assert not b.allow(KEY)
    assert b.wait_s(KEY) == pytest.approx(1.0)
    clock.advance(1)
    assert b.allow(KEY)


# -- re-tripping never shortens ------------------------------------------------------------


def test_retrip_never_shortens_an_open_period(breaker: CircuitBreaker, clock: Clock) -> None:
    breaker.record(KEY, False, rate_limited(100.0))
    assert breaker.opens_in(KEY) == 100.0
    clock.advance(10)
    # A late failure of a call sent before the trip, with a shorter delay.
    breaker.record(KEY, False, rate_limited(40.0))
    fail(breaker, 10)
    assert breaker.opens_in(KEY) == 90.0
    breaker.trip(KEY, 5)
    assert breaker.opens_in(KEY) == 90.0


def test_retrip_may_lengthen_an_open_period(breaker: CircuitBreaker, clock: Clock) -> None:
    fail(breaker, 5)
    clock.advance(10)
    breaker.record(KEY, False, rate_limited(200.0))
    assert breaker.opens_in(KEY) == 200.0


def test_late_success_while_open_does_not_close(breaker: CircuitBreaker, clock: Clock) -> None:
    fail(breaker, 5)
    succeed(breaker, 3)
    assert breaker.state(KEY) == "open"


# -- waiting for the soonest ----------------------------------------------------------------


def test_soonest_picks_the_key_that_half_opens_first(breaker: CircuitBreaker, clock: Clock) -> None:
    a, b, c = "openai:gpt-4o", "azure:gpt-4o", "anthropic:claude-haiku-4-5"
    breaker.record(a, False, rate_limited(120.0))
    breaker.record(b, False, rate_limited(45.0))
    breaker.record(c, False, rate_limited(60.0))
    assert breaker.soonest([a, b, c]) == (b, 45.0)
    clock.advance(45)
    assert breaker.soonest([a, b, c]) == (b, 0.0)
    assert breaker.allow(b)  # b's probe is out now: c is next
    assert breaker.soonest([a, c]) == (c, 15.0)


def test_soonest_prefers_the_first_key_on_ties(breaker: CircuitBreaker) -> None:
    assert breaker.soonest(["x:1", "y:2"]) == ("x:1", 0.0)
    with pytest.raises(ValueError):
        breaker.soonest([])


def test_snapshot_and_reset(breaker: CircuitBreaker, clock: Clock) -> None:
    succeed(breaker, 2)
    fail(breaker, 1)
    snap = breaker.snapshot()[KEY]
    assert snap == {"state": "closed", "calls": 3, "failures": 1, "failure_rate": 1 / 3,
                    "opens_in": 0.0, "probe_out": False, "trips": 0, "last_failure": "ServerError",
                    "recovered": 0}
    fail(breaker, 5)
    assert breaker.snapshot()[KEY]["state"] == "open"
    assert "not_closed=['openai:gpt-4o']" in repr(breaker)
    breaker.reset(KEY)
    assert breaker.state(KEY) == "closed"
    assert breaker.snapshot() == {}


@pytest.mark.parametrize("kwargs", [{"threshold": 0}, {"threshold": 1.5}, {"min_calls": 0},
                                    {"min_calls": 30, "window": 20}, {"cooldown_s": -1}])
def test_bad_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError):
        CircuitBreaker(**kwargs)  # type: ignore[arg-type]


def test_a_day_long_retry_after_is_capped_so_the_vendor_is_probed_again(clock: Clock) -> None:
    b = CircuitBreaker(max_open_s=600, clock=clock)
    b.record(KEY, False, rate_limited(86_400.0))  # Azure and daily quotas say such things
    assert b.state(KEY) == "open" and b.opens_in(KEY) == pytest.approx(600)
    clock.advance(600)
    assert b.state(KEY) == "half_open" and b.allow(KEY)


def test_calls_still_in_flight_keep_a_burst_of_fast_failures_from_tripping(
        breaker: CircuitBreaker) -> None:
    # 40 calls start together; the 5 that fail come back first (failures are fast).
    for _ in range(40):
        assert breaker.allow(KEY)
    fail(breaker, 5)
    assert breaker.state(KEY) == "closed"  # 5 failed of 40 sent, 35 still out
    succeed(breaker, 30)
    fail(breaker, 5)
    assert breaker.state(KEY) == "closed"
    # Sequentially (nothing in flight) the same failure rate still trips.
    for _ in range(12):
        breaker.allow(KEY)
        breaker.record(KEY, False, server_error())
    assert breaker.state(KEY) == "open"


def test_release_gives_back_an_in_flight_slot(breaker: CircuitBreaker) -> None:
    for _ in range(10):
        breaker.allow(KEY)
    for _ in range(10):
        breaker.release(KEY)  # none was sent
    fail(breaker, 5)
    assert breaker.state(KEY) == "open"
