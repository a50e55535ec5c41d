"""`RedisState`: one Redis connection pool, a team's key prefix, and the policy for when
Redis cannot be reached.

Every shared decision goes through `RedisState.run(script, keys, args)`: one EVALSHA, one
round trip. A connection error or timeout there is the unreachable policy's to answer:
"local" returns None (the caller decides on its own state alone) and warns once per
outage; "refuse" raises `SharedStateUnavailableError`.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from typing import Any

from ..errors import LLMDispatchError

log = logging.getLogger("llmdispatch_nb.state")

POLICIES = ("local", "refuse")


class SharedStateUnavailableError(LLMDispatchError):
    """Redis holds the team's limits and budget, cannot be reached, and the policy is
    "refuse": nothing was sent."""


def shown_url(url: str) -> str:
    return re.sub(r"^(\w+://[^:/@]*):[^@]*@", r"\1:***@", url.split("?", 1)[0])


class RedisState:
    """A team's shared state in Redis. `team` prefixes every key (so teams, and tests,
    can share one server); `user` is whose spending a budget counts per person, and
    `user_limit_usd` caps it; `reservation_ttl_s` and `lease_ttl_s` are how long a
    budget reservation and a concurrency slot outlive a kernel that died holding them
    (longer than any call's deadline, or a long call's reservation lapses early)."""

    def __init__(self, url: str, *, team: str | None = None, user: str | None = None,
                 unreachable: str | None = None, user_limit_usd: float | None = None,
                 reservation_ttl_s: float = 900.0, lease_ttl_s: float = 600.0,
                 timeout_s: float = 2.0) -> None:
        try:
            import redis
        except ImportError as exc:
            raise LLMDispatchError("shared state in Redis needs the redis client: pip install "
                                   "redis (or llmdispatch-nb[team])") from exc
        from ..ledger._postgres import default_user

        self.url = shown_url(url)
        self.team = team or os.environ.get("LLMDISPATCH_TEAM", "").strip() or "team"
        self.user = user or default_user()
        policy = unreachable or os.environ.get("LLMDISPATCH_STATE_UNREACHABLE", "").strip() \
            or "local"
        if policy not in POLICIES:
            raise ValueError(f"unreachable= must be one of {', '.join(POLICIES)}; got {policy!r}")
        self.unreachable = policy
        if user_limit_usd is None and os.environ.get("LLMDISPATCH_USER_BUDGET_USD"):
            user_limit_usd = float(os.environ["LLMDISPATCH_USER_BUDGET_USD"])
        self.user_limit_usd = user_limit_usd
        self.reservation_ttl_s = reservation_ttl_s
        self.lease_ttl_s = lease_ttl_s
        self.client = redis.Redis.from_url(url, socket_timeout=timeout_s,
                                           socket_connect_timeout=timeout_s,
                                           decode_responses=True)
        self._errors: tuple[type[BaseException], ...] = (redis.ConnectionError,
                                                          redis.TimeoutError)
        self._scripts: dict[str, Any] = {}
        self._down = False
        self._down_lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"RedisState({self.url!r}, team={self.team!r}, user={self.user!r}, "
                f"unreachable={self.unreachable!r})")

    def key(self, *parts: str) -> str:
        """A key of this team's: llmdispatch:{team}:part:part (braces: one cluster slot)."""
        return ":".join(("llmdispatch", "{" + self.team + "}", *parts))

    def run(self, lua: str, keys: list[str], args: list[Any]) -> Any:
        """Run a script (loaded once, then by its hash): its answer, or None when Redis
        is unreachable and the policy is "local"."""
        script = self._scripts.get(lua)
        if script is None:
            script = self._scripts[lua] = self.client.register_script(lua)
        try:
            answer = script(keys=keys, args=args)
        except self._errors as exc:
            return self._unreachable(exc)
        self._back()
        return answer

    def call(self, fn: str, *args: Any, **kw: Any) -> Any:
        """One plain command (`call("get", key)`), under the same policy as `run`."""
        try:
            answer = getattr(self.client, fn)(*args, **kw)
        except self._errors as exc:
            return self._unreachable(exc)
        self._back()
        return answer

    def _unreachable(self, exc: BaseException) -> None:
        with self._down_lock:
            first, self._down = not self._down, True
        if self.unreachable == "refuse":
            raise SharedStateUnavailableError(
                f"the team's shared limits and budget are in Redis at {self.url}, which "
                f"cannot be reached ({type(exc).__name__}: {exc}); calls are refused until it "
                f"answers (LLMDISPATCH_STATE_UNREACHABLE=local would go on with local limits)"
            ) from exc
        if first:
            log.warning("Redis at %s cannot be reached (%s: %s): going on with this kernel's own "
                        "limits, breaker and budget until it answers; the team's are not "
                        "enforced meanwhile", self.url, type(exc).__name__, exc)
        return None

    def _back(self) -> None:
        if self._down:
            with self._down_lock:
                was, self._down = self._down, False
            if was:
                log.warning("Redis at %s answers again: limits, breaker and budget are shared "
                            "with the team once more", self.url)
