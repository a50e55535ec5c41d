"""RateLimiter: rpm, tpm and concurrency limits, FIFO fairness and deadlines.

Time is virtual: the limiter gets a clock and a sleep from `VirtualTime`, which moves the
clock to the next sleeper's wake-up time whenever every task is blocked. Assertions on
times are exact and cost no real waiting.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from llmdispatch_nb.errors import ConfigurationError, VendorTimeoutError
from llmdispatch_nb.resilience import CircuitBreaker, Limit, LimitWaitTimeoutError, RateLimiter

T = TypeVar("T")


class VirtualTime:
    def __init__(self) -> None:
        self.t = 0.0
        self._heap: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = 0

    def __call__(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._seq += 1
        heapq.heappush(self._heap, (self.t + max(0.0, seconds), self._seq, fut))
        await fut

    async def _settle(self) -> None:
        for _ in range(50):  # let every runnable task run until all are blocked
            await asyncio.sleep(0)

    async def run(self, *coros: Awaitable[T]) -> list[T | BaseException]:
        """Run `coros` together to the end, advancing time only when all are blocked."""
        tasks = [asyncio.ensure_future(c) for c in coros]
        while True:
            await self._settle()
            if all(t.done() for t in tasks):
                break
            while self._heap and self._heap[0][2].done():
                heapq.heappop(self._heap)  # a sleep that was cancelled
            if not self._heap:
                for t in tasks:
                    t.cancel()
                raise AssertionError("deadlock: every task waits and no sleep is pending")
            when, _, fut = heapq.heappop(self._heap)
            self.t = max(self.t, when)
            fut.set_result(None)
        return [t.exception() or t.result() for t in tasks]


def run(main: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(main())  # type: ignore[arg-type]


def make(limits: dict[str, Limit]) -> tuple[RateLimiter, VirtualTime]:
    vt = VirtualTime()
    return RateLimiter(limits, clock=vt, sleep=vt.sleep), vt


# -- concurrency -------------------------------------------------------------------------


def test_concurrency_limit_and_fifo_order() -> None:
    limiter, vt = make({"openai": Limit(concurrent=2)})
    started: list[tuple[int, float]] = []
    in_flight = 0
    peak = 0

    async def call(i: int) -> None:
        nonlocal in_flight, peak
        async with limiter.slot(["openai", "openai:gpt-4o"], tokens=10):
            in_flight += 1
            peak = max(peak, in_flight)
            started.append((i, vt.t))
            await vt.sleep(10)
            in_flight -= 1

    async def main() -> None:
        await vt.run(*(call(i) for i in range(5)))

    run(main)
    assert started == [(0, 0.0), (1, 0.0), (2, 10.0), (3, 10.0), (4, 20.0)]
    assert peak == 2
    assert limiter.snapshot()["openai"]["in_flight"] == 0


def test_unlimited_keys_never_wait() -> None:
    limiter, vt = make({"anthropic": Limit(concurrent=1)})

    async def main() -> list[float]:
        async def call() -> float:
            async with limiter.slot(["openai", "openai", "openai:gpt-4o"], tokens=10**9) as lease:
                assert lease.keys == ()
                await vt.sleep(5)
                return vt.t - 5
        return await vt.run(*(call() for _ in range(10)))  # type: ignore[return-value]

    assert run(main) == [0.0] * 10


# -- rates -------------------------------------------------------------------------------


def test_requests_per_minute_refill_continuously() -> None:
    limiter, vt = make({"openai": Limit(rpm=2)})  # one request back every 30 s
    times: list[float] = []

    async def call() -> None:
        async with limiter.slot(["openai"]):
            times.append(vt.t)

    async def main() -> None:
        await vt.run(*(call() for _ in range(5)))

    run(main)
    assert times == [0.0, 0.0, 30.0, 60.0, 90.0]


def test_tokens_per_minute() -> None:
    limiter, vt = make({"openai:gpt-4o": Limit(tpm=1000)})
    served: list[tuple[int, float]] = []

    async def call(tokens: int) -> None:
        async with limiter.slot(["openai:gpt-4o"], tokens=tokens):
            served.append((tokens, vt.t))

    async def main() -> None:
        await vt.run(call(600), call(300), call(500))

    run(main)
    # 100 tokens left after two calls; 400 more at 1000/60 a second take 24 s.
    assert served == [(600, 0.0), (300, 0.0), (500, pytest.approx(24.0))]


def test_big_request_is_not_starved_by_later_small_ones() -> None:
    limiter, vt = make({"openai": Limit(tpm=1000)})
    order: list[str] = []

    async def call(name: str, tokens: int) -> float:
        async with limiter.slot(["openai"], tokens=tokens):
            order.append(name)
            return vt.t

    async def main() -> list[Any]:
        # Every small call would fit in the 500 tokens left at once; FIFO makes them wait.
        return await vt.run(call("A", 500), call("B-big", 900), call("C", 100), call("D", 100),
                            call("E", 100))

    times = run(main)
    assert order == ["A", "B-big", "C", "D", "E"]
    assert times == [0.0, pytest.approx(24.0), pytest.approx(30.0), pytest.approx(36.0),
                     pytest.approx(42.0)]


def test_request_larger_than_the_minute_waits_for_a_full_bucket_and_overdraws() -> None:
    limiter, vt = make({"openai": Limit(tpm=600)})  # 10 tokens a second
    served: list[float] = []

    async def call(tokens: int) -> None:
        async with limiter.slot(["openai"], tokens=tokens):
            served.append(vt.t)

    async def main() -> None:
        await vt.run(call(300), call(1200), call(100))

    run(main)
    # 1200 > 600: waits for the bucket to be full again (30 s), takes it to -600,
    # so the next 100 tokens wait 70 s more.
    assert served == [0.0, pytest.approx(30.0), pytest.approx(100.0)]


def test_settle_refunds_unused_tokens() -> None:
    limiter, vt = make({"openai": Limit(tpm=1000)})
    served: list[float] = []

    async def first() -> None:
        async with limiter.slot(["openai"], tokens=1000) as lease:
            await vt.sleep(1)
            lease.settle(100)  # the answer was short
            served.append(vt.t)

    async def second() -> None:
        async with limiter.slot(["openai"], tokens=800):
            served.append(vt.t)

    async def main() -> None:
        await vt.run(first(), second())

    run(main)
    # Without the refund the 800 tokens would wait until t=48; with it, at t=1.
    assert served == [1.0, 1.0]


def test_settle_charges_tokens_used_beyond_the_estimate() -> None:
    limiter, vt = make({"openai": Limit(tpm=600)})

    async def main() -> list[Any]:
        async def first() -> float:
            async with limiter.slot(["openai"], tokens=100) as lease:
                lease.settle(600)
            return vt.t

        async def second() -> float:
            await vt.sleep(1)
            async with limiter.slot(["openai"], tokens=100):
                return vt.t

        return await vt.run(first(), second())

    assert run(main) == [0.0, pytest.approx(10.0)]  # bucket at 0 after the charge


# -- several keys at once ----------------------------------------------------------------


def test_vendor_and_model_limits_hold_together() -> None:
    limiter, vt = make({"openai": Limit(concurrent=2), "openai:gpt-4o": Limit(concurrent=1)})
    started: dict[str, float] = {}

    async def call(name: str, model: str) -> None:
        async with limiter.slot(["openai", f"openai:{model}"]):
            started[name] = vt.t
            await vt.sleep(10)

    async def main() -> None:
        await vt.run(call("A", "gpt-4o"), call("C", "gpt-4o-mini"), call("B", "gpt-4o"),
                     call("D", "gpt-4o-mini"))

    run(main)
    assert started == {"A": 0.0, "C": 0.0, "B": 10.0, "D": 10.0}


# -- deadlines ---------------------------------------------------------------------------


def test_deadline_gives_up_with_a_typed_error_and_frees_the_queue() -> None:
    limiter, vt = make({"openai": Limit(concurrent=1)})
    log: list[tuple[str, float]] = []

    async def holder() -> None:
        async with limiter.slot(["openai"]):
            log.append(("A", vt.t))
            await vt.sleep(100)

    async def impatient() -> None:
        async with limiter.slot(["openai"], deadline=5.0):
            log.append(("B", vt.t))

    async def patient() -> None:
        async with limiter.slot(["openai"], deadline=1000.0):
            log.append(("C", vt.t))

    async def main() -> list[Any]:
        return await vt.run(holder(), impatient(), patient())

    results = run(main)
    err = results[1]
    assert isinstance(err, VendorTimeoutError) and isinstance(err, LimitWaitTimeoutError)
    assert err.vendor == "openai"
    assert not err.retryable
    assert "client-side limit" in str(err) and "deadline" in str(err)
    assert "concurrent" in str(err) and "nothing was sent" in str(err)
    assert log == [("A", 0.0), ("C", 100.0)]
    assert limiter.snapshot()["openai"]["waiting"] == 0
    # Our own queue timing out is no reason to stop sending to the vendor.
    breaker = CircuitBreaker(min_calls=1)
    breaker.record("openai:gpt-4o", False, err)
    assert breaker.state("openai:gpt-4o") == "closed"


def test_deadline_while_waiting_for_the_rate() -> None:
    limiter, vt = make({"google:gemini-2.5-flash": Limit(rpm=1)})

    async def main() -> list[Any]:
        async def call(deadline: float) -> float:
            async with limiter.slot(["google:gemini-2.5-flash"], deadline=deadline):
                return vt.t
        return await vt.run(call(10.0), call(10.0), call(61.0))

    first, second, third = run(main)
    assert first == 0.0
    assert isinstance(second, VendorTimeoutError)
    assert "requests per minute" in str(second)
    assert third == pytest.approx(60.0)


def test_deadline_already_past_fails_without_waiting() -> None:
    limiter, vt = make({"openai": Limit(concurrent=1)})

    async def main() -> list[Any]:
        async def hold() -> None:
            async with limiter.slot(["openai"]):
                await vt.sleep(5)

        async def late() -> None:
            async with limiter.slot(["openai"], deadline=-1.0):
                pass

        return await vt.run(hold(), late())

    _, err = run(main)
    assert isinstance(err, VendorTimeoutError)
    assert vt.t == 5.0


# -- cancellation and changes ------------------------------------------------------------


def test_a_cancelled_waiter_leaves_the_queue() -> None:
    limiter, vt = make({"openai": Limit(concurrent=1)})
    log: list[tuple[str, float]] = []

    async def main() -> None:
        async def call(name: str, hold: float) -> None:
            async with limiter.slot(["openai"]):
                log.append((name, vt.t))
                await vt.sleep(hold)

        a = asyncio.ensure_future(call("A", 10))
        b = asyncio.ensure_future(call("B", 10))
        c = asyncio.ensure_future(call("C", 10))
        await asyncio.sleep(0)
        b.cancel()
        await vt.run(a, c)
        assert b.cancelled()

    run(main)
    assert log == [("A", 0.0), ("C", 10.0)]


def test_raising_a_limit_wakes_waiters() -> None:
    limiter, vt = make({"openai": Limit(concurrent=1)})
    log: list[tuple[str, float]] = []

    async def main() -> None:
        async def call(name: str) -> None:
            async with limiter.slot(["openai"]):
                log.append((name, vt.t))
                await vt.sleep(10)

        async def raise_limit() -> None:
            await vt.sleep(2)
            limiter.set_limit("openai", Limit(concurrent=3))

        await vt.run(call("A"), call("B"), call("C"), raise_limit())

    run(main)
    assert log == [("A", 0.0), ("B", 2.0), ("C", 2.0)]


def test_removing_a_limit_lets_waiters_through_in_order() -> None:
    limiter, vt = make({"openai": Limit(concurrent=1)})
    log: list[str] = []

    async def main() -> None:
        async def call(name: str) -> None:
            async with limiter.slot(["openai"]):
                log.append(name)
                await vt.sleep(10)

        async def lift() -> None:
            await vt.sleep(1)
            limiter.set_limit("openai", None)

        await vt.run(call("A"), call("B"), call("C"), lift())
        assert vt.t == 11.0

    run(main)
    assert log == ["A", "B", "C"]
    assert limiter.limits == {}


def test_works_on_the_real_clock() -> None:
    limiter = RateLimiter({"openai": Limit(concurrent=2, rpm=1000, tpm=10**6)})

    async def main() -> int:
        peak = 0
        now = 0

        async def call() -> None:
            nonlocal peak, now
            async with limiter.slot(["openai"], tokens=50, deadline=None):
                now += 1
                peak = max(peak, now)
                await asyncio.sleep(0)
                now -= 1

        await asyncio.gather(*(call() for _ in range(20)))
        return peak

    assert run(main) == 2
    snap = limiter.snapshot()["openai"]
    assert snap["in_flight"] == 0 and snap["waiting"] == 0
    assert snap["requests_left"] < 1000 and snap["tokens_left"] < 10**6


@pytest.mark.parametrize("kwargs", [{"rpm": 0}, {"tpm": -5}, {"concurrent": 0}, {"concurrent": 1.5}])
def test_bad_limits_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError):
        Limit(**kwargs)  # type: ignore[arg-type]
