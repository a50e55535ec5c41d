"""Client-side limits and budgets end to end: what the emulator sees when the dispatcher
holds calls back (concurrency never above the cap, requests per minute spaced out, waiting
calls served first come first served, a typed error and a record when the deadline passes
in the queue), and budgets that concurrent calls cannot overspend, refused before any
request leaves.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from llmdispatch_nb import Dispatcher, Response
from llmdispatch_nb.errors import BudgetExceededError, LLMDispatchError, VendorTimeoutError
from llmdispatch_nb.resilience import (
    Budget,
    CircuitBreaker,
    Limit,
    LimitWaitTimeoutError,
    RetryPolicy,
    money,
)
from llmdispatch_nb.sim import SimServer
from tests._resilience_support import (
    MINI,
    InFlight,
    arrivals,
    counts,
    dispatcher,
    fresh,
    records,
    sent,
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


def gather(d: Dispatcher, prompts: list[str], target: str,
           **params: object) -> list[Response | BaseException]:
    async def main() -> list[Response | BaseException]:
        return await asyncio.gather(*(d.asend(p, target, **params) for p in prompts),
                                    return_exceptions=True)

    return asyncio.run(main())


def test_concurrent_requests_never_exceed_the_cap_at_the_emulator(sim: SimServer) -> None:
    emu = sim.emulators["openai"]
    emu.time_scale = 0.2  # ~0.1 s an answer, so calls overlap unless held back
    with dispatcher(sim, retry=NO_RETRY, limits={"openai": Limit(concurrent=3)}) as d, \
            InFlight(emu) as flight:
        out = gather(d, [f"q{i}" for i in range(12)], MINI, max_tokens=16)
    assert all(isinstance(r, Response) for r in out)
    assert emu.count == 12
    assert flight.peak == 3  # reached, never passed


def test_a_candidate_limit_holds_beside_the_vendor_limit(sim: SimServer) -> None:
    emu = sim.emulators["openai"]
    emu.time_scale = 0.2
    limits = {"openai": Limit(concurrent=4), MINI: Limit(concurrent=1)}
    with dispatcher(sim, retry=NO_RETRY, limits=limits) as d, InFlight(emu) as flight:
        out = gather(d, [f"m{i}" for i in range(4)], MINI, max_tokens=16)
    assert all(isinstance(r, Response) for r in out)
    assert flight.peak == 1


def test_requests_per_minute_are_spaced_at_the_emulator(sim: SimServer) -> None:
    # 120 a minute: a bucket of 120 that refills 2 a second. Request k (1-based) cannot
    # leave before (k - 120) / 2 s after the limiter was made, whatever the machine's speed.
    made = time.time()
    with dispatcher(sim, retry=NO_RETRY, limits={"openai": Limit(rpm=120)}) as d:
        out = gather(d, [f"r{i}" for i in range(122)], MINI, max_tokens=4)
    assert all(isinstance(r, Response) for r in out)
    at = sorted(arrivals(sim, "openai"))
    assert len(at) == 122
    assert at[120] - made >= 0.5 and at[121] - made >= 1.0


def test_waiting_calls_start_in_the_order_they_came(sim: SimServer) -> None:
    emu = sim.emulators["openai"]
    emu.time_scale = 0.1
    with dispatcher(sim, retry=NO_RETRY, limits={"openai": Limit(concurrent=1)}) as d, \
            InFlight(emu) as flight:
        prompts = [f"in line {i}" for i in range(8)]
        out = gather(d, prompts, MINI, max_tokens=8)
        recs = sorted(records(d), key=lambda x: x.timestamp)
    assert all(isinstance(r, Response) for r in out)
    assert flight.peak == 1
    assert [x.prompt for x in recs] == prompts


def test_the_deadline_passing_in_the_queue_is_a_typed_error_and_a_record(sim: SimServer) -> None:
    with dispatcher(sim, retry=RetryPolicy(max_attempts=3, base_s=0.01),
                    limits={"openai": Limit(rpm=1)}) as d:
        d.send("Takes the only request this minute.", MINI)
        d.deadline_s = 0.3
        with pytest.raises(LimitWaitTimeoutError) as caught:
            d.send("Waits a minute; has 0.3 s.", MINI)
        recs = records(d)
        snapshot = d.breaker.snapshot()[MINI]
    assert isinstance(caught.value, VendorTimeoutError)
    assert "requests per minute" in str(caught.value) and "nothing was sent" in str(caught.value)
    assert counts(sim)["openai"] == 1
    assert [(x.status, x.error_class) for x in recs] == [
        ("ok", None), ("error", "LimitWaitTimeoutError")]
    # Our own queue says nothing about the vendor's health: the breaker saw one call.
    assert snapshot["calls"] == 1 and snapshot["failures"] == 0


def test_fifty_concurrent_calls_cannot_overspend_a_budget(sim: SimServer) -> None:
    # gpt-4o with max_tokens 300 reserves ~$0.003 a call: a $0.02 budget fits about six at
    # once. Some calls fail and are retried (re-reserving), to stir the accounting.
    sim.emulators["openai"].faults.rate(0.2, "500", seed=7)
    budget = Budget(0.02)
    # A breaker that stays closed: an unlucky run of 500s must not make calls wait it out.
    calm = CircuitBreaker(threshold=1.0, min_calls=20, window=20)
    with dispatcher(sim, retry=RetryPolicy(max_attempts=2, base_s=0.01), budget=budget,
                    breaker=calm) as d:
        out = gather(d, [f"spend {i}" for i in range(50)], "openai:gpt-4o", max_tokens=300)
        recs = records(d)
    answered = [r for r in out if isinstance(r, Response)]
    refused = [r for r in out if isinstance(r, BudgetExceededError)]
    assert all(isinstance(r, Response | LLMDispatchError) for r in out)
    assert answered and refused
    spent = sum(x.cost_usd or 0.0 for x in recs)
    assert spent <= 0.02
    assert abs(budget.spent - spent) < 1e-9 and budget.reserved == 0
    # Refused before any request left: the emulator saw only the attempts that were sent.
    assert counts(sim)["openai"] == len(sent(recs))
    assert len([x for x in recs if x.status == "refused"]) >= len(refused)
    for err in refused:
        assert err.budget == 0.02 and err.estimate is not None and err.spent is not None
        assert err.spent + err.estimate > err.budget


def test_a_tag_budget_refuses_only_its_own_calls(sim: SimServer) -> None:
    # One call reserves ~$0.003 and spends at least ~$0.0006: a second cannot fit in $0.0035.
    budget = Budget(per_tag={"team-a": 0.0035})
    with dispatcher(sim, retry=NO_RETRY, budget=budget) as d:
        d.send("Team A, first.", "openai:gpt-4o", max_tokens=300, tags=["team-a"])
        with pytest.raises(BudgetExceededError, match="the budget for tag 'team-a'"):
            d.send("Team A, second.", "openai:gpt-4o", max_tokens=300, tags=["team-a"])
        other = d.send("Team B.", "openai:gpt-4o", max_tokens=300, tags=["team-b"])
    assert other.vendor == "openai"
    assert counts(sim)["openai"] == 2


def test_a_call_above_its_max_cost_is_refused_before_sending(sim: SimServer) -> None:
    with dispatcher(sim, retry=NO_RETRY) as d:
        with pytest.raises(BudgetExceededError) as caught:
            d.send("Too dear.", "openai:gpt-4o", max_tokens=1000, max_cost=0.0001)
        recs = records(d)
    err = caught.value
    assert err.budget == 0.0001 and err.spent == 0.0
    assert err.estimate is not None and err.estimate > 0.0001
    # The message names the cap and the estimate (nothing is spent within one call before
    # its reservation, so there is no spend to name).
    assert money(0.0001) in str(err) and money(err.estimate) in str(err)
    assert "refused before sending" in str(err)
    assert counts(sim)["openai"] == 0
    assert [(x.status, x.error_class) for x in recs] == [("refused", "BudgetExceededError")]


def test_the_dispatcher_budget_message_says_budget_spend_and_estimate(sim: SimServer) -> None:
    with dispatcher(sim, retry=NO_RETRY, budget=0.005) as d:
        first = d.send("Spend some.", "openai:gpt-4o", max_tokens=300)
        with pytest.raises(BudgetExceededError) as caught:
            d.send("Too much now.", "openai:gpt-4o", max_tokens=300)
    err = caught.value
    assert first.cost.usd is not None and err.spent is not None and err.estimate is not None
    assert abs(err.spent - first.cost.usd) < 1e-9
    for figure in (money(0.005), money(err.spent), money(err.estimate)):
        assert figure in str(err)
    assert counts(sim)["openai"] == 1


def test_max_cost_falls_back_to_a_cheaper_candidate(sim: SimServer) -> None:
    with dispatcher(sim, retry=NO_RETRY) as d:
        r = d.send("Cheaper will do.", "openai:gpt-4o", max_tokens=1000, max_cost=0.002,
                   fallbacks=[MINI])
    assert r.model_requested == "gpt-4o-mini"
    assert [(a.model, a.status) for a in r.attempts] == [("gpt-4o", "refused"),
                                                         ("gpt-4o-mini", "ok")]
    assert [m.model for m in sim.emulators["openai"].requests.chat()] == ["gpt-4o-mini"]
