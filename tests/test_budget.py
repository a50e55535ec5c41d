"""Budget: reservations before sending, settlement after, and no overspending under load."""

from __future__ import annotations

import random
import sys
import threading
from collections.abc import Iterator

import pytest

from llmdispatch_nb.errors import BudgetExceededError, ConfigurationError
from llmdispatch_nb.resilience import Budget, money


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Switch threads as often as possible so races would show."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(old)


def test_reserve_settle_release_accounting() -> None:
    b = Budget(1.0)
    r1 = b.reserve(0.30)
    r2 = b.reserve(0.20)
    assert (b.spent, b.reserved, b.remaining) == (0.0, 0.5, 0.5)
    r1.settle(0.12)  # the answer was shorter than max_tokens
    assert (b.spent, b.reserved) == (0.12, 0.2)
    r2.release()  # never sent
    assert (b.spent, b.reserved, b.remaining) == (0.12, 0.0, 0.88)
    assert not r1.open and not r2.open


def test_settle_unknown_keeps_the_reserved_amount_as_spent() -> None:
    b = Budget(1.0)
    b.reserve(0.25).settle(None)
    assert (b.spent, b.reserved) == (0.25, 0.0)


def test_second_settle_or_release_is_ignored() -> None:
    b = Budget(1.0)
    r = b.reserve(0.4)
    r.settle(0.1)
    r.settle(0.3)
    r.release()
    assert (b.spent, b.reserved) == (0.1, 0.0)


def test_accounting_is_exact_in_decimal_dollars() -> None:
    b = Budget(1.0)
    for _ in range(10):
        b.reserve(0.1).settle(None)
    assert b.spent == 1.0 and b.remaining == 0.0
    with pytest.raises(BudgetExceededError):
        b.reserve(0.000000001)
    b.reserve(0.0)  # a free call still fits


def test_refusal_says_budget_spend_and_estimate() -> None:
    b = Budget(2.0)
    b.reserve(1.5).settle(1.25)
    b.reserve(0.5)  # in flight
    with pytest.raises(BudgetExceededError) as info:
        b.reserve(0.40, what="openai:gpt-4o")
    err = info.value
    assert (err.budget, err.spent, err.estimate) == (2.0, 1.75, 0.40)
    msg = str(err)
    assert "refused before sending" in msg
    assert "$2.00" in msg and "$1.75" in msg and "$0.4" in msg
    assert "$1.25 settled" in msg and "$0.5 reserved" in msg
    assert "openai:gpt-4o" in msg
    assert (b.spent, b.reserved) == (1.25, 0.5)  # the refusal reserved nothing


def test_max_cost_per_call() -> None:
    b = Budget()  # no dispatcher budget
    with pytest.raises(BudgetExceededError) as info:
        b.reserve(0.05, max_cost=0.01, what="anthropic:claude-opus-4-1")
    assert (info.value.budget, info.value.spent, info.value.estimate) == (0.01, 0.0, 0.05)
    assert "max_cost" in str(info.value) and "$0.05" in str(info.value)
    r = b.reserve(0.01, max_cost=0.01)
    r.settle(0.008)
    assert b.spent == 0.008
    assert b.remaining is None


def test_per_tag_budgets() -> None:
    b = Budget(10.0, per_tag={"experiment": 0.5})
    b.reserve(0.3, tags=("experiment", "alice")).settle(0.3)
    b.reserve(3.0, tags=("alice",)).settle(2.0)
    assert b.spent_for("experiment") == 0.3
    assert b.spent_for("alice") == 2.3
    assert b.remaining_for("experiment") == 0.2
    assert b.remaining_for("alice") is None  # tracked, not limited
    with pytest.raises(BudgetExceededError) as info:
        b.reserve(0.25, tags=("experiment",))
    assert "tag 'experiment'" in str(info.value)
    assert (info.value.budget, info.value.spent) == (0.5, 0.3)
    b.reserve(0.25, tags=("other",))  # another tag is not limited by it
    r = b.reserve(0.2, tags=("experiment", "experiment"))  # a repeated tag counts once
    assert b.reserved_for("experiment") == 0.2
    r.release()
    assert b.tag_limits() == {"experiment": 0.5}
    snap = b.snapshot()
    assert snap["*"]["limit"] == 10.0 and snap["experiment"]["remaining"] == 0.2


def test_dispatcher_budget_is_checked_even_when_the_tag_fits() -> None:
    b = Budget(1.0, per_tag={"a": 5.0})
    b.reserve(0.9, tags=("a",))
    with pytest.raises(BudgetExceededError) as info:
        b.reserve(0.2, tags=("a",))
    assert info.value.budget == 1.0


def test_unknown_estimate_is_refused_when_a_budget_applies() -> None:
    b = Budget(1.0)
    with pytest.raises(BudgetExceededError) as info:
        b.reserve(None, what="ollama:llama3.2")
    assert "unknown" in str(info.value) and "allow_unknown" in str(info.value)
    assert info.value.estimate is None
    r = b.reserve(None, allow_unknown=True)
    assert r.amount_usd == 0.0 and b.reserved == 0.0
    r.settle(0.02)  # learned after the call
    assert b.spent == 0.02
    Budget(1.0, allow_unknown=True).reserve(None)
    with pytest.raises(BudgetExceededError):
        Budget().reserve(None, max_cost=0.5)
    Budget().reserve(None)  # no limit at all: nothing to check


def test_limits_can_change() -> None:
    b = Budget(0.1)
    with pytest.raises(BudgetExceededError):
        b.reserve(0.2)
    b.set_limit(None)
    b.reserve(0.2)
    b.set_tag_limit("t", 0.0)
    with pytest.raises(BudgetExceededError):
        b.reserve(0.01, tags=["t"])
    assert b.limit_usd is None


@pytest.mark.parametrize("bad", [-1.0, "5"])
def test_bad_limits_are_refused(bad: object) -> None:
    with pytest.raises(ConfigurationError):
        Budget(bad)  # type: ignore[arg-type]


def test_bad_estimates_are_refused() -> None:
    with pytest.raises(ConfigurationError):
        Budget(1.0).reserve(-0.5)
    with pytest.raises(ConfigurationError):
        Budget(1.0).reserve(float("nan"))


@pytest.mark.parametrize("round_", range(5))
def test_50_concurrent_reservations_never_overspend(fast_switching: None, round_: int) -> None:
    b = Budget(1.0)
    start = threading.Barrier(50)
    granted: list[float] = []
    refused: list[BudgetExceededError] = []
    lock = threading.Lock()

    def call() -> None:
        start.wait()
        try:
            r = b.reserve(0.03, what="openai:gpt-4o")
        except BudgetExceededError as exc:
            with lock:
                refused.append(exc)
            return
        with lock:
            granted.append(r.amount_usd)

    threads = [threading.Thread(target=call) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(granted) == 33 and len(refused) == 17  # floor(1.00 / 0.03)
    assert b.reserved == pytest.approx(0.99, abs=1e-12)
    assert all(e.spent is not None and e.spent + 0.03 > 1.0 for e in refused)


def test_50_threads_reserving_and_settling_never_overspend(fast_switching: None) -> None:
    limit = 2.0
    b = Budget(limit, per_tag={"team": 1.5})
    start = threading.Barrier(50)
    settled: list[int] = []  # in nano-dollars, to compare exactly
    lock = threading.Lock()
    overspent: list[float] = []

    def call(seed: int) -> None:
        rng = random.Random(seed)
        start.wait()
        for _ in range(40):
            estimate = rng.choice([0.01, 0.02, 0.05])
            try:
                r = b.reserve(estimate, tags=("team",) if rng.random() < 0.5 else ())
            except BudgetExceededError:
                continue
            if b.spent + b.reserved > limit + 1e-12:
                overspent.append(b.spent + b.reserved)
            if rng.random() < 0.2:
                r.release()
                continue
            actual = round(estimate * rng.random(), 9)
            r.settle(actual)
            with lock:
                settled.append(round(actual * 1e9))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not overspent
    assert b.reserved == 0.0
    assert round(b.spent * 1e9) == sum(settled)
    assert b.spent <= limit
    assert b.spent_for("team") <= 1.5


def test_money_formatting() -> None:
    assert money(None) == "unknown"
    assert money(0) == "$0"
    assert money(1234.5) == "$1,234.50"
    assert money(0.000150) == "$0.00015"
    assert repr(Budget(1.0)) == "Budget(limit=$1.00, spent=$0, reserved=$0)"
