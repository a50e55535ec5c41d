"""A circuit breaker per candidate: stop sending to a vendor:model that keeps failing.

    closed ──(failure rate >= threshold over the last `window` outcomes, once there are
    │         at least `min_calls` of them; or at once on a 429 whose Retry-After is
    │         longer than `long_retry_after_s`)──> open
    open ──(the open period passes)──> half_open
    half_open ──(one probe is let through; others are refused until its outcome)──>
              success: closed (the window starts again) · failure: open again

The open period is `cooldown_s` or the server's Retry-After, whichever is longer, and a
new trip never shortens a period already running.

What counts as a failure (the vendor, not the request, is in trouble): server errors
(5xx, 408, 409, 529 overloaded), rate limits and exhausted quotas (429), timeouts,
connection errors, malformed replies and streams that broke. What does not: client
errors such as 400, 401, 403, 404, 422, a prompt too long or a content filter, and a
call that timed out in our own rate limiter's queue without being sent. There the
vendor answered properly and the request (or key) is at fault; they count as a healthy
answer, and they close a half-open circuit like a success would.

A failure that a retry recovers within the same call does not count at all (it is not
weighed less: it is left out). The dispatcher holds a call's failed attempts on a
candidate (`hold`) until the call is done with that candidate, then reports them with its
outcome (`record(..., held=...)`): an answer in the end drops them (counted only in the
`recovered` figure of `snapshot()`), no answer counts every one of them. Why: the retry
policy already absorbed them, so they say the vendor is busy, not down, and opening the
circuit on them turned three 429s that each cost the caller 1.2 s into a 30 s wait for
the next call. A real outage still opens it as quickly as before, since an unrecovered
call brings all its failed attempts. Two failures do not wait for the call's end:
a half-open probe's (its answer decides at once) and a 429 whose Retry-After exceeds
`long_retry_after_s` (the vendor said it is out for a while; other calls should know now).

State changes are lazy (read off the clock when asked), so the breaker needs no timer
task; a lock makes it safe to read from a notebook thread while the loop writes.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import (
    ConfigurationError,
    LLMDispatchError,
    MidStreamError,
    RateLimitError,
    ServerError,
    TransportError,
    VendorError,
)
from .limits import LimitWaitTimeoutError


def shared_breaker(state: Any) -> Any:
    """The team's side of a breaker for `state=` (None: $LLMDISPATCH_STATE), or None."""
    from ..state import resolve_state

    found = resolve_state(state)
    if found is None:
        return None
    from ..state._shared import SharedBreaker

    return SharedBreaker(found)

BreakerState = Literal["closed", "open", "half_open"]


def counts_as_failure(error: LLMDispatchError | None) -> bool:
    """Does this error say the vendor is unwell (rather than the request being wrong)?

    `None` (a failure with no error object) counts as a failure. A deadline that passed
    in our own rate limiter's queue does not: nothing reached the vendor.
    """
    if error is None:
        return True
    if isinstance(error, LimitWaitTimeoutError):
        return False
    if isinstance(error, ServerError | RateLimitError | TransportError | MidStreamError):
        return True
    if isinstance(error, VendorError) and error.status is not None:
        # An error class we do not know, judged by its status.
        return error.status in (408, 409, 429) or error.status >= 500
    return False


@dataclass
class _Circuit:
    outcomes: deque[bool]  # True = failure
    state: BreakerState = "closed"
    open_until: float = 0.0
    probe_since: float | None = None  # a half-open probe is out since then
    trips: int = 0
    last_failure: str | None = None
    in_flight: int = 0  # allowed, not yet recorded or released
    recovered: int = 0  # failures a retry within the same call made good (never counted)
    key: str = ""  # its name, for the team's shared state


class CircuitBreaker:
    """Breakers for many candidates, keyed by "vendor:model" (any string works).

    `probe_timeout_s`: a half-open probe whose outcome never comes back (its call was
    cancelled before `record`, and nobody called `release`) is presumed lost after this
    long, and another probe is allowed, so a circuit can never stay stuck half-open.
    """

    def __init__(self, *, threshold: float = 0.5, min_calls: int = 5, window: int = 20,
                 cooldown_s: float = 30.0, long_retry_after_s: float = 30.0,
                 probe_timeout_s: float = 120.0, max_open_s: float = 900.0,
                 clock: Callable[[], float] = time.monotonic, state: Any = None) -> None:
        if not 0 < threshold <= 1:
            raise ConfigurationError(f"breaker threshold must be in (0, 1], got {threshold!r}")
        if min_calls < 1 or window < 1 or min_calls > window:
            raise ConfigurationError(
                f"breaker needs 1 <= min_calls <= window, got min_calls={min_calls}, window={window}")
        if cooldown_s < 0 or long_retry_after_s < 0 or probe_timeout_s <= 0:
            raise ConfigurationError("breaker times must be positive")
        self.threshold = threshold
        self.min_calls = min_calls
        self.window = window
        self.cooldown_s = cooldown_s
        self.long_retry_after_s = long_retry_after_s
        self.probe_timeout_s = probe_timeout_s
        # A vendor's Retry-After can say a day (Azure, a daily quota): past this the circuit
        # half-opens anyway and one probe asks again, rather than lose the vendor for a session.
        self.max_open_s = max(max_open_s, cooldown_s)
        self.clock = clock
        self._circuits: dict[str, _Circuit] = {}
        self._lock = threading.Lock()
        # Shared with a team (state=, or $LLMDISPATCH_STATE): an open circuit and the
        # half-open probe are the team's (see llmdispatch_nb.state).
        self.shared = shared_breaker(state)

    # -- internals (call with the lock held) ------------------------------------------

    def _get(self, key: str) -> _Circuit:
        c = self._circuits.get(key)
        if c is None:
            c = self._circuits[key] = _Circuit(deque(maxlen=self.window), key=key)
        return c

    def _refresh(self, c: _Circuit, now: float) -> None:
        if c.state == "open" and now >= c.open_until:
            c.state = "half_open"
            c.probe_since = None
        elif (c.state == "half_open" and c.probe_since is not None
              and now - c.probe_since >= self.probe_timeout_s):
            c.probe_since = None  # the probe was lost; let another through

    def _trip(self, c: _Circuit, now: float, error: LLMDispatchError | None) -> None:
        retry_after = getattr(error, "retry_after", None) if error is not None else None
        period = min(max(self.cooldown_s, float(retry_after or 0.0)), self.max_open_s)
        until = now + period
        if c.state != "open":
            c.trips += 1
        c.state = "open"
        # A shorter new period never cuts short one already running.
        c.open_until = max(c.open_until, until)
        c.probe_since = None
        c.outcomes.clear()
        if self.shared is not None:
            self.shared.opened(c.key, c.open_until - now)

    def _long_rate_limit(self, error: LLMDispatchError | None) -> bool:
        if not isinstance(error, RateLimitError):
            return False
        ra = error.retry_after
        return ra is not None and ra > self.long_retry_after_s

    # -- the API the dispatcher calls --------------------------------------------------

    def allow(self, key: str) -> bool:
        """May a call go to `key` now? In half-open, True exactly once (the probe)."""
        team_open = self.shared.open_left_s(key) if self.shared is not None else None
        now = self.clock()
        with self._lock:
            c = self._get(key)
            self._refresh(c, now)
            if team_open and c.state != "open":  # another kernel opened it
                c.state, c.open_until, c.probe_since = "open", now + team_open, None
                c.outcomes.clear()
            if c.state == "closed":
                c.in_flight += 1
                return True
            if c.state == "open":
                return False
            if c.probe_since is not None:
                return False
            if self.shared is not None and not self.shared.take_probe(key, self.probe_timeout_s):
                return False  # another kernel is probing for the team
            c.probe_since = now
            c.in_flight += 1
            return True

    def release(self, key: str) -> None:
        """Give back a half-open probe that was allowed but never sent (no outcome)."""
        with self._lock:
            c = self._circuits.get(key)
            if c is not None:
                c.in_flight = max(0, c.in_flight - 1)
                if c.state == "half_open":
                    c.probe_since = None
                    if self.shared is not None:
                        self.shared.give_back_probe(key)

    def hold(self, key: str, error: LLMDispatchError | None) -> None:
        """An attempt on `key` failed and the call will retry it: its verdict waits for
        the call's outcome on `key` (pass the held errors to `record` then). Gives back
        the attempt's slot; only a half-open probe's failure or a long Retry-After acts
        now (see the module docstring)."""
        now = self.clock()
        failed = counts_as_failure(error)
        with self._lock:
            c = self._get(key)
            c.in_flight = max(0, c.in_flight - 1)
            self._refresh(c, now)
            if not failed:
                if c.state == "half_open":
                    c.probe_since = None  # no news of the vendor's health: free the probe
                return
            c.last_failure = type(error).__name__ if error is not None else "failure"
            if c.state == "half_open" or (c.state == "closed" and self._long_rate_limit(error)):
                self._trip(c, now, error)

    def abandon(self, key: str, held: Iterable[LLMDispatchError | None]) -> None:
        """The call left `key` with failures held and no further outcome (its deadline
        passed, the budget refused the retry, the circuit opened meanwhile): they were
        not recovered, so each failure counts. (A call cancelled by its caller reports
        nothing: whether a retry would have recovered them is not known.)"""
        now = self.clock()
        earlier = [e for e in held if counts_as_failure(e)]
        if not earlier:
            return
        with self._lock:
            c = self._get(key)
            self._refresh(c, now)
            if c.state == "closed":
                c.outcomes.extend([True] * len(earlier))
                self._judge(c, now, earlier[-1])

    def record(self, key: str, ok: bool, error: LLMDispatchError | None = None, *,
               held: Iterable[LLMDispatchError | None] = ()) -> None:
        """Remember how a call to `key` ended. `ok=False` with a client error (400, 401, …)
        counts as a healthy answer: see the module docstring. `held`: the errors of this
        call's earlier attempts on `key` passed to `hold`; an answer drops them (a retry
        recovered them), any other end counts each that is a failure."""
        now = self.clock()
        failed = not ok and counts_as_failure(error)
        earlier = [e for e in held if counts_as_failure(e)]
        with self._lock:
            c = self._get(key)
            c.in_flight = max(0, c.in_flight - 1)
            self._refresh(c, now)
            if ok:
                c.recovered += len(earlier)
            elif earlier and c.state == "closed":
                c.outcomes.extend([True] * len(earlier))
                if not failed:  # the last attempt was the request's fault: judge the rest
                    self._judge(c, now, earlier[-1])
            if failed:
                c.last_failure = type(error).__name__ if error is not None else "failure"
            if c.state == "half_open":
                # Whatever comes back first decides: the probe, or a call that started
                # before the trip and finished after the open period (just as fresh news).
                if failed:
                    self._trip(c, now, error)
                else:
                    c.state = "closed"
                    c.probe_since = None
                    c.outcomes.clear()
                    if self.shared is not None:
                        self.shared.closed(key)
                return
            if c.state == "open":
                # Late results of calls sent before the trip. A success does not close
                # early; a failure with a longer Retry-After extends the period.
                ra = getattr(error, "retry_after", None) if failed and error is not None else None
                if ra is not None:
                    c.open_until = max(c.open_until, now + float(ra))
                return
            c.outcomes.append(failed)
            if not failed:
                return
            if self._long_rate_limit(error):
                self._trip(c, now, error)
                return
            self._judge(c, now, error)

    def _judge(self, c: _Circuit, now: float, error: LLMDispatchError | None) -> None:
        # Calls still in flight count as not failed (yet): failures come back fast and
        # answers slowly, so judging only what has finished would trip a healthy vendor
        # at the start of every concurrent burst.
        n = len(c.outcomes)
        if n >= self.min_calls and sum(c.outcomes) / (n + c.in_flight) >= self.threshold:
            self._trip(c, now, error)

    def trip(self, key: str, seconds: float | None = None) -> None:
        """Open `key` by hand for `seconds` (default the cool-down)."""
        now = self.clock()
        with self._lock:
            c = self._get(key)
            self._refresh(c, now)
            if c.state != "open":
                c.trips += 1
            c.state = "open"
            c.open_until = max(c.open_until, now + (self.cooldown_s if seconds is None else seconds))
            c.probe_since = None
            c.outcomes.clear()
            if self.shared is not None:
                self.shared.opened(key, c.open_until - now)

    def reset(self, key: str | None = None) -> None:
        """Forget `key` (closed, empty window), or every key."""
        with self._lock:
            if key is None:
                self._circuits.clear()
            else:
                self._circuits.pop(key, None)
                if self.shared is not None:
                    self.shared.closed(key)

    # -- reading ----------------------------------------------------------------------

    def state(self, key: str) -> BreakerState:
        now = self.clock()
        with self._lock:
            c = self._circuits.get(key)
            if c is None:
                return "closed"
            self._refresh(c, now)
            return c.state

    def _standing(self, key: str) -> tuple[BreakerState, bool, float]:
        """`key`'s state, whether its half-open probe is out, and the seconds until
        `allow(key)` could say yes (the open time left, or while a probe is out the time
        until it would be presumed lost), all read at one instant."""
        now = self.clock()
        with self._lock:
            c = self._circuits.get(key)
            if c is None:
                return "closed", False, 0.0
            self._refresh(c, now)
            if c.state == "open":
                return "open", False, max(0.0, c.open_until - now)
            if c.state == "half_open" and c.probe_since is not None:
                return "half_open", True, max(0.0, c.probe_since + self.probe_timeout_s - now)
            return c.state, False, 0.0

    def opens_in(self, key: str) -> float:
        """Seconds until `key` turns half-open; 0 when it is not open."""
        state, _, wait = self._standing(key)
        return wait if state == "open" else 0.0

    def wait_s(self, key: str) -> float:
        """Seconds until `allow(key)` could say yes: 0 when closed or a probe is free; the
        open time left; or, while a probe is out, the time until it would be presumed lost."""
        return self._standing(key)[2]

    def refusal(self, key: str) -> str:
        """Why `allow(key)` says no, in words for a trail or an error message."""
        state, probe_out, wait = self._standing(key)
        if state == "open":
            return f"circuit open ({wait:.1f} s left)"
        if probe_out:
            # Its answer decides; the probe timeout is only how long before a lost probe
            # is given up on, not when the circuit turns.
            return (f"circuit half-open with its one probe call out (the probe's answer "
                    f"decides; a lost probe is given up in {wait:.0f} s)")
        return f"circuit {state.replace('_', '-')}"

    def soonest(self, keys: Iterable[str]) -> tuple[str, float]:
        """The key that can be tried first, and in how many seconds (`wait_s`).

        Ties go to the earlier key, so the routing order is kept."""
        best: tuple[str, float] | None = None
        for key in keys:
            w = self.wait_s(key)
            if best is None or w < best[1]:
                best = (key, w)
        if best is None:
            raise ValueError("soonest() needs at least one key")
        return best

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Every known circuit, for display: state, window counts, time to half-open."""
        now = self.clock()
        out: dict[str, dict[str, Any]] = {}
        with self._lock:
            for key, c in sorted(self._circuits.items()):
                self._refresh(c, now)
                n = len(c.outcomes)
                fails = sum(c.outcomes)
                out[key] = {
                    "state": c.state,
                    "calls": n,
                    "failures": fails,
                    "failure_rate": fails / n if n else 0.0,
                    "opens_in": max(0.0, c.open_until - now) if c.state == "open" else 0.0,
                    "probe_out": c.state == "half_open" and c.probe_since is not None,
                    "trips": c.trips,
                    "last_failure": c.last_failure,
                    "recovered": c.recovered,
                }
        return out

    def __repr__(self) -> str:
        snap = self.snapshot()
        opened = [k for k, v in snap.items() if v["state"] != "closed"]
        return (f"CircuitBreaker(threshold={self.threshold:g}, min_calls={self.min_calls}, "
                f"window={self.window}, cooldown_s={self.cooldown_s:g}, "
                f"not_closed={opened})")
