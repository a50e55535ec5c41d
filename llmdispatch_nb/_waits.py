"""Waits a caller can see: a Retry-After or backoff before a retry, a circuit to half-open,
a client-side limit slot.

A wait of `WAIT_NOTICE_S` or more is announced as a `Waiting` event (what for, how long)
on the call's stream, to its `on_wait` callback (for `send`, which has no stream), and as
an INFO line on the "llmdispatch_nb" logger (scripts see it with logging at INFO); a
`Waiting` with `seconds=0` follows when the call goes on. Shorter waits pass silently: a
status line that flickers for half a second says nothing. A wait is an `asyncio.sleep`,
so cancelling the call (Ctrl-C, the kernel's interrupt, `Stream.close`) ends it at once;
the dispatcher records the attempt that never went out as cancelled. The reasons a wait
gives (`retry_reason`, `breaker_reason`) are worded here, beside the waits that show them.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Literal

from ._call import CallState
from ._types import Waiting

if TYPE_CHECKING:
    from .errors import LLMDispatchError
    from .resilience import CircuitBreaker

WAIT_NOTICE_S = 2.0

_log = logging.getLogger("llmdispatch_nb")

Cause = Literal["retry", "breaker", "limit"]


def announce(call: CallState, waiting: Waiting) -> None:
    """Tell the caller, whichever way it listens."""
    if call.sink is not None:
        call.sink.send(waiting)
    if call.opts.on_wait is not None:
        try:
            call.opts.on_wait(waiting)
        except Exception as exc:  # the caller's display must not break the call
            _log.warning("an on_wait callback raised %s: %s; the call goes on",
                         type(exc).__name__, exc)
    _log.info("%s (call %s)", waiting.describe(), call.call_id)


async def pause(call: CallState, seconds: float, cause: Cause, target: str,
                reason: str) -> None:
    """Sleep `seconds`, announced when long enough to be noticed."""
    shown = seconds >= WAIT_NOTICE_S
    if shown:
        announce(call, Waiting(cause, target, reason, seconds))
    await asyncio.sleep(seconds)
    if shown:
        announce(call, Waiting(cause, target, reason, 0.0))


class LimitNotice:
    """The limiter's `on_wait`: a wait it can time (a rate refilling) is announced at once
    when long enough; one it cannot (a concurrency slot, calls queued ahead) once it has
    lasted `WAIT_NOTICE_S`. The limiter calls it again with no reason when the wait ends."""

    def __init__(self, call: CallState, target: str) -> None:
        self.call = call
        self.target = target
        self._timer: asyncio.TimerHandle | None = None
        self._shown: Waiting | None = None

    def __call__(self, seconds: float | None, reason: str | None) -> None:
        if reason is None:  # the wait is over, however it ended
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self._shown is not None:
                announce(self.call, Waiting("limit", self.target, self._shown.reason, 0.0))
                self._shown = None
            return
        waiting = Waiting("limit", self.target, f"client-side limit: {reason}", seconds)
        if seconds is not None:
            if seconds >= WAIT_NOTICE_S:
                self._show(waiting)
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(
                WAIT_NOTICE_S, self._show, waiting)

    def _show(self, waiting: Waiting) -> None:
        self._timer = None
        self._shown = waiting
        announce(self.call, waiting)


def retry_reason(exc: LLMDispatchError) -> str:
    """Why a retry waits, for a status line: the vendor's Retry-After, or our backoff."""
    status = getattr(exc, "status", None)
    what = f"{status} {type(exc).__name__}" if status else type(exc).__name__
    if getattr(exc, "retry_after", None) is not None:
        return f"the vendor asked for this wait (Retry-After on a {what})"
    return f"backing off before retrying a {what}"


def breaker_reason(breaker: CircuitBreaker, key: str) -> str:
    """Why a call waits for `key`'s circuit, in words that stay true as the wait counts down."""
    last = breaker.snapshot().get(key, {}).get("last_failure")
    if breaker.state(key) == "open":
        return "its circuit breaker is open after repeated failures" + (
            f" ({last})" if last else "")
    return "its circuit is half-open, with its one probe call out"
