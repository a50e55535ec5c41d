"""What-if routing: what would each policy have cost, how fast and how good would it have
been, on answers you already have? No call is made.

    what_if(df, ["cheapest", "fastest", ("quality_at_least", 0.8), "fixed:openai:gpt-4o"])
    rec = recommend(df, min_quality=0.8, max_latency_s=2.0)
    rec.policy, rec.table

The source is a sweep DataFrame (each case answered by several targets) or ledger records
(a `Ledger`, a `Dispatcher`'s session, or a list of `CallRecord`s), grouped by prompt.
Where a target answered a case more than once (repeats), its figures are the means.

A policy orders the targets for each case; the first target that holds an answer for the
case serves it, as the dispatcher's fallbacks would (a "fixed:" policy has no fallback, so
a case its target did not answer stays unserved). Policies decide from what they could
know before sending, a target's typical figures over the whole source, never from this
case's own outcome:

    "cheapest"                 lowest mean cost per answered run first
    "fastest"                  lowest median latency first
    "best"                     highest mean quality first
    "fixed:<target>"           always that target
    ("quality_at_least", q)    the cheapest targets whose mean quality is >= q, then the
                               rest by quality
    ("rules", rules[, default]) the first rule that matches the prompt picks the target:
                               routing `Rule` objects, or (predicate, target) pairs where
                               the predicate is a regex searched in the prompt or a function
                               of the case (a dict: prompt and vars); no match -> `default`
                               (a policy, "cheapest" when omitted)
    a function                 f(case) -> target or list of targets

Cases that no target answered are left out (no policy could have served them). Latency
percentiles interpolate linearly between closest ranks (as numpy, pandas and the
ledger's stats do).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._types import CallRecord, Request, Usage
from ..errors import ConfigurationError
from ._evaluators import as_score, named_evaluators
from ._views import default_quality, score_columns

if TYPE_CHECKING:
    import pandas as pd

Order = Callable[[dict[str, Any]], list[str]]


@dataclass
class _Source:
    cases: list[dict[str, Any]]  # case, prompt, vars..., options: {target: figures}
    targets: list[str]
    overall: dict[str, dict[str, float]]  # target -> cost, latency, quality


# -- reading the source --------------------------------------------------------------------


def _runs_frame(source: Any, quality: str | None, evaluators: Any) -> tuple[pd.DataFrame, list[str]]:
    """A frame with case, prompt, target, answered, cost_usd, latency_s, quality (+ vars)."""
    import pandas as pd

    if type(source).__name__ == "DataFrame" and "target" in getattr(source, "columns", ()):
        df = source
        q = quality or (default_quality(df) if score_columns(df) else None)
        if q is not None and q not in df.columns:
            raise ValueError(f"no quality column {q!r} in this frame")
        var_cols = [c for c in df.attrs.get("vars", []) if c in df.columns]
        case = df["case_id"] if "case_id" in df.columns else df["prompt"]
        runs = pd.DataFrame({
            "case": case.astype(str), "prompt": df["prompt"], "target": df["target"].astype(str),
            "answered": (df["status"] == "ok") if "status" in df.columns else df["text"].notna(),
            "cost_usd": pd.to_numeric(df["cost_usd"], errors="coerce"),
            "latency_s": pd.to_numeric(df["latency_s"], errors="coerce"),
            "quality": pd.to_numeric(df[q], errors="coerce") if q else float("nan"),
        })
        for c in var_cols:
            runs[c] = df[c].to_numpy()
        return runs, var_cols
    return _runs_from_records(_records_of(source), evaluators), []


def _records_of(source: Any) -> list[CallRecord]:
    if hasattr(source, "session_records"):  # a Dispatcher: its session
        return list(source.session_records())
    records = getattr(source, "records", None)
    if callable(records):  # a Ledger
        return list(records())
    if isinstance(records, list):  # a list-backed ledger
        return list(records)
    items = list(source)
    if not all(isinstance(r, CallRecord) for r in items):
        raise ConfigurationError("what_if reads a sweep DataFrame, a Ledger, a Dispatcher or a "
                                 f"list of CallRecords; got {type(source).__name__}")
    return items


def _runs_from_records(records: Sequence[CallRecord], evaluators: Any) -> pd.DataFrame:
    import pandas as pd

    from ..pricing import PriceBook

    prices: PriceBook | None = None
    evals = named_evaluators(evaluators)
    rows = []
    for r in records:
        if r.status not in ("ok", "cached") or r.prompt is None or "judge" in r.tags:
            continue
        cost, latency = r.cost_usd, r.latency_s
        if r.cache_hit or r.status == "cached":  # billed $0; what would it have cost?
            # ... and taken: a hit records its own latency, the vendor's is kept apart.
            latency = r.original_latency_s if r.original_latency_s is not None else latency
            prices = prices or PriceBook()
            cost = prices.cost(r.vendor, r.model_requested, Usage(
                input_tokens=r.input_tokens or 0, output_tokens=r.output_tokens or 0,
                cache_read_tokens=r.cache_read_tokens or 0)).usd
        target = f"{r.vendor}:{r.model_requested}"
        row = {"case": r.prompt, "prompt": r.prompt, "target": target, "answered": True,
               "cost_usd": cost, "latency_s": latency, "quality": float("nan")}
        if evals and r.response is not None:
            scores = []
            for _, f in evals:  # an evaluator that fails leaves the run unscored
                try:
                    s = as_score(f(r.response, {**row, "text": r.response}))
                except Exception:
                    s = None
                if s is not None:
                    scores.append(s)
            if scores:
                row["quality"] = sum(scores) / len(scores)
        rows.append(row)
    if not rows:
        raise ConfigurationError("no answered calls with their prompts to replay (a ledger with "
                                 "text='off' keeps no prompts)")
    return pd.DataFrame(rows).astype({"cost_usd": "float64", "latency_s": "float64",
                                      "quality": "float64"})


def _source(source: Any, quality: str | None, evaluators: Any) -> _Source:
    runs, var_cols = _runs_frame(source, quality, evaluators)
    targets = list(dict.fromkeys(runs["target"]))
    ok = runs[runs["answered"]]
    overall: dict[str, dict[str, float]] = {}
    for t in targets:
        part = ok[ok["target"] == t]
        overall[t] = {"cost": float(part["cost_usd"].mean()),
                      "latency": float(part["latency_s"].median()),
                      "quality": float(part["quality"].mean())}
    means = ok.groupby(["case", "target"], sort=False)[["cost_usd", "latency_s", "quality"]].mean()
    options: dict[str, dict[str, dict[str, float]]] = {}
    for (case, target), v in zip(means.index, means.to_dict("records"), strict=True):
        options.setdefault(str(case), {})[str(target)] = v
    cases = []
    firsts = runs.drop_duplicates("case")
    for rec in firsts.to_dict("records"):
        if rec["case"] not in options:
            continue  # no target answered it: no policy could have served it
        case = {"case": rec["case"], "prompt": rec["prompt"],
                **{c: rec[c] for c in var_cols}, "options": options.get(rec["case"], {})}
        cases.append(case)
    return _Source(cases, targets, overall)


# -- policies ------------------------------------------------------------------------------


def _by(src: _Source, key: str, descending: bool = False) -> list[str]:
    import math

    def rank(t: str) -> tuple[bool, float]:
        v = src.overall[t][key]
        unknown = v is None or math.isnan(v)
        return unknown, (0.0 if unknown else (-v if descending else v))

    return sorted(src.targets, key=rank)  # stable: ties keep the source's target order


def _match_target(src: _Source, wanted: str) -> str:
    if wanted in src.targets:
        return wanted
    for t in src.targets:
        if t.startswith(wanted + ":") or t.partition(":")[2] == wanted:
            return t
    raise ConfigurationError(f"{wanted!r} is not one of the source's targets: "
                             f"{', '.join(src.targets)}")


def _policy(src: _Source, policy: Any) -> tuple[str, Order, bool]:
    """(name, case -> ordered targets, may fall back)."""
    if callable(policy):
        def call(case: dict[str, Any]) -> list[str]:
            got = policy({k: v for k, v in case.items() if k != "options"})
            picks = [got] if isinstance(got, str) else list(got)
            return [_match_target(src, p) for p in picks]

        return getattr(policy, "__name__", "function"), call, True
    if isinstance(policy, str):
        if policy == "cheapest":
            order = _by(src, "cost")
            return policy, lambda case: order, True
        if policy == "fastest":
            order = _by(src, "latency")
            return policy, lambda case: order, True
        if policy in ("best", "quality"):
            order = _by(src, "quality", descending=True)
            return policy, lambda case: order, True
        if policy.startswith("fixed:"):
            target = _match_target(src, policy[len("fixed:"):])
            return policy, lambda case: [target], False
    if isinstance(policy, tuple) and policy:
        kind = policy[0]
        if kind == "quality_at_least" and len(policy) == 2:
            bar = float(policy[1])
            cheap = _by(src, "cost")
            good = [t for t in cheap if src.overall[t]["quality"] >= bar]
            rest = [t for t in _by(src, "quality", descending=True) if t not in good]
            order = good + rest
            return f"quality_at_least {bar:g}", lambda case: order, True
        if kind == "rules" and len(policy) in (2, 3):
            return _rules_policy(src, policy[1], policy[2] if len(policy) == 3 else "cheapest")
    raise ConfigurationError(
        f"unknown policy {policy!r}: use 'cheapest', 'fastest', 'best', 'fixed:<target>', "
        f"('quality_at_least', q), ('rules', rules[, default]) or a function of the case")


def _rules_policy(src: _Source, rules: Sequence[Any], default: Any) -> tuple[str, Order, bool]:
    from ..routing import Rule, estimated_input_tokens

    tests: list[tuple[Callable[[dict[str, Any]], bool], str]] = []
    for rule in rules:
        if isinstance(rule, Rule):
            tests.append((_rule_test(rule, estimated_input_tokens), _match_target(src, rule.target)))
        elif isinstance(rule, tuple) and len(rule) == 2:
            tests.append((_condition(rule[0]), _match_target(src, rule[1])))
        else:
            raise ConfigurationError(f"rules are routing Rule objects or (condition, target) "
                                     f"pairs; got {rule!r}")
    _, fallback, _ = _policy(src, default)

    def order(case: dict[str, Any]) -> list[str]:
        for test, target in tests:
            if test(case):
                return [target]
        return fallback(case)

    return f"rules ({len(tests)})", order, True


def _rule_test(rule: Any, tokens: Callable[[Request], int]) -> Callable[[dict[str, Any]], bool]:
    def test(case: dict[str, Any]) -> bool:
        req = Request(case["prompt"] or " ")
        return bool(rule.matches(req, "", tokens(req)))

    return test


def _condition(when: Any) -> Callable[[dict[str, Any]], bool]:
    if isinstance(when, str):
        pattern = re.compile(when)
        return lambda case: pattern.search(case["prompt"] or "") is not None
    if callable(when):
        return lambda case: bool(when({k: v for k, v in case.items() if k != "options"}))
    raise ConfigurationError("a rule's condition is a regex string or a function of the case")


def _named_policies(src: _Source, policies: Any, min_quality: float | None) -> list[tuple[str, Order, bool]]:
    if policies is None:
        policies = ["cheapest", "fastest", "best", *(f"fixed:{t}" for t in src.targets)]
        if min_quality is not None:
            policies.insert(3, ("quality_at_least", min_quality))
    if isinstance(policies, str | tuple) or callable(policies):
        policies = [policies]
    out = []
    if isinstance(policies, Mapping):
        for name, p in policies.items():
            _, order, falls = _policy(src, p)
            out.append((str(name), order, falls))
    else:
        out = [_policy(src, p) for p in policies]
    names = [n for n, _, _ in out]
    if len(set(names)) != len(names):
        raise ConfigurationError("two policies have the same name; pass a dict name -> policy")
    return out


# -- replaying -----------------------------------------------------------------------------


def policy_picks(source: Any, policies: Any = None, *, quality: str | None = None,
                 evaluators: Any = None) -> pd.DataFrame:
    """One row per policy and case: the target that would have served it (None when
    none could), its recorded cost, latency and quality, and whether it fell back."""
    import pandas as pd

    src = _source(source, quality, evaluators)
    return pd.DataFrame(_picks(src, _named_policies(src, policies, None)))


def _picks(src: _Source, policies: list[tuple[str, Order, bool]]) -> list[dict[str, Any]]:
    rows = []
    for name, order, falls in policies:
        for case in src.cases:
            wanted = order(case)
            chosen = next((t for t in wanted if t in case["options"]), None)
            if not falls and wanted and wanted[0] != chosen:
                chosen = None
            fig = case["options"].get(chosen, {}) if chosen else {}
            rows.append({"policy": name, "case": case["case"], "prompt": case["prompt"],
                         "target": chosen, "fell_back": bool(chosen and wanted and chosen != wanted[0]),
                         "cost_usd": fig.get("cost_usd"), "latency_s": fig.get("latency_s"),
                         "quality": fig.get("quality")})
    return rows


def what_if(source: Any, policies: Any = None, *, quality: str | None = None,
            min_quality: float | None = None, max_latency_s: float | None = None,
            latency_stat: str = "p95", evaluators: Any = None) -> pd.DataFrame:
    """Per policy: cases, served, unserved, fell back, total and mean cost, latency p50 and
    p95, mean quality and the picks. With `min_quality` / `max_latency_s` (on the p95, or
    `latency_stat="p50"`), also whether each policy meets them and serves every case
    (`eligible`). `evaluators` score ledger records, which hold no scores of their own."""
    import numpy as np
    import pandas as pd

    from ..batch._whatif import batch_total, is_batch_source

    if latency_stat not in ("p50", "p95"):
        raise ConfigurationError(f"latency_stat must be 'p50' or 'p95', not {latency_stat!r}")
    src = _source(source, quality, evaluators)
    named = _named_policies(src, policies, min_quality)
    picks = pd.DataFrame(_picks(src, named))
    rows = []
    for name, _, _ in named:
        part = picks[picks["policy"] == name]
        served = part[part["target"].notna()]
        cost = served["cost_usd"].to_numpy(dtype=np.float64, na_value=np.nan)
        lat = served["latency_s"].to_numpy(dtype=np.float64, na_value=np.nan)
        lat = lat[~np.isnan(lat)]
        qual = served["quality"].to_numpy(dtype=np.float64, na_value=np.nan)
        counts = Counter(served["target"])
        rows.append({
            "policy": name, "cases": len(part), "served": len(served),
            "unserved": len(part) - len(served), "fell_back": int(served["fell_back"].sum()),
            "total_cost_usd": float(np.nansum(cost)) if len(cost) else 0.0,
            # The same runs on the vendors' batch engines, where they have one (half price).
            "batch_total_cost_usd": batch_total(served["target"], cost,
                                                already_batch=is_batch_source(source)),
            "mean_cost_usd": float(np.nanmean(cost)) if np.isfinite(cost).any() else np.nan,
            "latency_p50_s": float(np.quantile(lat, 0.5)) if len(lat) else np.nan,
            "latency_p95_s": float(np.quantile(lat, 0.95)) if len(lat) else np.nan,
            "quality": float(np.nanmean(qual)) if np.isfinite(qual).any() else np.nan,
            "picks": ", ".join(f"{t} x{n}" for t, n in counts.most_common()),
        })
    table = pd.DataFrame(rows).set_index("policy")
    if min_quality is not None or max_latency_s is not None:
        table["meets_quality"] = True if min_quality is None else table["quality"] >= min_quality
        table["meets_latency"] = (True if max_latency_s is None
                                  else table[f"latency_{latency_stat}_s"] <= max_latency_s)
        table["eligible"] = table["meets_quality"] & table["meets_latency"] & (table["unserved"] == 0)
    return table


@dataclass
class Recommendation:
    """The cheapest policy that meets the floors (None when none does), the table behind
    the choice (every policy, cheapest first, with `eligible` and `recommended`) and why."""

    policy: str | None
    table: pd.DataFrame
    reason: str

    def __repr__(self) -> str:
        return f"Recommendation({self.policy!r}: {self.reason})"

    def _repr_html_(self) -> str:
        import html

        return f"<p><b>{html.escape(str(self.policy))}</b>: {html.escape(self.reason)}</p>" + \
            self.table.to_html()


def recommend(source: Any, policies: Any = None, *, min_quality: float | None = None,
              max_latency_s: float | None = None, latency_stat: str = "p95",
              quality: str | None = None, evaluators: Any = None,
              batch: bool = False) -> Recommendation:
    """The cheapest policy (by total cost) that serves every case with mean quality >=
    `min_quality` and latency (p95, or `latency_stat`) <= `max_latency_s`. `batch=True`:
    the work can wait for the vendors' batch engines, so policies are ranked by their
    batch cost (no latency floor then: a batch answers within hours)."""
    from ..resilience import money

    if batch and max_latency_s is not None:
        raise ConfigurationError("batch=True ranks by the batch price, and a batch answers "
                                 "within hours: drop max_latency_s, or leave batch off")

    table = what_if(source, policies, quality=quality, min_quality=min_quality,
                    max_latency_s=max_latency_s, latency_stat=latency_stat,
                    evaluators=evaluators)
    if "eligible" not in table.columns:
        table["eligible"] = table["unserved"] == 0
    cost_column = "batch_total_cost_usd" if batch else "total_cost_usd"
    table = table.sort_values(["eligible", cost_column, "quality"],
                              ascending=[False, True, False], kind="stable")
    table["recommended"] = False
    floors = []
    if min_quality is not None:
        floors.append(f"quality >= {min_quality:g}")
    if max_latency_s is not None:
        floors.append(f"{latency_stat} latency <= {max_latency_s:g} s")
    floors.append("every case served")
    if not bool(table["eligible"].any()):
        return Recommendation(None, table, "no policy meets " + " and ".join(floors))
    best = str(table.index[0])
    table.loc[best, "recommended"] = True
    row = table.loc[best]
    q = row["quality"]
    reason = (f"cheapest policy with {' and '.join(floors)}: {money(float(row[cost_column]))} "
              f"{'as batches ' if batch else ''}"
              f"for {int(row['cases'])} cases, quality "
              f"{'unknown' if q != q else format(float(q), '.3f')}, p95 latency "
              f"{float(row['latency_p95_s']):.3f} s")
    return Recommendation(best, table, reason)
