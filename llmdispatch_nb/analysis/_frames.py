"""`calls()` and `summary()`: the ledger as DataFrames (pandas is imported on first call)."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from .._types import CallRecord
from ..ledger._stats import SUCCESS

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

Source = Any  # a Ledger, a Dispatcher, records, a DataFrame, a path, or None


def calls(source: Source = None, *, session: str | None = None,
          since: float | dt.datetime | None = None,
          tags: str | Iterable[str] | None = None, user: str | None = None,
          until: float | dt.datetime | None = None) -> pd.DataFrame:
    """Every attempt as a tidy DataFrame, one row per attempt, in the order they were
    recorded: each when it ended, so concurrent calls come out of the order they were sent
    (`timestamp` is the send time; `.sort_values("timestamp", kind="stable")` for that
    order, not done here: at a million rows it costs a tenth to a fifth of this read).

    `source`: a `Ledger`, a `Dispatcher` (its ledger, this dispatcher's session only), a
    list of `CallRecord`s, a ledger file path, or None (the default ledger). Columns are
    typed: categoricals for call_id, session, vendor, model, status and the other labels;
    `timestamp` in UTC; nullable Int64 token counts and Float64 times and costs; bools for
    the flags; `tokens_per_s` is output tokens over the time after the first token;
    `original_latency_s` is a cache or replay hit's recorded latency, `repaired` what the
    ledger changed to store the record (a label, mostly null); `schema_valid` whether a
    structured answer matched its schema (nullable boolean, <NA> when none was asked).
    A team ledger (PostgreSQL) runs these filters on the server and adds a `user` column;
    `user` and `until` (before that time) are for it.
    """
    from ..ledger._postgres import configured_ledger, server_side

    if source is None:
        source = configured_ledger()
    if (team := server_side(source)) is not None:
        return team[0].frame(session=session if session is not None else team[1], user=user,
                             since=since, until=until, tags=tags)
    if user is not None or until is not None:
        raise ValueError("user= and until= filter a team ledger (PostgreSQL) only")
    frame, own_session = _frame(source)
    session = session if session is not None else own_session
    mask = None
    if session is not None:
        mask = _and(mask, (frame["session"] == session).to_numpy(dtype=bool, na_value=False))
    if since is not None:
        import pandas as pd

        # Rounded to the microsecond, as the frame's timestamps are.
        when = pd.Timestamp(round(since * 1e6), unit="us", tz="UTC") \
            if isinstance(since, int | float) else pd.Timestamp(since)
        if when.tzinfo is None:
            when = when.tz_localize("UTC")
        when = when.round("us")
        mask = _and(mask, (frame["timestamp"] >= when).to_numpy())
    for tag in [tags] if isinstance(tags, str) else list(tags or ()):
        has = frame["tags"].cat.categories.map(lambda t, tag=tag: tag in t.split(","))
        mask = _and(mask, frame["tags"].isin(frame["tags"].cat.categories[has]).to_numpy())
    if mask is not None:
        frame = frame.loc[mask].reset_index(drop=True)
    return frame


def _and(a: np.ndarray | None, b: np.ndarray) -> np.ndarray:
    return b if a is None else a & b


def _frame(source: Source) -> tuple[pd.DataFrame, str | None]:
    from ..ledger import Ledger, default_ledger
    from ..ledger._frame import frame_from_records

    if source is None:
        return default_ledger().dataframe(), None
    if isinstance(source, Ledger):
        return source.dataframe(), None
    if isinstance(source, str | os.PathLike):
        return Ledger(source).dataframe(), None
    ledger = getattr(source, "ledger", None)
    if ledger is not None and hasattr(source, "session"):  # a Dispatcher
        frame, _ = _frame(ledger)
        return frame, source.session
    records = getattr(source, "records", None)
    if isinstance(records, list):  # a list-backed ledger (MemoryLedger)
        return frame_from_records(records), None
    if _is_frame(source):
        return source, None
    items = list(source)
    if not all(isinstance(r, CallRecord) for r in items):
        raise TypeError("calls() reads a Ledger, a Dispatcher, a list of CallRecords or a "
                        f"ledger path; got {type(source).__name__}")
    return frame_from_records(items), None


def _is_frame(value: Any) -> bool:
    return type(value).__name__ == "DataFrame" and hasattr(value, "columns")


SUMMARY_COLUMNS = (
    "calls", "attempts", "successes", "success_rate", "retries", "fallbacks", "cache_hits",
    "latency_p50_s", "latency_p95_s", "ttft_p50_s", "ttft_p95_s", "tokens_per_s",
    "input_tokens", "output_tokens", "total_cost_usd", "mean_cost_usd", "cost_per_1k_tokens",
    "unknown_cost",
)


def summary(source: Source = None, by: str | Sequence[str] = ("vendor", "model")) -> pd.DataFrame:
    """Per vendor and model (or `by` any columns; `by=()` for one row of totals): calls,
    attempts, success rate, p50/p95 latency and time to first token over successful
    attempts, median tokens per second, tokens, total and mean cost, cost per 1K tokens,
    and how many successful attempts had no known price. A DataFrame (a `SummaryTable`)
    that a notebook shows as its curated columns, formatted; `.frame` is the plain frame.

    The same definitions as `llmdispatch_nb.ledger.summarize_stats` (and so the
    dispatcher's stats()): a call is a call_id, an attempt is a row.
    """
    import numpy as np
    import pandas as pd

    df = source if _is_frame(source) else calls(source)
    keys = [by] if isinstance(by, str) else list(by)
    group, index = _groups(df, keys)
    ng = len(index)
    ok = df["status"].isin(sorted(SUCCESS)).to_numpy(dtype=bool)
    # Column arrays are made one at a time and dropped after use: a million-row frame
    # should not need its size again in scratch space.

    def count(flag: np.ndarray) -> np.ndarray:
        return np.bincount(group[flag], minlength=ng)

    def total(column: str, rows: np.ndarray | None = None) -> np.ndarray:
        values = _floats(df[column], 0.0)
        if rows is None:
            return np.bincount(group, weights=values, minlength=ng)
        return np.bincount(group[rows], weights=values[rows], minlength=ng)

    out: dict[str, Any] = {}
    out["calls"], out["successes"] = _distinct_calls(_codes(df["call_id"]), group, ng, ok)
    out["attempts"] = np.bincount(group, minlength=ng)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["success_rate"] = np.where(out["calls"] > 0,
                                       out["successes"] / np.maximum(out["calls"], 1), np.nan)
        out["retries"] = count(df["retried"].to_numpy(dtype=bool))
        out["fallbacks"] = count(df["fell_back"].to_numpy(dtype=bool))
        out["cache_hits"] = count(df["cache_hit"].to_numpy(dtype=bool))
        order = np.argsort(group, kind="stable")
        # A batch answer's latency is its batch's turnaround: kept out of live latency.
        live = ok & ~df["route_reason"].astype("string").str.startswith("batch ").fillna(
            False).to_numpy(dtype=bool)
        bounds = np.concatenate([[0], np.cumsum(out["attempts"])])
        for column, names in (("latency_s", ("latency_p50_s", "latency_p95_s")),
                              ("ttft_s", ("ttft_p50_s", "ttft_p95_s")),
                              ("tokens_per_s", ("tokens_per_s", None))):
            p50, p95 = _group_quantiles(_floats(df[column]), live, order, bounds)
            out[names[0]] = p50
            if names[1]:
                out[names[1]] = p95
        del order
        out["input_tokens"] = total("input_tokens").astype(np.int64)
        out["output_tokens"] = total("output_tokens").astype(np.int64)
        known = df["cost_usd"].notna().to_numpy(dtype=bool)
        cost = total("cost_usd", known)
        priced = count(known)
        priced_tokens = total("input_tokens", known) + total("output_tokens", known)
        out["total_cost_usd"] = cost
        out["mean_cost_usd"] = np.where(priced > 0, cost / np.maximum(priced, 1), np.nan)
        out["cost_per_1k_tokens"] = np.where(priced_tokens > 0,
                                             cost / np.maximum(priced_tokens, 1) * 1000, np.nan)
        out["unknown_cost"] = count(ok & ~known)
    out = {name: out[name] for name in SUMMARY_COLUMNS}
    frame = pd.DataFrame(out, index=index)
    for name in ("success_rate", "latency_p50_s", "latency_p95_s", "ttft_p50_s", "ttft_p95_s",
                 "tokens_per_s", "mean_cost_usd", "cost_per_1k_tokens"):
        frame[name] = frame[name].astype("Float64")
    frame = frame.reset_index(drop=not keys)
    for k in keys:  # labels as plain values, whichever way the groups were found
        if isinstance(frame[k].dtype, pd.CategoricalDtype):
            frame[k] = frame[k].astype(frame[k].cat.categories.dtype)
    from ._tables import SummaryTable

    return SummaryTable(frame)  # every column; a notebook shows the curated few


def _groups(df: pd.DataFrame, keys: list[str]) -> tuple[np.ndarray, pd.Index]:
    """Each row's group number (groups in sorted key order) and the groups' keys."""
    import numpy as np
    import pandas as pd

    if not keys:
        return np.zeros(len(df), dtype=np.int64), pd.RangeIndex(1 if len(df) else 0)
    if all(isinstance(df[k].dtype, pd.CategoricalDtype) and df[k].cat.ordered is False
           and df[k].cat.categories.is_monotonic_increasing for k in keys) \
            and not any(df[k].isna().any() for k in keys):
        # Categorical codes combine into one number per row: far cheaper than groupby.
        combined = np.zeros(len(df), dtype=np.int64)
        for k in keys:
            combined = combined * len(df[k].cat.categories) + df[k].cat.codes.to_numpy(np.int64)
        present = np.flatnonzero(np.bincount(combined)) if len(df) else np.empty(0, np.int64)
        number = np.full(int(np.max(combined)) + 1 if len(combined) else 0, -1, dtype=np.int64)
        number[present] = np.arange(len(present))
        levels = []
        rest = present
        for k in reversed(keys):
            size = len(df[k].cat.categories)
            levels.append(df[k].cat.categories[rest % size])
            rest = rest // size
        levels.reverse()
        index = (pd.MultiIndex.from_arrays(levels, names=keys) if len(keys) > 1
                 else pd.Index(levels[0], name=keys[0]))
        return number[combined], index
    grouped = df.groupby(keys, observed=True, sort=True)
    return grouped.ngroup().to_numpy(dtype=np.int64), grouped.size().index


def _codes(column: pd.Series) -> np.ndarray:
    import numpy as np
    import pandas as pd

    if isinstance(column.dtype, pd.CategoricalDtype):
        return column.cat.codes.to_numpy(dtype=np.int64)
    return pd.factorize(column)[0].astype(np.int64)


def _floats(column: pd.Series, fill: float = float("nan")) -> np.ndarray:
    import numpy as np

    return column.to_numpy(dtype=np.float64, na_value=fill)


def _distinct_calls(call: np.ndarray, group: np.ndarray, ng: int,
                    ok: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct call ids per group, among all rows and among the successful ones."""
    import numpy as np

    n_calls = int(call.max(initial=-1)) + 1
    if ng == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if ng * n_calls <= 64_000_000:  # a seen-table: one scatter per count, no sort
        seen = np.zeros(ng * max(n_calls, 1), dtype=np.bool_)
        flat = group * n_calls + call
        seen[flat] = True
        calls = seen.reshape(ng, -1).sum(axis=1)
        seen[:] = False
        seen[flat[ok]] = True
        return calls, seen.reshape(ng, -1).sum(axis=1)
    pairs = group * n_calls + call
    return (np.bincount(np.unique(pairs) // n_calls, minlength=ng),
            np.bincount(np.unique(pairs[ok]) // n_calls, minlength=ng))


def _group_quantiles(values: np.ndarray, ok: np.ndarray, order: np.ndarray,
                     bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """p50 and p95 (linear interpolation, as numpy and summarize_stats) of `values` over
    the successful rows of each group; `order` sorts rows by group, `bounds` delimits them.
    One partition-based quantile per group slice: cheaper than sorting per metric."""
    import numpy as np

    ng = len(bounds) - 1
    values = values[order]
    keep = ok[order] & ~np.isnan(values)
    p50 = np.full(ng, np.nan)
    p95 = np.full(ng, np.nan)
    for g in range(ng):
        part = slice(bounds[g], bounds[g + 1])
        seg = values[part][keep[part]]
        if len(seg):
            p50[g], p95[g] = np.quantile(seg, [0.5, 0.95])
    return p50, p95
