"""Client-side limits: requests per minute, tokens per minute and calls at once, per key.

A key is whatever the dispatcher names: a vendor ("openai") or a candidate
("openai:gpt-4o"). A call asks for a slot on all its keys at once and gets one only when
every key has room, so a vendor-wide and a model-level limit hold together.

Fairness: waiters queue first come, first served, per key. A call is only served when it
is first in line on every key it needs, so a large request at the head is not overtaken
by a stream of small ones (no starvation); it also means a call waits behind earlier
calls on a shared key even when its own other keys are free. Because every call joins
all its queues at one instant, the order is the same in every queue and two calls can
never wait for each other.

Rates are token buckets that refill continuously (a limit of 60 a minute gives one
request back every second, up to 60 saved). A request larger than a whole minute's token
allowance waits for a full bucket and then overdraws it, so later calls pay the debt.
`Lease.settle(actual)` corrects the tokens taken to what the vendor reported.

A caller that wants to show a wait passes `on_wait(seconds, reason)`: called when the
call first has to wait (`seconds` until the rates allow it, None when only a release can
tell, as for a concurrency slot or calls queued ahead), and once more with
`reason=None` when the wait ends, however it ends.

One limiter serves calls from several threads and event loops at once (async callers'
calls run on their own loops, sync ones on the dispatcher's): its state changes under a
lock, never held across an await, and a waiter is woken on its own loop.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigurationError, VendorTimeoutError

_EPS = 1e-9

# on_wait(seconds or None, reason) when a wait starts; on_wait(None, None) when it ends.
OnWait = Callable[[float | None, str | None], None]


def shared_limiter(state: Any) -> Any:
    """The team's side of a limiter for `state=` (None: $LLMDISPATCH_STATE), or None."""
    from ..state import resolve_state

    found = resolve_state(state)
    if found is None:
        return None
    from ..state._shared import SharedLimiter

    return SharedLimiter(found)


class LimitWaitTimeoutError(VendorTimeoutError):
    """The call's deadline passed while it waited for a client-side limit; nothing was sent.

    A `VendorTimeoutError` (to the caller it is the same thing: no answer in time), set
    apart so the circuit breaker does not blame the vendor for our own queue."""

    retryable = False


@dataclass(frozen=True)
class Limit:
    """Limits for one key; None means no limit of that kind."""

    rpm: float | None = None  # requests per minute
    tpm: float | None = None  # tokens (in + out) per minute
    concurrent: int | None = None  # calls in flight at once

    def __post_init__(self) -> None:
        for name in ("rpm", "tpm"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise ConfigurationError(f"Limit {name} must be above 0 (or None for no limit), got {v!r}")
        if self.concurrent is not None and (not isinstance(self.concurrent, int) or self.concurrent < 1):
            raise ConfigurationError(
                f"Limit concurrent must be a whole number >= 1 (or None), got {self.concurrent!r}")


class _Bucket:
    __slots__ = ("capacity", "last", "level", "rate")

    def __init__(self, per_minute: float, now: float) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.level = self.capacity
        self.last = now

    def refill(self, now: float) -> None:
        if now > self.last:
            self.level = min(self.capacity, self.level + (now - self.last) * self.rate)
            self.last = now

    def wait_for(self, need: float, now: float) -> float:
        if need <= 0:
            return 0.0
        self.refill(now)
        need = min(need, self.capacity)
        if self.level >= need - _EPS:
            return 0.0
        return (need - self.level) / self.rate


def _rebucket(old: _Bucket | None, per_minute: float | None, now: float) -> _Bucket | None:
    if per_minute is None:
        return None
    new = _Bucket(per_minute, now)
    if old is not None:
        old.refill(now)
        new.level = min(new.capacity, old.level)
    return new


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class _Waiter:
    """A call waiting for room. `wake` may come from any thread (a call on another loop
    releasing its slot); the waiter sleeps on a future of its own loop."""

    __slots__ = ("fut", "loop", "thread", "tokens")

    def __init__(self, tokens: int) -> None:
        self.tokens = tokens
        self.loop = asyncio.get_running_loop()
        self.thread = threading.get_ident()
        self.fut: asyncio.Future[None] | None = None

    def wake(self) -> None:
        fut = self.fut
        if fut is None or fut.done():
            return
        if threading.get_ident() == self.thread:
            fut.set_result(None)
            return
        try:
            self.loop.call_soon_threadsafe(_resolve, fut)
        except RuntimeError:  # its loop has closed: nobody is waiting any more
            pass


class _KeyState:
    __slots__ = ("in_flight", "key", "limit", "queue", "rpm", "tpm")

    def __init__(self, key: str, limit: Limit, now: float) -> None:
        self.key = key
        self.limit = limit
        self.rpm = _Bucket(limit.rpm, now) if limit.rpm is not None else None
        self.tpm = _Bucket(limit.tpm, now) if limit.tpm is not None else None
        self.in_flight = 0
        self.queue: deque[_Waiter] = deque()

    def wake_head(self) -> None:
        if self.queue:
            self.queue[0].wake()

    def why_full(self, tokens: int, now: float, ahead: int) -> str:
        if ahead:
            return f"{ahead} earlier call(s) waiting"
        c = self.limit.concurrent
        if c is not None and self.in_flight >= c:
            return f"all {c} concurrent slot(s) in use"
        if self.rpm is not None and self.rpm.wait_for(1, now) > 0:
            return f"{self.limit.rpm:g} requests per minute used"
        if self.tpm is not None:
            self.tpm.refill(now)
            return (f"needs {tokens} tokens, {max(0, int(self.tpm.level))} of "
                    f"{self.limit.tpm:g} per minute left")
        return "no room"


class Lease:
    """A granted slot. Leaving `RateLimiter.slot` frees the concurrency; `settle` fixes
    the tokens counted against tokens-per-minute to what was really used."""

    __slots__ = ("_limiter", "_released", "_states", "shared", "tokens")

    def __init__(self, limiter: RateLimiter, states: tuple[_KeyState, ...], tokens: int) -> None:
        self._limiter = limiter
        self._states = states
        self.tokens = tokens
        self._released = False
        self.shared: Any = None  # the team's slot, when the limiter is shared

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(s.key for s in self._states)

    def settle(self, actual_tokens: int) -> None:
        """Count `actual_tokens` instead of the estimate (a refund or an extra charge)."""
        delta = self.tokens - actual_tokens
        self.tokens = actual_tokens
        if not delta or not self._states:
            return
        if self.shared is not None:
            self.shared.settle(delta)
        with self._limiter._lock:
            now = self._limiter.clock()
            for s in self._states:
                if s.tpm is not None:
                    s.tpm.refill(now)
                    s.tpm.level = min(s.tpm.capacity, s.tpm.level + delta)
                    s.wake_head()

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        if self.shared is not None:
            self.shared.release()
        if not self._states:
            return
        with self._limiter._lock:
            for s in self._states:
                if s.limit.concurrent is not None:
                    s.in_flight -= 1
                    s.wake_head()


class RateLimiter:
    """Per-key limits; `async with limiter.slot(keys, tokens, deadline) as lease: ...`.

    `clock` and `sleep` are injectable for tests (`deadline` is on `clock`, which is
    `time.monotonic` by default, the same clock as the dispatcher's deadlines).
    """

    def __init__(self, limits: Mapping[str, Limit] | None = None, *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
                 state: Any = None) -> None:
        self.clock = clock
        self._sleep = sleep
        # Shared with a team (state=, or $LLMDISPATCH_STATE): a call takes room here,
        # then in the team's buckets and slots (see llmdispatch_nb.state).
        self.shared = shared_limiter(state)
        self._lock = threading.RLock()
        self._states: dict[str, _KeyState] = {}
        for key, limit in (limits or {}).items():
            self.set_limit(key, limit)

    def set_limit(self, key: str, limit: Limit | None) -> None:
        """Limit `key` (None removes its limit). Calls in flight and waiting still count."""
        with self._lock:
            self._set_limit(key, limit)

    def _set_limit(self, key: str, limit: Limit | None) -> None:
        now = self.clock()
        s = self._states.get(key)
        if s is None:
            if limit is not None:
                self._states[key] = _KeyState(key, limit, now)
            return
        if limit is None:
            # Calls already waiting hold this state; unlimited, it lets them through in order.
            del self._states[key]
            limit = Limit()
        s.limit = limit
        s.rpm = _rebucket(s.rpm, limit.rpm, now)
        s.tpm = _rebucket(s.tpm, limit.tpm, now)
        s.wake_head()

    @property
    def limits(self) -> dict[str, Limit]:
        return {k: s.limit for k, s in self._states.items()}

    @asynccontextmanager
    async def slot(self, keys: Sequence[str], tokens: int = 0, deadline: float | None = None,
                   on_wait: OnWait | None = None) -> AsyncIterator[Lease]:
        lease = await self.acquire(keys, tokens, deadline, on_wait)
        try:
            yield lease
        finally:
            lease.release()

    async def acquire(self, keys: Sequence[str], tokens: int = 0,
                      deadline: float | None = None, on_wait: OnWait | None = None) -> Lease:
        """Wait for room on every limited key in `keys`; call `lease.release()` after.

        Raises `LimitWaitTimeoutError` (a `VendorTimeoutError`) when `deadline` (on
        `self.clock`) passes first. Its `retryable` is False: the call's own deadline is
        what ran out.
        """
        lease = await self._acquire_here(keys, tokens, deadline, on_wait)
        if self.shared is not None and lease._states:
            states = lease._states
            try:
                lease.shared = await self.shared.acquire(
                    [(s.key, s.limit) for s in states], tokens, deadline, self.clock,
                    lambda: LimitWaitTimeoutError(
                        "the call's deadline passed while waiting for the team's shared "
                        "limit (" + ", ".join(s.key for s in states) + "); nothing was sent. "
                        "Raise the limit or the deadline", vendor=states[0].key.partition(":")[0]))
            except BaseException:
                lease.release()
                raise
        return lease

    async def _acquire_here(self, keys: Sequence[str], tokens: int, deadline: float | None,
                            on_wait: OnWait | None) -> Lease:
        got = self._states.get
        states = tuple(s for k in dict.fromkeys(keys) if (s := got(k)) is not None)
        if not states:
            return Lease(self, (), tokens)
        with self._lock:
            now = self.clock()
            if not any(s.queue for s in states) and self._room(states, tokens, now) == 0.0:
                self._take(states, tokens)
                return Lease(self, states, tokens)
            w = _Waiter(tokens)
            for s in states:
                s.queue.append(w)
        told: str | None = None  # what on_wait was told
        try:
            while True:
                with self._lock:
                    now = self.clock()
                    wait: float | None = None
                    if all(s.queue[0] is w for s in states):
                        wait = self._room(states, tokens, now)
                        if wait == 0.0:
                            self._take(states, tokens)
                            return Lease(self, states, tokens)
                    if on_wait is not None and told is None:
                        told = self._why_waiting(states, w, tokens, now)
                        on_wait(wait, told)
                    if deadline is not None:
                        left = deadline - now
                        if left <= 0:
                            raise self._gave_up(states, w, tokens, now)
                        wait = left if wait is None else min(wait, left)
                    # A wake from now on (any thread) resolves this future.
                    w.fut = fut = w.loop.create_future()
                await self._wait(fut, wait)
        finally:
            if told is not None and on_wait is not None:
                on_wait(None, None)
            with self._lock:
                w.fut = None
                for s in states:
                    if s.queue and s.queue[0] is w:
                        s.queue.popleft()
                    else:
                        try:
                            s.queue.remove(w)
                        except ValueError:  # the key's limit was removed meanwhile
                            pass
                    s.wake_head()

    # -- internals --------------------------------------------------------------------

    @staticmethod
    def _room(states: tuple[_KeyState, ...], tokens: int, now: float) -> float | None:
        """0 when every key has room now; else seconds until the buckets refill, or None
        when a concurrency slot must be freed first (only a release can tell when)."""
        wait = 0.0
        for s in states:
            c = s.limit.concurrent
            if c is not None and s.in_flight >= c:
                return None
            if s.rpm is not None:
                wait = max(wait, s.rpm.wait_for(1, now))
            if s.tpm is not None:
                wait = max(wait, s.tpm.wait_for(tokens, now))
        return wait

    @staticmethod
    def _take(states: tuple[_KeyState, ...], tokens: int) -> None:
        for s in states:
            if s.limit.concurrent is not None:
                s.in_flight += 1
            if s.rpm is not None:
                s.rpm.level -= 1
            if s.tpm is not None:
                s.tpm.level -= tokens

    async def _wait(self, woken: asyncio.Future[None], timeout: float | None) -> None:
        if timeout is None:
            await woken
            return
        if woken.done():
            return
        if self._sleep is asyncio.sleep:
            # A timer that resolves the same future: a sleeping task and asyncio.wait per
            # waiting call were a tenth of a 2,000-call fan-out's CPU.
            timer = woken.get_loop().call_later(timeout, _resolve, woken)
            try:
                await woken
            finally:
                timer.cancel()
            return
        slept = asyncio.ensure_future(self._sleep(timeout))
        try:
            await asyncio.wait((woken, slept), return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()
            slept.cancel()

    def _why_waiting(self, states: tuple[_KeyState, ...], w: _Waiter, tokens: int,
                     now: float) -> str:
        reasons = []
        for s in states:
            ahead = s.queue.index(w) if w in s.queue else 0
            if ahead or self._room((s,), tokens, now) != 0.0:
                reasons.append(f"{s.key}: {s.why_full(tokens, now, ahead)}")
        return "; ".join(reasons or ["no room"])

    def _gave_up(self, states: tuple[_KeyState, ...], w: _Waiter, tokens: int,
                 now: float) -> LimitWaitTimeoutError:
        vendor = states[0].key.partition(":")[0]
        return LimitWaitTimeoutError(
            "the call's deadline passed while waiting for a client-side limit slot ("
            + self._why_waiting(states, w, tokens, now)
            + "); nothing was sent. Raise the limit or the deadline", vendor=vendor)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Per key: calls in flight, what is left of each rate, how many wait."""
        with self._lock:
            return self._snapshot()

    def _snapshot(self) -> dict[str, dict[str, Any]]:
        now = self.clock()
        out: dict[str, dict[str, Any]] = {}
        for key, s in sorted(self._states.items()):
            if s.rpm is not None:
                s.rpm.refill(now)
            if s.tpm is not None:
                s.tpm.refill(now)
            out[key] = {
                "in_flight": s.in_flight,
                "concurrent": s.limit.concurrent,
                "requests_left": None if s.rpm is None else s.rpm.level,
                "tokens_left": None if s.tpm is None else s.tpm.level,
                "waiting": len(s.queue),
            }
        return out

    def __repr__(self) -> str:
        return f"RateLimiter({', '.join(f'{k}={v}' for k, v in sorted(self.limits.items())) or 'no limits'})"
