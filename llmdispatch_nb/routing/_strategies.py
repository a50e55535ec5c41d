"""From a request to an ordered list of candidates: rules, strategy, fallbacks, fit.

    request ─ rules (first match picks the target) ─ resolve (alias, group, family)
            ─ drop candidates whose model lacks what the request needs (tools, images,
              PDFs: `_capabilities`) or whose context window is too small (reason kept)
            ─ order by the strategy: model | cheapest | fastest | weighted | your function
            ─ append fallbacks for the target and for each candidate (their own too),
              then the default fallbacks; de-duplicated, so fallbacks never loop

Strategies order the target's own candidates; fallbacks keep the order the user gave.
"""

from __future__ import annotations

import math
import random
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .._types import Request
from ..errors import ConfigurationError, MissingKeyError, RequestValidationError
from ..pricing import PriceBook
from ._capabilities import missing, models_with
from ._groups import (
    DEFAULT_MAX_TOKENS,
    ContextWindows,
    Rule,
    billable_output_tokens,
    estimated_input_tokens,
    first_rule,
    output_cap_sent,
    pricing_model,
    prompt_token_bound,
)
from ._targets import Candidate, TargetResolver

StrategyFn = Callable[[Request, list[Candidate]], Sequence[Candidate]]
STRATEGIES = ("model", "cheapest", "fastest", "weighted")


class LatencyTracker:
    """Moving averages (exponentially weighted) of latency and time to first token per
    candidate key. The dispatcher calls `observe` after each successful attempt."""

    def __init__(self, alpha: float = 0.3) -> None:
        if not 0 < alpha <= 1:
            raise ConfigurationError(f"LatencyTracker alpha must be in (0, 1], got {alpha!r}")
        self.alpha = alpha
        self._latency: dict[str, float] = {}
        self._ttft: dict[str, float] = {}
        self._count: dict[str, int] = {}
        self._lock = threading.Lock()

    def _mix(self, table: dict[str, float], key: str, value: float) -> None:
        old = table.get(key)
        table[key] = value if old is None else old + self.alpha * (value - old)

    def observe(self, key: str, latency_s: float, ttft_s: float | None = None) -> None:
        with self._lock:
            self._mix(self._latency, key, latency_s)
            if ttft_s is not None:
                self._mix(self._ttft, key, ttft_s)
            self._count[key] = self._count.get(key, 0) + 1

    def latency(self, key: str) -> float | None:
        return self._latency.get(key)

    def ttft(self, key: str) -> float | None:
        return self._ttft.get(key)

    def count(self, key: str) -> int:
        return self._count.get(key, 0)

    def score(self, key: str, *, stream: bool = False) -> float | None:
        """Seconds that matter: time to first token for a stream (when known), else latency."""
        if stream and key in self._ttft:
            return self._ttft[key]
        return self._latency.get(key)

    def snapshot(self) -> dict[str, dict[str, float | int | None]]:
        with self._lock:
            return {k: {"latency_s": self._latency.get(k), "ttft_s": self._ttft.get(k),
                        "observed": n} for k, n in sorted(self._count.items())}


@dataclass(frozen=True)
class WorstCase:
    """The most a request can cost on one candidate, as the budget reserves it.

    `prompt_tokens` is an upper bound of the prompt (UTF-8 bytes plus framing);
    `output_tokens` the most answer tokens the vendor can bill (`capped`: a cap sent with
    the request; else the model's own output cap, none being sent). Prices are US dollars
    per million tokens; None when the model has no known price."""

    prompt_tokens: int
    output_tokens: int
    capped: bool
    input_price: float | None
    output_price: float | None

    @property
    def usd(self) -> float | None:
        if self.input_price is None or self.output_price is None:
            return None
        return (self.prompt_tokens * self.input_price + self.output_tokens * self.output_price) / 1e6

    @property
    def prompt_usd(self) -> float | None:
        return None if self.input_price is None else self.prompt_tokens * self.input_price / 1e6

    @property
    def usd_per_output_token(self) -> float | None:
        return None if self.output_price is None else self.output_price / 1e6


@dataclass
class Plan:
    """The candidates to try, in order, and those left out with the reason why."""

    target: str
    candidates: list[Candidate]
    skipped: list[tuple[Candidate, str]] = field(default_factory=list)
    input_tokens: int = 0  # estimated
    max_output_tokens: int = DEFAULT_MAX_TOKENS
    strategy: str = "model"
    rule: str | None = None  # the rule that picked the target, if one did
    notes: list[str] = field(default_factory=list)  # e.g. a fallback on a vendor with no key
    # Skipped candidates whose model lacks a capability the request needs: key -> capability.
    lacking: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        lines = [f"target {self.target} ({self.strategy}; ~{self.input_tokens} prompt tokens)"]
        if self.rule:
            lines.append(f"rule: {self.rule}")
        lines += [f"  {i}. {c.key}  [{c.reason}]" for i, c in enumerate(self.candidates, 1)]
        lines += [f"  skipped {c.key}: {why}" for c, why in self.skipped]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def raise_if_empty(self) -> None:
        """No candidate left: say why, before anything is sent."""
        if self.candidates:
            return
        why = "; ".join(f"{c.key}: {r}" for c, r in self.skipped) or "no candidates"
        if self.lacking and len(self.lacking) == len(self.skipped):
            # Every one lacks a capability: say which, and where to find it.
            wanted = list(dict.fromkeys(self.lacking.values()))
            vendors = [c.vendor for c, _ in self.skipped]
            have = [f"{w}: {', '.join(models_with(w, vendors)) or 'none listed'}"
                    for w in wanted]
            why = "; ".join(r for _, r in self.skipped)
            raise RequestValidationError(
                f"no candidate for {self.target!r} takes {' or '.join(wanted)}: {why}. Models "
                f"of {', '.join(dict.fromkeys(vendors))} that do ({'; '.join(have)}); pick one, "
                f"or correct the catalogue with llmdispatch_nb.catalogue.override(...)")
        raise RequestValidationError(
            f"no candidate can take this request for {self.target!r}: {why}. "
            f"Shorten the prompt, lower max_tokens or add a model with a larger context window")


class Router:
    """Turns a request into a `Plan`.

    `fallbacks` maps a target (as written, or a candidate's "vendor:model") to the targets
    to try after it; `default_fallbacks` come after everything. `weights` (for
    "weighted") are keyed by candidate key, vendor or model; 1.0 when unnamed.
    `epsilon` is how often "fastest" tries a candidate other than the fastest, so a
    vendor that recovered is noticed. `context_windows` overrides windows by key or model.
    """

    def __init__(self, resolver: TargetResolver, strategy: str | StrategyFn = "model",
                 fallbacks: Mapping[str, Sequence[str]] | None = None,
                 default_fallbacks: Sequence[str] = (),
                 groups: Mapping[str, Sequence[str]] | None = None,
                 rules: Sequence[Rule] = (), prices: PriceBook | None = None,
                 tracker: LatencyTracker | None = None, *,
                 weights: Mapping[str, float] | None = None, epsilon: float = 0.05,
                 seed: int | None = None, context_windows: Mapping[str, int] | None = None,
                 default_max_tokens: int = DEFAULT_MAX_TOKENS) -> None:
        self.resolver = resolver
        self._check_strategy(strategy)
        self.strategy = strategy
        self.fallbacks: dict[str, tuple[str, ...]] = {
            k: (v,) if isinstance(v, str) else tuple(v) for k, v in (fallbacks or {}).items()}
        self.default_fallbacks = (default_fallbacks,) if isinstance(default_fallbacks, str) \
            else tuple(default_fallbacks)
        for name, members in (groups or {}).items():
            resolver.add_group(name, members)
        for r in rules:
            if not isinstance(r, Rule):
                raise ConfigurationError(f"rules must be Rule objects, got {type(r).__name__}")
        self.rules = tuple(rules)
        self.prices = prices or PriceBook()
        self.tracker = tracker or LatencyTracker()
        self.weights = dict(weights or {})
        if any(w < 0 for w in self.weights.values()):
            raise ConfigurationError("weights must be >= 0")
        if not 0 <= epsilon <= 1:
            raise ConfigurationError(f"epsilon must be between 0 and 1, got {epsilon!r}")
        self.epsilon = epsilon
        self.rng = random.Random(seed)
        self.windows = ContextWindows(context_windows)
        self.default_max_tokens = default_max_tokens

    @staticmethod
    def _check_strategy(strategy: str | StrategyFn) -> None:
        if not callable(strategy) and strategy not in STRATEGIES:
            raise ConfigurationError(
                f"unknown routing strategy {strategy!r}; use one of {', '.join(STRATEGIES)} "
                f"or a function (request, candidates) -> candidates")

    # -- estimates --------------------------------------------------------------------

    def context_window(self, candidate: Candidate) -> int | None:
        return self.windows(candidate)

    def max_output_tokens(self, request: Request) -> int:
        return request.max_tokens or self.default_max_tokens

    def estimate_cost(self, request: Request, candidate: Candidate,
                      input_tokens: int | None = None) -> float | None:
        """Worst-case dollars (prompt estimate + max_tokens at list price); None if unpriced."""
        tokens = estimated_input_tokens(request) if input_tokens is None else input_tokens
        ep = candidate.endpoint
        return self.prices.estimate(ep.name, pricing_model(candidate), tokens,
                                    self.max_output_tokens(request), kind=ep.kind,
                                    free=not ep.priced)

    def worst_case(self, request: Request, candidate: Candidate) -> WorstCase:
        """What the vendor can bill at most for `request` on `candidate` (see `WorstCase`):
        the budget reserves this; the cheap estimate above stays for routing."""
        ep = candidate.endpoint
        output, capped = billable_output_tokens(request, candidate)
        price = self.prices.price_of(ep.name, pricing_model(candidate), kind=ep.kind,
                                     free=not ep.priced)
        return WorstCase(prompt_token_bound(request, candidate), output, capped,
                         None if price is None else price.input,
                         None if price is None else price.output)

    def fit_to(self, request: Request, candidate: Candidate, tokens: int) -> Request | None:
        """`request` with the largest max_tokens whose cap, as the adapter sends it, is at
        most `tokens` (an adapter may add room of its own, Gemini's for thinking); None
        when no max_tokens of at least 1 fits."""
        want = tokens
        for _ in range(3):  # the room an adapter adds is constant, or nearly: one step fits
            if want < 1:
                return None
            trial = replace(request, max_tokens=want)
            sent = output_cap_sent(trial, candidate)
            if sent is None or sent <= tokens:
                return trial
            want -= sent - tokens
        return None

    def _unfit(self, candidate: Candidate, request: Request, tokens: int,
               plan: Plan) -> str | None:
        """Why `candidate` cannot take `request` (a capability its model lacks, then a
        context window too small), or None."""
        lack = missing(request, candidate)
        if lack is not None:
            plan.lacking[candidate.key] = lack[0]
            return lack[1]
        return self._misfit(candidate, request, tokens)

    def _misfit(self, candidate: Candidate, request: Request, tokens: int) -> str | None:
        window = self.context_window(candidate)
        if window is None:
            return None
        needed = tokens + (request.max_tokens or 0)
        if needed <= window:
            return None
        detail = f"prompt ~{tokens}" + (f" + max_tokens {request.max_tokens}" if request.max_tokens else "")
        return f"context window {window} < estimated {needed} tokens ({detail})"

    # -- planning ---------------------------------------------------------------------

    def plan(self, request: Request, *, stream: bool = False,
             strategy: str | StrategyFn | None = None,
             fallbacks: Sequence[str] | None = None) -> Plan:
        """The plan for `request`. `fallbacks` are this call's own, tried after the
        configured ones; like every candidate, one whose window is known to be too small
        for the prompt is skipped (with the reason) before anything is sent."""
        strategy = self.strategy if strategy is None else strategy
        self._check_strategy(strategy)
        tokens = estimated_input_tokens(request)
        requested = request.target
        rule_desc = None
        rule_no = 0
        if self.rules:
            asked = requested or self._default_or_empty()
            hit = first_rule(self.rules, request, asked, tokens)
            if hit is not None:
                rule_no, rule = hit
                rule_desc = f"rule #{rule_no}: {rule.describe()}"
                requested = rule.target
        target = requested or self.resolver.default()
        plan = Plan(target=target, candidates=[], input_tokens=tokens,
                    max_output_tokens=self.max_output_tokens(request),
                    strategy=strategy if isinstance(strategy, str) else _fn_name(strategy),
                    rule=rule_desc)
        primary = self.resolver.resolve(target)
        if rule_no:
            primary = [replace(c, reason=f"rule #{rule_no}; {c.reason}") for c in primary]
        seen: set[str] = set()
        fits: list[Candidate] = []
        for c in primary:
            if c.key in seen:
                continue
            seen.add(c.key)
            why = self._unfit(c, request, tokens, plan)
            if why:
                plan.skipped.append((c, why))
            else:
                fits.append(c)
        plan.candidates = self._order(strategy, request, fits, stream, plan)
        seen.update(c.key for c in plan.candidates)
        for c in self._fallbacks(target, primary, plan):
            if c.key in seen:
                continue
            seen.add(c.key)
            why = self._unfit(c, request, tokens, plan)
            if why:
                plan.skipped.append((c, why))
            else:
                plan.candidates.append(c)
        for name in fallbacks or ():
            for c in self.resolver.resolve(name):
                if c.key in seen:
                    continue
                seen.add(c.key)
                c = replace(c, reason=f"fallback {name}")
                why = self._unfit(c, request, tokens, plan)
                if why:
                    plan.skipped.append((c, why))
                else:
                    plan.candidates.append(c)
        return plan

    def _default_or_empty(self) -> str:
        try:
            return self.resolver.default()
        except ConfigurationError:  # no default: rules on "model" simply do not match
            return ""

    def _fallbacks(self, target: str, primary: list[Candidate], plan: Plan) -> list[Candidate]:
        """Breadth first through the fallback map: the target's own list, then each
        candidate's, then the fallbacks' own, then the defaults. Each name is read once,
        so `a -> b -> a` ends instead of looping."""
        out: list[Candidate] = []
        if not self.fallbacks and not self.default_fallbacks:
            return out
        looked_up: set[str] = set()
        resolved: set[str] = set()
        pending: deque[tuple[str, str]] = deque()

        def follow(name: str) -> None:
            if name not in looked_up:
                looked_up.add(name)
                pending.extend((f, f"fallback for {name}") for f in self.fallbacks.get(name, ()))

        def drain() -> None:
            while pending:
                name, reason = pending.popleft()
                if name in resolved:
                    continue
                resolved.add(name)
                try:
                    found = self.resolver.resolve(name)
                except MissingKeyError as exc:
                    plan.notes.append(f"fallback {name} left out: {exc}")
                    continue
                out.extend(replace(c, reason=reason) for c in found)
                follow(name)
                for c in found:
                    follow(c.key)

        follow(target)
        for c in primary:
            follow(c.key)
        drain()
        pending.extend((t, "default fallback") for t in self.default_fallbacks)
        drain()
        return out

    # -- strategies -------------------------------------------------------------------

    def _order(self, strategy: str | StrategyFn, request: Request, cands: list[Candidate],
               stream: bool, plan: Plan) -> list[Candidate]:
        if callable(strategy):
            ordered = list(strategy(request, list(cands)))
            for c in ordered:
                if not isinstance(c, Candidate):
                    raise ConfigurationError(
                        f"routing function {_fn_name(strategy)} returned {type(c).__name__}, "
                        f"not Candidate objects")
            return [replace(c, reason=f"{c.reason}; {_fn_name(strategy)} #{i}")
                    for i, c in enumerate(ordered, 1)]
        if strategy == "model":
            return cands
        if strategy == "cheapest":
            return self._cheapest(request, cands, plan.input_tokens)
        if strategy == "fastest":
            return self._fastest(cands, stream)
        return self._weighted(cands)

    def _cheapest(self, request: Request, cands: list[Candidate], tokens: int) -> list[Candidate]:
        costs = [self.estimate_cost(request, c, tokens) for c in cands]
        order = sorted(range(len(cands)), key=lambda i: (costs[i] is None, costs[i] or 0.0, i))
        out = []
        for rank, i in enumerate(order, 1):
            cost = costs[i]
            shown = "price unknown" if cost is None else f"~${cost:.6f}"
            out.append(replace(cands[i], reason=f"{cands[i].reason}; cheapest #{rank} ({shown})"))
        return out

    def _fastest(self, cands: list[Candidate], stream: bool) -> list[Candidate]:
        scores = [self.tracker.score(c.key, stream=stream) for c in cands]
        # Unobserved first: the only way to learn their speed is to try them.
        order = sorted(range(len(cands)), key=lambda i: (scores[i] is not None, scores[i] or 0.0, i))
        explored: int | None = None
        if len(order) > 1 and self.epsilon and self.rng.random() < self.epsilon:
            explored = order.pop(self.rng.randrange(1, len(order)))
            order.insert(0, explored)
        out = []
        for rank, i in enumerate(order, 1):
            s = scores[i]
            why = "exploring" if i == explored else ("not yet observed" if s is None else f"~{s:.3f} s")
            out.append(replace(cands[i], reason=f"{cands[i].reason}; fastest #{rank} ({why})"))
        return out

    def weight(self, c: Candidate) -> float:
        for k in (c.key, c.vendor, c.model):
            if k in self.weights:
                return float(self.weights[k])
        return 1.0

    def _weighted(self, cands: list[Candidate]) -> list[Candidate]:
        # Efraimidis-Spirakis: sorting by u^(1/w) (here its log), largest first, draws
        # without replacement in proportion to the weights. Weight 0 goes last, in order.
        drawn: list[tuple[float, int]] = []
        zero: list[int] = []
        for i, c in enumerate(cands):
            w = self.weight(c)
            if w <= 0:
                zero.append(i)
            else:
                drawn.append((math.log(self.rng.random() or 1e-300) / w, i))
        order = [i for _, i in sorted(drawn, key=lambda t: -t[0])] + zero
        return [replace(cands[i], reason=f"{cands[i].reason}; weighted #{rank} "
                                         f"(weight {self.weight(cands[i]):g})")
                for rank, i in enumerate(order, 1)]

    # -- after a context-length error --------------------------------------------------

    def context_fallback(self, plan: Plan, failed: Candidate) -> list[Candidate]:
        """`failed` said the prompt is too long: the candidates still worth trying after it.

        Those with a known window no larger than `failed`'s would refuse too; they are
        moved to `plan.skipped` with the reason, and `plan.candidates` is updated."""
        keys = [c.key for c in plan.candidates]
        at = keys.index(failed.key) if failed.key in keys else -1
        rest = plan.candidates[at + 1:]
        limit = self.context_window(failed)
        if limit is None:
            return rest
        keep = []
        for c in rest:
            w = self.context_window(c)
            if w is not None and w <= limit:
                plan.skipped.append((c, f"context window {w} <= {limit} of {failed.key}, "
                                        f"which refused the prompt as too long"))
            else:
                keep.append(c)
        plan.candidates = plan.candidates[:at + 1] + keep
        return keep


def _fn_name(fn: Any) -> str:
    return getattr(fn, "__name__", type(fn).__name__)
