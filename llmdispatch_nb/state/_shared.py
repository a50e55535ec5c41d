"""The shared halves of `Budget`, `CircuitBreaker` and `RateLimiter`: atomic Lua scripts in
Redis, one round trip a decision, each answering as the local object would.

Times are Redis's own clock (`TIME` inside the script), so kernels on machines whose
clocks disagree still agree on expiries and refills. Amounts are the budget's whole
nano-dollars, so the accounting is exact across kernels as it is within one.

- Budget: an account per scope (the whole "*", "tag:<t>", "user:<u>") holds `spent` and
  `reserved`; a reservation checks every limited account and takes from all of them at
  once, and is kept with its expiry: whoever reserves next first gives back the expired
  ones (a kernel that died holding them).
- Breaker: an open circuit is a key whose value is when it closes (and whose TTL ends
  with it); a half-open probe is a key set only if absent, so one kernel probes for all.
- Limiter: per limited key, token buckets for requests and tokens (refilled from the time
  they were last touched) and a set of concurrency slots, each with its expiry.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ..errors import BudgetExceededError
from ._redis import RedisState, log

_UNITS = 1_000_000_000  # the budget's nano-dollars

_EXPIRE_RESERVATIONS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
  local info = redis.call('HGET', KEYS[2], id)
  if info then
    local sep = string.find(info, ';', 1, true)
    local u = tonumber(string.sub(info, 1, sep - 1))
    for acct in string.gmatch(string.sub(info, sep + 1), '[^;]+') do
      redis.call('HINCRBY', acct, 'reserved', -u)
    end
    redis.call('HDEL', KEYS[2], id)
  end
  redis.call('ZREM', KEYS[1], id)
end
"""

# KEYS: reservations (zset id -> expiry ms), their amounts and accounts (hash), then the
# accounts. ARGV: units, id, ttl ms, then each account's limit (-1: none).
# Answers {0, 0} (reserved) or {i, used}: account i (1-based) has no room.
BUDGET_RESERVE = _EXPIRE_RESERVATIONS + """
local units = tonumber(ARGV[1])
for i = 3, #KEYS do
  local limit = tonumber(ARGV[i + 1])
  if limit >= 0 then
    local v = redis.call('HMGET', KEYS[i], 'spent', 'reserved')
    local used = (tonumber(v[1]) or 0) + (tonumber(v[2]) or 0)
    if used + units > limit then return {i - 2, used} end
  end
end
local accts = {}
for i = 3, #KEYS do
  redis.call('HINCRBY', KEYS[i], 'reserved', units)
  accts[#accts + 1] = KEYS[i]
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
redis.call('HSET', KEYS[2], ARGV[2], units .. ';' .. table.concat(accts, ';'))
return {0, 0}
"""

# KEYS as BUDGET_RESERVE's; ARGV: id, charge (units spent; 0 for a release). A
# reservation that already expired gave its hold back then: only the charge is added.
BUDGET_SETTLE = """
local info = redis.call('HGET', KEYS[2], ARGV[1])
local u = 0
if info then
  u = tonumber(string.sub(info, 1, string.find(info, ';', 1, true) - 1))
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[1], ARGV[1])
end
local charge = tonumber(ARGV[2])
for i = 3, #KEYS do
  if u ~= 0 then redis.call('HINCRBY', KEYS[i], 'reserved', -u) end
  if charge ~= 0 then redis.call('HINCRBY', KEYS[i], 'spent', charge) end
end
return u
"""

BUDGET_READ = _EXPIRE_RESERVATIONS + """
local out = {}
for i = 3, #KEYS do
  local v = redis.call('HMGET', KEYS[i], 'spent', 'reserved')
  out[#out + 1] = tonumber(v[1]) or 0
  out[#out + 1] = tonumber(v[2]) or 0
end
return out
"""


class SharedBudget:
    """The team's side of a `Budget` (see the module docstring)."""

    def __init__(self, state: RedisState) -> None:
        self.state = state
        self._index = [state.key("budget", "reservations"), state.key("budget", "held")]

    def account(self, scope: str) -> str:
        return self.state.key("budget", scope)

    def scopes(self, tags: Iterable[str]) -> list[str]:
        return ["*", f"user:{self.state.user}", *(f"tag:{t}" for t in tags)]

    def reserve(self, units: int, scopes: Sequence[str], limits: Sequence[int | None]
                ) -> tuple[str | None, str | None, int]:
        """(reservation id, None, 0) when reserved; (None, scope, used) when `scope` has
        no room; (None, None, 0) when Redis is away and the policy says go on locally."""
        rid = uuid.uuid4().hex
        answer = self.state.run(
            BUDGET_RESERVE, [*self._index, *map(self.account, scopes)],
            [units, rid, round(self.state.reservation_ttl_s * 1000),
             *(-1 if lim is None else lim for lim in limits)])
        if answer is None:
            return None, None, 0
        at, used = int(answer[0]), int(answer[1])
        if at:
            return None, scopes[at - 1], used
        return rid, None, 0

    def take(self, units: int, tags: Sequence[str], total_limit: int | None,
             tag_limits: dict[str, int | None], amount_usd: float, what: str
             ) -> tuple[str | None, list[str]]:
        """Reserve `units` on the team's accounts, or raise the BudgetExceededError that
        says which of the team's limits has no room. (id or None, the scopes)."""
        scopes = self.scopes(tags)
        user_limit = self.state.user_limit_usd
        limits = [total_limit, None if user_limit is None else round(user_limit * _UNITS),
                  *(tag_limits.get(t) for t in tags)]
        rid, full, used = self.reserve(units, scopes, limits)
        if full is not None:
            limit = limits[scopes.index(full)] or 0
            name = {"*": "the team's budget"}.get(full, f"the team's budget for {full}")
            exc = BudgetExceededError(
                f"refused before sending: {name} ({self.state.team}) is ${limit / _UNITS:,.6g}; "
                f"${used / _UNITS:,.6g} is spent or reserved by the team's calls in flight and "
                f"{what} may cost up to ${amount_usd:,.6g}",
                advice="Raise the team's budget, lower max_tokens or pick a cheaper model",
                budget=limit / _UNITS, spent=used / _UNITS, estimate=amount_usd)
            exc.team_room = max(0, limit - used)  # type: ignore[attr-defined]  # to fit to
            raise exc
        return rid, scopes

    def settle(self, rid: str, scopes: Sequence[str], charge: int) -> None:
        self.state.run(BUDGET_SETTLE, [*self._index, *map(self.account, scopes)], [rid, charge])

    def read(self, scopes: Sequence[str]) -> dict[str, tuple[int, int]] | None:
        """scope -> (spent, reserved) in nano-dollars, expired reservations given back."""
        answer = self.state.run(BUDGET_READ, [*self._index, *map(self.account, scopes)], [])
        if answer is None:
            return None
        return {s: (int(answer[2 * i]), int(answer[2 * i + 1])) for i, s in enumerate(scopes)}

    def scopes_seen(self) -> list[str]:
        """Every scope with an account in Redis (for `%llm team`)."""
        prefix = self.account("")
        try:  # SCAN, not KEYS: never blocks a busy server for the whole keyspace
            found = list(self.state.client.scan_iter(match=prefix + "*", count=1000))
        except self.state._errors as exc:
            self.state._unreachable(exc)
            return []
        return sorted(k[len(prefix):] for k in found
                      if k[len(prefix):] not in ("reservations", "held"))


# KEYS[1]: the open-circuit key. ARGV: until (ms, Redis clock, relative: ms from now).
# Sets it only when that is later than what is there: a shorter trip never cuts one short.
BREAKER_OPEN = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local until_ms = now + tonumber(ARGV[1])
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if until_ms > cur then
  redis.call('SET', KEYS[1], until_ms, 'PX', math.max(1, until_ms - now))
end
return 0
"""

# KEYS[1]: the open-circuit key. Answers the ms left open (0: not open).
BREAKER_LEFT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if cur > now then return cur - now end
return 0
"""

# KEYS[1]: the probe key; ARGV[1]: how long a probe may be out (ms). 1: this one probes.
BREAKER_PROBE = """
if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return 1 end
return 0
"""


class SharedBreaker:
    """The team's side of a `CircuitBreaker` (see the module docstring)."""

    def __init__(self, state: RedisState) -> None:
        self.state = state

    def open_left_s(self, key: str) -> float | None:
        """Seconds `key` stays open for the team (0: not open; None: Redis away)."""
        left = self.state.run(BREAKER_LEFT, [self.state.key("breaker", key)], [])
        return None if left is None else int(left) / 1000.0

    def opened(self, key: str, seconds: float) -> None:
        self.state.run(BREAKER_OPEN, [self.state.key("breaker", key)],
                       [max(1, round(seconds * 1000))])

    def take_probe(self, key: str, timeout_s: float) -> bool:
        """Whether this kernel sends the team's one half-open probe for `key`."""
        got = self.state.run(BREAKER_PROBE, [self.state.key("probe", key)],
                             [max(1, round(timeout_s * 1000))])
        return got is None or int(got) == 1  # None: Redis away, this kernel decides alone

    def closed(self, key: str) -> None:
        self.state.call("delete", self.state.key("breaker", key), self.state.key("probe", key))

    def give_back_probe(self, key: str) -> None:
        self.state.call("delete", self.state.key("probe", key))


# KEYS: per limited key, its buckets (hash) and its slots (zset id -> expiry ms).
# ARGV: lease id, lease ttl ms, tokens, then per key: rpm, tpm, concurrent (-1: none).
# Answers 0 (taken), a wait in ms for the buckets, or -1: a slot must be freed first.
LIMIT_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id, ttl, tokens = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local n = #KEYS / 2
local wait, full = 0, false
local levels = {}
local function level(h, name, cap)
  local v = redis.call('HMGET', h, name, name .. '_at')
  local lvl, at = tonumber(v[1]), tonumber(v[2])
  if lvl == nil then return cap end
  return math.min(cap, lvl + (now - at) * cap / 60000)
end
for k = 1, n do
  local h, z = KEYS[2 * k - 1], KEYS[2 * k]
  local rpm, tpm, conc = tonumber(ARGV[3 * k + 1]), tonumber(ARGV[3 * k + 2]), tonumber(ARGV[3 * k + 3])
  if conc >= 0 then
    redis.call('ZREMRANGEBYSCORE', z, '-inf', now)
    if redis.call('ZCARD', z) >= conc then full = true end
  end
  if rpm >= 0 then
    local l = level(h, 'rpm', rpm)
    levels[#levels + 1] = {h, 'rpm', l - 1}
    if l < 1 - 1e-9 then wait = math.max(wait, (1 - l) * 60000 / rpm) end
  end
  if tpm >= 0 then
    local l = level(h, 'tpm', tpm)
    local need = math.min(tokens, tpm)
    levels[#levels + 1] = {h, 'tpm', l - tokens}
    if l < need - 1e-9 then wait = math.max(wait, (need - l) * 60000 / tpm) end
  end
end
if full then return -1 end
if wait > 0 then return math.max(1, math.ceil(wait)) end
for _, v in ipairs(levels) do
  redis.call('HSET', v[1], v[2], tostring(v[3]), v[2] .. '_at', now)
  redis.call('PEXPIRE', v[1], 3600000)
end
for k = 1, n do
  if tonumber(ARGV[3 * k + 3]) >= 0 then
    redis.call('ZADD', KEYS[2 * k], now + ttl, id)
    redis.call('PEXPIRE', KEYS[2 * k], ttl + 60000)
  end
end
return 0
"""

# KEYS: the buckets of each key whose tokens were over- or under-counted; ARGV: the
# tokens to give back (negative: to take).
LIMIT_SETTLE = """
for i = 1, #KEYS do
  if redis.call('HEXISTS', KEYS[i], 'tpm') == 1 then
    redis.call('HINCRBYFLOAT', KEYS[i], 'tpm', ARGV[1])
  end
end
return 0
"""

_POLL_S = 0.05  # how often a call waiting for a slot another kernel holds asks again


class SharedLimiter:
    """The team's side of a `RateLimiter` (see the module docstring)."""

    def __init__(self, state: RedisState) -> None:
        self.state = state

    def _keys(self, keys: Sequence[str]) -> list[str]:
        out = []
        for k in keys:
            out += [self.state.key("limit", k), self.state.key("limit", k, "slots")]
        return out

    async def acquire(self, limits: Sequence[tuple[str, Any]], tokens: int,
                      deadline: float | None, clock: Callable[[], float],
                      gave_up: Callable[[], BaseException]) -> SharedLease | None:
        """Wait until the team's buckets and slots have room on every key, and take it.
        `limits`: (key, Limit) pairs. None when Redis is away (policy "local")."""
        keys = [k for k, _ in limits]
        args: list[Any] = [uuid.uuid4().hex, round(self.state.lease_ttl_s * 1000), tokens]
        for _, lim in limits:
            args += [-1 if lim.rpm is None else lim.rpm, -1 if lim.tpm is None else lim.tpm,
                     -1 if lim.concurrent is None else lim.concurrent]
        rkeys = self._keys(keys)
        while True:
            answer = self.state.run(LIMIT_ACQUIRE, rkeys, args)
            if answer is None:
                return None
            wait_ms = int(answer)
            if wait_ms == 0:
                return SharedLease(self, keys, args[0], tokens)
            wait = _POLL_S if wait_ms < 0 else wait_ms / 1000.0
            if deadline is not None:
                left = deadline - clock()
                if left <= 0:
                    raise gave_up()
                wait = min(wait, left)
            await asyncio.sleep(wait)


class SharedLease:
    __slots__ = ("_done", "id", "keys", "limiter", "tokens")

    def __init__(self, limiter: SharedLimiter, keys: list[str], lease_id: str, tokens: int) -> None:
        self.limiter = limiter
        self.keys = keys
        self.id = lease_id
        self.tokens = tokens
        self._done = False

    def settle(self, delta: int) -> None:
        """`delta` tokens back to the team's token buckets (negative: taken)."""
        if delta:
            state = self.limiter.state
            state.run(LIMIT_SETTLE, [state.key("limit", k) for k in self.keys], [delta])

    def release(self) -> None:
        if self._done:
            return
        self._done = True
        state = self.limiter.state
        pipe = state.client.pipeline(transaction=False)
        for k in self.keys:
            pipe.zrem(state.key("limit", k, "slots"), self.id)
        try:
            pipe.execute()
        except state._errors:  # the slot lapses with its expiry
            log.debug("could not give back a shared limiter slot; it lapses", exc_info=True)
