"""Accounting under a storm: a few hundred concurrent calls (plain and streamed) across the
four emulated vendors, each with a fault rate over most fault kinds, with retries,
fallbacks, a breaker that trips and limits that queue. Every call ends as a Response or a
typed LLMDispatchError; the ledger holds a record for every request the emulators saw
(none lost, none invented); `stats()` agrees with the records and with the emulators.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Iterator

import pytest

from llmdispatch_nb import Dispatcher, Response
from llmdispatch_nb.errors import LLMDispatchError, ServerError
from llmdispatch_nb.resilience import CircuitBreaker, Limit, RetryPolicy
from llmdispatch_nb.sim import Fault, SimServer
from tests._resilience_support import (
    AZURE_MINI,
    FLASH,
    HAIKU,
    MINI,
    counts,
    dispatcher,
    fresh,
    records,
    sent,
    start,
)

FAULTS = (Fault("429", retry_after=0.02), Fault("429-ms", retry_after=0.01), "429-no-retry",
          "429-long", "quota", "408", "500", "503", "529", "401", "400", "context-length",
          "reset", "malformed-json", Fault("midstream-error", after_tokens=2),
          Fault("midstream-disconnect", after_tokens=2), Fault("midstream-error", after_tokens=0))
TARGETS = (MINI, HAIKU, FLASH, AZURE_MINI)


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    with start() as s:
        yield s


@pytest.fixture(autouse=True)
def _fresh(sim: SimServer) -> None:
    fresh(sim)


async def one(d: Dispatcher, i: int) -> Response | BaseException:
    target = TARGETS[i % len(TARGETS)]
    try:
        if i % 3 == 0:
            s = d.astream(f"storm {i}", target, max_tokens=24)
            async for _ in s:
                pass
            assert s.response is not None
            return s.response
        return await d.asend(f"storm {i}", target, max_tokens=24)
    except BaseException as exc:  # what kind it is, is what the test checks
        return exc


def test_a_mixed_fault_run_ends_every_call_typed_and_loses_no_record(sim: SimServer) -> None:
    for n, emu in enumerate(sim.emulators.values()):
        emu.faults.rate(0.25, *FAULTS, seed=n)
    n_calls = 240
    d = dispatcher(
        sim, retry=RetryPolicy(max_attempts=2, base_s=0.005, max_backoff_s=0.02,
                               max_retry_after_s=0.1),
        breaker=CircuitBreaker(cooldown_s=0.05, min_calls=4, window=8, long_retry_after_s=1.0),
        limits={v: Limit(concurrent=8) for v in ("openai", "anthropic", "google", "azure")},
        default_fallbacks=[HAIKU, FLASH, AZURE_MINI, MINI], deadline_s=20.0)
    with d:
        async def main() -> list[Response | BaseException]:
            return await asyncio.gather(*(one(d, i) for i in range(n_calls)))

        out = asyncio.run(main())
        recs = records(d)
        stats = d.stats()
    kinds = Counter(type(r).__name__ for r in out)
    strays = [r for r in out if not isinstance(r, Response | LLMDispatchError)]
    assert not strays, kinds
    answered = [r for r in out if isinstance(r, Response)]
    assert len(answered) > n_calls // 2, kinds  # fallbacks rescue most calls
    # Every request an emulator received has its record, and no record claims a request
    # that was never received.
    by_vendor = Counter(x.vendor for x in sent(recs))
    assert dict(by_vendor) == {v: c for v, c in counts(sim).items() if c}
    # Every call is in the ledger, answered or not; each answer has its ok record.
    assert len({x.call_id for x in recs}) == n_calls
    ok = {x.call_id: x for x in recs if x.status == "ok"}
    assert len(ok) == len(answered)
    for r in answered:
        assert ok[r.call_id].vendor == r.vendor and ok[r.call_id].output_tokens == r.usage.output_tokens
        tried = [a for a in r.attempts if a.status in ("ok", "error", "refused")]
        assert len(tried) == len([x for x in recs if x.call_id == r.call_id])
    assert stats["calls"] == n_calls and stats["successes"] == len(answered)
    assert stats["attempts"] == len(recs)
    assert stats["retries"] > 0 and stats["fallbacks"] > 0


def test_stats_agree_with_the_ledger_and_the_emulators(sim: SimServer) -> None:
    sim.emulators["openai"].faults.script(
        None,                                   # call 1: answered at once
        "500", "500",                           # call 2: retried, then falls back
        Fault("429", retry_after=0.01), None)   # call 3: retried, then answered
    sim.emulators["anthropic"].faults.script(
        None,                                   # call 2's fallback answers
        "500", "500")                           # call 4 (to anthropic): retried, fails
    with dispatcher(sim, retry=RetryPolicy(max_attempts=2, base_s=0.01, jitter=0.0),
                    fallbacks={MINI: [HAIKU]}) as d:
        answers = [d.send(f"stats {i}", MINI, max_tokens=32) for i in range(3)]
        with pytest.raises(ServerError):
            d.send("stats 3", HAIKU, max_tokens=32)
        recs = records(d)
        stats = d.stats()
    total = sum(counts(sim).values())
    assert stats["calls"] == 4 and stats["successes"] == 3 and stats["failures"] == 1
    assert stats["attempts"] == len(recs) == total == 8
    assert stats["ok_attempts"] == 3 and stats["failed_attempts"] == 5
    assert stats["retries"] == sum(x.retried for x in recs) == 3
    assert stats["fallbacks"] == sum(x.fell_back for x in recs) == 1
    assert stats["per_vendor"]["openai"]["attempts"] == counts(sim)["openai"] == 5
    assert stats["per_vendor"]["anthropic"]["attempts"] == counts(sim)["anthropic"] == 3
    assert stats["per_model"][HAIKU]["failures"] == 1
    costs = [r.cost.usd for r in answers]
    assert all(c is not None for c in costs)
    assert math.isclose(stats["cost_usd"], math.fsum(c for c in costs if c is not None))
    assert stats["output_tokens"] == sum(r.usage.output_tokens for r in answers)
    assert stats["latency_s"]["n"] == 3
