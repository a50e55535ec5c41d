"""`summarize_stats(records)`: the numbers a dispatcher's `stats()` shows, from records.

A call is a call_id; an attempt is a record. Both are counted:

    calls / attempts              distinct call ids / records
    successes / failures          calls with / without a successful attempt
    ok_attempts / failed_attempts records whose status is / is not "ok" or "cached"
    retries / fallbacks           records with retried=True / fell_back=True
    cache_hits                    records with cache_hit=True
    latency_s, ttft_s             p50/p95/p99/mean over successful attempts
    tokens_per_s                  median of per-attempt output tokens per second (successful)
    input_tokens, output_tokens   sums over all attempts
    cost_usd                      sum of known costs; unknown_cost counts successful attempts
                                  without a price (never read as $0)
    mean_cost_usd                 mean of the known costs
    cost_per_1k_tokens            known cost per 1,000 tokens (in + out) of the priced attempts

`analysis.summary()` computes the same figures with pandas from the same records (the
percentiles interpolate linearly, as numpy and pandas do), and a test holds them equal.
Pure Python: the core has no numpy.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from .._types import CallRecord

SUCCESS = frozenset({"ok", "cached"})


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """The q-th quantile (0..1) by linear interpolation between closest ranks."""
    n = len(sorted_values)
    if n == 0:
        return None
    h = (n - 1) * q
    lo = math.floor(h)
    hi = min(lo + 1, n - 1)
    return sorted_values[lo] + (h - lo) * (sorted_values[hi] - sorted_values[lo])


def _distribution(values: list[float]) -> dict[str, float | None]:
    values.sort()
    return {"p50": percentile(values, 0.5), "p95": percentile(values, 0.95),
            "p99": percentile(values, 0.99),
            "mean": (math.fsum(values) / len(values)) if values else None,
            "n": len(values)}


def _group(records: Sequence[CallRecord]) -> dict[str, Any]:
    calls: set[str] = set()
    succeeded: set[str] = set()
    ok = retries = fallbacks = cache_hits = unknown_cost = 0
    latency: list[float] = []
    ttft: list[float] = []
    rates: list[float] = []
    tokens_in = tokens_out = priced_tokens = 0
    costs: list[float] = []
    for r in records:
        calls.add(r.call_id)
        good = r.status in SUCCESS
        if good:
            ok += 1
            succeeded.add(r.call_id)
            # A batch answer's latency is its batch's turnaround (hours): not a live latency.
            batch = (r.route_reason or "").startswith("batch ")
            if r.latency_s is not None and not batch:
                latency.append(r.latency_s)
            if r.ttft_s is not None:
                ttft.append(r.ttft_s)
            rate = None if batch else r.output_tokens_per_s
            if rate is not None:
                rates.append(rate)
            if r.cost_usd is None:
                unknown_cost += 1
        retries += bool(r.retried)
        fallbacks += bool(r.fell_back)
        cache_hits += bool(r.cache_hit)
        tokens_in += r.input_tokens or 0
        tokens_out += r.output_tokens or 0
        if r.cost_usd is not None:
            costs.append(r.cost_usd)
            priced_tokens += (r.input_tokens or 0) + (r.output_tokens or 0)
    n_calls = len(calls)
    rates.sort()
    total_cost = math.fsum(costs)
    return {
        "calls": n_calls,
        "attempts": len(records),
        "successes": len(succeeded),
        "failures": n_calls - len(succeeded),
        "success_rate": (len(succeeded) / n_calls) if n_calls else None,
        "ok_attempts": ok,
        "failed_attempts": len(records) - ok,
        "retries": retries,
        "fallbacks": fallbacks,
        "cache_hits": cache_hits,
        "latency_s": _distribution(latency),
        "ttft_s": _distribution(ttft),
        "tokens_per_s": percentile(rates, 0.5),
        "input_tokens": tokens_in,
        "output_tokens": tokens_out,
        "cost_usd": total_cost,
        "mean_cost_usd": (total_cost / len(costs)) if costs else None,
        "cost_per_1k_tokens": (total_cost / priced_tokens * 1000) if priced_tokens else None,
        "unknown_cost": unknown_cost,
    }


def summarize_stats(records: Iterable[CallRecord]) -> dict[str, Any]:
    """Totals, then the same figures `per_vendor` and `per_model` ("vendor:model" as asked)."""
    recs = list(records)
    by_vendor: dict[str, list[CallRecord]] = {}
    by_model: dict[str, list[CallRecord]] = {}
    for r in recs:
        by_vendor.setdefault(r.vendor, []).append(r)
        by_model.setdefault(f"{r.vendor}:{r.model_requested}", []).append(r)
    out = _group(recs)
    out["per_vendor"] = {k: _group(v) for k, v in sorted(by_vendor.items())}
    out["per_model"] = {k: _group(v) for k, v in sorted(by_model.items())}
    return out
