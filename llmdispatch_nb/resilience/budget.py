"""Spending limits: per dispatcher, per tag and per call, checked before anything is sent.

Each call reserves its worst-case cost before its request leaves: what the vendor can bill
for it, at list price. That is an upper bound of the prompt's tokens (its UTF-8 bytes plus
framing: no tokenizer makes more tokens than bytes) plus the answer cap actually sent
(reasoning and thinking tokens bill inside it), or, where none is sent, the model's own
output cap from the model catalogue (`reserve_worst`; the router works it out). If that
cannot fit, the budget's `policy` decides: "fit" (the default) sends a call that set no
max_tokens with the largest one that fits, and says so; a max_tokens the caller set is
never lowered, that call is refused; "refuse" refuses every call whose worst case does not
fit. The reservation is settled to the real cost after the
vendor reports usage, or released if the call never went out. The check counts money
already spent *and* money reserved by calls still in flight, under one lock, so any
number of concurrent calls (threads or tasks) can never spend past a budget together.

Amounts are kept as whole nano-dollars (1e-9 USD) so that the accounting is exact: ten
reservations of $0.10 fill a $1.00 budget, not $0.9999999999999999 of it.

A settled cost that is unknown (`settle(None)`: the vendor reported no usage, or the
model has no price) keeps the whole reserved amount as spent. That overstates rather
than understates the spend, which is the safe side of a budget.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import BudgetExceededError, ConfigurationError

_UNITS = 1_000_000_000  # nano-dollars per dollar


def shared_budget(state: Any) -> Any:
    """The team's side of a budget for `state=` (None: $LLMDISPATCH_STATE), or None."""
    from ..state import resolve_state

    found = resolve_state(state)
    if found is None:
        return None
    from ..state._shared import SharedBudget

    return SharedBudget(found)

POLICIES = ("fit", "refuse")  # what happens when a call's worst case does not fit
MIN_FITTED_TOKENS = 16  # a fitted answer shorter than this is refused instead: too short to use


def _units(usd: float) -> int:
    return round(usd * _UNITS)


def _usd(units: int) -> float:
    return units / _UNITS


def money(usd: float | None) -> str:
    """Dollars as people read them: cents for big sums, enough digits for tiny ones."""
    if usd is None:
        return "unknown"
    if usd == 0:
        return "$0"
    if abs(usd) >= 1:
        return f"${usd:,.2f}"
    if abs(usd) < 1e-6:  # would round to "$0": a refusal saying "the budget is $0" misleads
        return f"${usd:.1e}"
    return f"${usd:.6f}".rstrip("0").rstrip(".")


@dataclass
class _Account:
    limit: int | None = None
    spent: int = 0
    reserved: int = 0

    def used(self) -> int:
        return self.spent + self.reserved


@dataclass
class Reservation:
    """Money set aside for one call. Settle it with the real cost, or release it."""

    budget: Budget = field(repr=False)
    amount_usd: float
    tags: tuple[str, ...]
    _units: int = field(repr=False, default=0)
    _done: bool = field(repr=False, default=False)
    # The answer tokens reserved for (see `Budget.reserve_worst`): fewer than asked means
    # "send the call with max_tokens = this", so the vendor cannot bill past the reservation.
    output_tokens: int | None = None
    # The team's reservation in shared state (its id and accounts), if the budget has one.
    _team: tuple[str, list[str]] | None = field(repr=False, default=None)

    @property
    def open(self) -> bool:
        return not self._done

    def settle(self, actual_usd: float | None) -> None:
        """The call finished: count `actual_usd` as spent (None: the reserved amount).

        Only the first settle or release counts; later ones are ignored."""
        self.budget._close(self, None if actual_usd is None else _units(actual_usd), spent=True)

    def release(self) -> None:
        """The call never sent anything: give the whole reservation back."""
        self.budget._close(self, 0, spent=False)


class Budget:
    """A dispatcher's spending limit (`limit_usd`, None for none) and per-tag limits.

    Spending is tracked for every tag seen, limited or not, so it can be shown."""

    def __init__(self, limit_usd: float | None = None, per_tag: Mapping[str, float] | None = None,
                 *, allow_unknown: bool = False, policy: str = "fit", state: Any = None) -> None:
        # Re-entrant: reserve_worst reads what is left and reserves under one hold.
        self._lock = threading.RLock()
        if policy not in POLICIES:
            raise ConfigurationError(f"policy must be one of {', '.join(map(repr, POLICIES))}, "
                                     f"got {policy!r}")
        self.policy = policy
        self._total = _Account()
        self._tags: dict[str, _Account] = {}
        self.allow_unknown = allow_unknown
        # Shared with a team (state=, or $LLMDISPATCH_STATE): see llmdispatch_nb.state.
        self.shared = shared_budget(state)
        self.set_limit(limit_usd)
        if per_tag is not None and not isinstance(per_tag, Mapping):
            raise ConfigurationError(f"per_tag must map tag names to dollars, e.g. "
                                     f"{{'demo': 0.5}}, got a {type(per_tag).__name__}")
        for tag, limit in (per_tag or {}).items():
            if not isinstance(tag, str) or not tag:
                raise ConfigurationError(f"per_tag's keys must be tag names (non-empty "
                                         f"strings), got {tag!r}")
            self.set_tag_limit(tag, limit)

    # -- configuration ----------------------------------------------------------------

    @staticmethod
    def _check_limit(limit: float | None, what: str) -> int | None:
        if limit is None:
            return None
        # NaN compares false with everything (it would pass `< 0` and then fail inside
        # round()); infinity has no nano-dollars; True is an int to Python, not a sum.
        if isinstance(limit, bool) or not isinstance(limit, int | float) \
                or not math.isfinite(limit) or limit < 0:
            raise ConfigurationError(
                f"{what} must be a finite number of US dollars >= 0 (None for no limit), "
                f"got {limit!r}")
        return _units(float(limit))

    def set_limit(self, limit_usd: float | None) -> None:
        units = self._check_limit(limit_usd, "the budget")
        with self._lock:
            self._total.limit = units

    def set_tag_limit(self, tag: str, limit_usd: float | None) -> None:
        units = self._check_limit(limit_usd, f"the budget for tag {tag!r}")
        with self._lock:
            self._tags.setdefault(tag, _Account()).limit = units

    # -- reserving --------------------------------------------------------------------

    def reserve(self, amount_usd: float | None, tags: Iterable[str] = (),
                max_cost: float | None = None, *, allow_unknown: bool | None = None,
                what: str = "this call") -> Reservation:
        """Set aside `amount_usd` (the worst-case cost) or raise `BudgetExceededError`.

        `max_cost` is this call's own limit. With an unknown amount (None) and any limit
        in force, the call is refused unless unknown costs are allowed (here or on the
        budget); then nothing is reserved, and `settle` counts what is learned later.
        `what` names the call in messages ("openai:gpt-4o").
        """
        tags = tuple(dict.fromkeys(tags))
        unknown_ok = self.allow_unknown if allow_unknown is None else allow_unknown
        if amount_usd is not None and (amount_usd != amount_usd or amount_usd < 0):
            raise ConfigurationError(f"a cost estimate must be a number of dollars >= 0, got {amount_usd!r}")
        if max_cost is not None and max_cost < 0:
            raise ConfigurationError(f"max_cost must be >= 0, got {max_cost!r}")
        units = 0 if amount_usd is None else _units(amount_usd)
        with self._lock:
            limited = [("the budget", self._total)] + [
                (f"the budget for tag {t!r}", self._tags[t]) for t in tags
                if t in self._tags and self._tags[t].limit is not None]
            limited = [(name, acct) for name, acct in limited if acct.limit is not None]
            if amount_usd is None:
                if (limited or max_cost is not None) and not unknown_ok:
                    name, acct = limited[0] if limited else ("max_cost", None)
                    budget = _usd(acct.limit) if acct is not None and acct.limit is not None else max_cost
                    spent = _usd(acct.used()) if acct is not None else 0.0
                    raise BudgetExceededError(
                        f"refused before sending: the cost of {what} is unknown (no list price for "
                        f"the model), so {name} ({money(budget)}, {money(spent)} spent or reserved) "
                        f"cannot be checked",
                        advice="Price the model (PriceBook.set_price) or allow unknown costs "
                               "(allow_unknown=True)",
                        budget=budget, spent=spent, estimate=None)
            else:
                if max_cost is not None and units > _units(max_cost):
                    raise BudgetExceededError(
                        f"refused before sending: {what} may cost up to {money(amount_usd)}, "
                        f"above its max_cost of {money(max_cost)}",
                        advice="Lower max_tokens, shorten the prompt, pick a cheaper model or "
                               "raise max_cost",
                        budget=max_cost, spent=0.0, estimate=amount_usd)
                for name, acct in limited:
                    assert acct.limit is not None
                    if acct.used() + units > acct.limit:
                        raise BudgetExceededError(
                            f"refused before sending: {name} is {money(_usd(acct.limit))}; "
                            f"{money(_usd(acct.used()))} is spent so far ({money(_usd(acct.spent))} "
                            f"settled + {money(_usd(acct.reserved))} reserved by calls in flight) and "
                            f"{what} may cost up to {money(amount_usd)} (estimate: prompt plus "
                            f"max_tokens at list price)",
                            advice="Raise the budget, lower max_tokens or pick a cheaper model",
                            budget=_usd(acct.limit), spent=_usd(acct.used()), estimate=amount_usd)
            team = None
            if self.shared is not None:  # the team's accounts too, in one atomic step
                tag_limits = {t: self._tags[t].limit for t in tags if t in self._tags}
                rid, scopes = self.shared.take(units, tags, self._total.limit, tag_limits,
                                               _usd(units), what)
                team = (rid, scopes) if rid is not None else None
            self._total.reserved += units
            for t in tags:
                self._tags.setdefault(t, _Account()).reserved += units
        return Reservation(self, _usd(units), tags, units, _team=team)

    def reserve_worst(self, prompt_usd: float | None, usd_per_output_token: float | None,
                      output_tokens: int, tags: Iterable[str] = (), max_cost: float | None = None,
                      *, fit: bool = True, allow_unknown: bool | None = None,
                      what: str = "this call") -> Reservation:
        """Reserve a call's worst case: `prompt_usd` (its prompt's bound at list price) plus
        `output_tokens` answer tokens at `usd_per_output_token`.

        If that does not fit (in the budget, a tag's budget or `max_cost`) and the policy is
        "fit" and `fit` is true (the caller set no max_tokens), fewer answer tokens are
        reserved: as many as fit, at least `MIN_FITTED_TOKENS`; `output_tokens` of the
        reservation says how many, and the call must be sent with that as its max_tokens.
        Otherwise the usual `BudgetExceededError`. An unknown price is `reserve(None)`."""
        if prompt_usd is None or usd_per_output_token is None:
            r = self.reserve(None, tags, max_cost, allow_unknown=allow_unknown, what=what)
            r.output_tokens = output_tokens
            return r
        tokens = output_tokens
        tags = tuple(dict.fromkeys(tags))
        with self._lock:
            room = self._room(tags, max_cost)
            full = _units(prompt_usd + usd_per_output_token * output_tokens)
            if fit and self.policy == "fit" and room is not None and full > room \
                    and usd_per_output_token > 0:
                # Two nano-dollars of slack: the amount below is rounded once more.
                spare = room - _units(prompt_usd) - 2
                fitted = min(output_tokens, math.floor(spare / (usd_per_output_token * _UNITS)))
                if fitted >= MIN_FITTED_TOKENS:
                    tokens = fitted
            try:
                r = self.reserve(prompt_usd + usd_per_output_token * tokens, tags, max_cost,
                                 allow_unknown=allow_unknown, what=what)
            except BudgetExceededError as exc:
                # The team's accounts (shared state) had less room than this kernel's: fit
                # to theirs, as above, and ask once more.
                room = getattr(exc, "team_room", None)
                if room is None or not (fit and self.policy == "fit" and usd_per_output_token > 0):
                    raise
                spare = room - _units(prompt_usd) - 2
                fitted = min(tokens, math.floor(spare / (usd_per_output_token * _UNITS)))
                if fitted < MIN_FITTED_TOKENS:
                    raise
                tokens = fitted
                r = self.reserve(prompt_usd + usd_per_output_token * tokens, tags, max_cost,
                                 allow_unknown=allow_unknown, what=what)
        r.output_tokens = tokens
        return r

    def _room(self, tags: tuple[str, ...], max_cost: float | None) -> int | None:
        """Nano-dollars a call of these tags may still reserve (None: no limit applies)."""
        rooms = [a.limit - a.used() for a in [self._total, *(self._tags.get(t) for t in tags)]
                 if a is not None and a.limit is not None]
        if max_cost is not None:
            rooms.append(_units(max_cost))
        return min(rooms) if rooms else None

    def _close(self, r: Reservation, actual: int | None, *, spent: bool) -> None:
        with self._lock:
            if r._done:
                return
            r._done = True
            charge = r._units if actual is None else actual
            accounts = [self._total] + [self._tags.setdefault(t, _Account()) for t in r.tags]
            for acct in accounts:
                acct.reserved -= r._units
                if spent:
                    acct.spent += charge
        if r._team is not None and self.shared is not None:
            self.shared.settle(r._team[0], r._team[1], charge if spent else 0)

    # -- reading ----------------------------------------------------------------------

    @property
    def limit_usd(self) -> float | None:
        with self._lock:
            return None if self._total.limit is None else _usd(self._total.limit)

    @property
    def spent(self) -> float:
        """Settled spending."""
        with self._lock:
            return _usd(self._total.spent)

    @property
    def reserved(self) -> float:
        """Held for calls in flight."""
        with self._lock:
            return _usd(self._total.reserved)

    @property
    def remaining(self) -> float | None:
        """What is left to reserve (None with no limit)."""
        with self._lock:
            a = self._total
            return None if a.limit is None else _usd(a.limit - a.used())

    def spent_for(self, tag: str) -> float:
        with self._lock:
            a = self._tags.get(tag)
            return _usd(a.spent) if a else 0.0

    def reserved_for(self, tag: str) -> float:
        with self._lock:
            a = self._tags.get(tag)
            return _usd(a.reserved) if a else 0.0

    def remaining_for(self, tag: str) -> float | None:
        with self._lock:
            a = self._tags.get(tag)
            return None if a is None or a.limit is None else _usd(a.limit - a.used())

    def tag_limits(self) -> dict[str, float]:
        with self._lock:
            return {t: _usd(a.limit) for t, a in self._tags.items() if a.limit is not None}

    def snapshot(self) -> dict[str, dict[str, float | None]]:
        """"*" for the whole budget, then each tag: limit, spent, reserved, remaining."""
        def row(a: _Account) -> dict[str, float | None]:
            lim = None if a.limit is None else _usd(a.limit)
            return {"limit": lim, "spent": _usd(a.spent), "reserved": _usd(a.reserved),
                    "remaining": None if a.limit is None else _usd(a.limit - a.used())}
        with self._lock:
            out = {"*": row(self._total)}
            out.update({t: row(a) for t, a in sorted(self._tags.items())})
            return out

    def __repr__(self) -> str:
        snap = self.snapshot()["*"]
        return (f"Budget(limit={money(snap['limit']) if snap['limit'] is not None else 'none'}, "
                f"spent={money(snap['spent'])}, reserved={money(snap['reserved'])})")
