"""Where limits, breakers and budgets keep their state: in this process (the default) or
in Redis, shared by a team's kernels.

    LLMDISPATCH_STATE=redis://cache.internal:6379/0    # every Budget, CircuitBreaker and
    LLMDISPATCH_TEAM=nlp                               # RateLimiter made after this shares
                                                       # its state with the team "nlp"
    Budget(5.0, state=RedisState("redis://...", team="nlp", user="ana"))   # or by hand
    Budget(5.0, state=False)                           # this one stays local

The same `Limit`, `CircuitBreaker` and `Budget` objects: each keeps its local state as
before and asks Redis as well, one atomic script a decision (see `_shared.py`). What is
shared: a budget's spending and reservations (the whole, per tag, per user), a breaker's
open circuits and its half-open probe, a limiter's request and token buckets and its
concurrency slots. Reservations and slots carry an expiry, so a kernel that dies holding
them does not hold them for ever.

When Redis cannot be reached the policy is explicit (`unreachable=`, or
$LLMDISPATCH_STATE_UNREACHABLE): "local" (the default) goes on with this kernel's own
limits and logs a warning, once, and again when Redis answers; "refuse" refuses calls
with `SharedStateUnavailableError` until it answers. redis is imported only when a Redis
state is made.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from ._redis import RedisState, SharedStateUnavailableError

__all__ = ["RedisState", "SharedStateUnavailableError", "configured_state", "resolve_state"]

_shared: dict[str, RedisState] = {}
_lock = threading.Lock()


def state_for(url: str) -> RedisState:
    """This process's RedisState for `url` (one per URL, so its scripts load once)."""
    with _lock:
        state = _shared.get(url)
        if state is None:
            state = _shared[url] = RedisState(url)
        return state


def configured_state() -> RedisState | None:
    """The Redis state $LLMDISPATCH_STATE names, or None (local state)."""
    url = os.environ.get("LLMDISPATCH_STATE", "").strip()
    if not url or url.lower() in ("local", "off", "none"):
        return None
    return state_for(url)


def resolve_state(state: Any) -> RedisState | None:
    """What a `state=` argument means: None, the environment's; False, local; a URL or a
    RedisState, that one."""
    if state is None:
        return configured_state()
    if state is False:
        return None
    if isinstance(state, str):
        return state_for(state)
    if isinstance(state, RedisState):
        return state
    raise TypeError(f"state= takes a RedisState, a redis:// URL, False or None; "
                    f"got {type(state).__name__}")
