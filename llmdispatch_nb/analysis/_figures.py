"""Plotly figures of a calls() DataFrame (filter the frame first to narrow a chart).

Each figure draws aggregates, not one mark per attempt, so a million-row ledger gives a
figure of a few kilobytes, built from column arrays without copying the frame.
Distributions are boxes from exact quantiles: the box spans p25-p75 with the median
inside, the whiskers reach p5 and p95.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..ledger._stats import SUCCESS
from ._frames import _groups, summary

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import plotly.graph_objects as go

_LAYOUT = {"template": "plotly_white", "margin": {"l": 60, "r": 20, "t": 60, "b": 60}}
_SPEND_POINTS = 2000


def _go() -> Any:
    import plotly.graph_objects as go

    return go


def _ok(df: pd.DataFrame) -> np.ndarray:
    import numpy as np

    return df["status"].isin(sorted(SUCCESS)).to_numpy(dtype=np.bool_)


def _by(df: pd.DataFrame, by: str) -> tuple[np.ndarray, list[str]]:
    """Each row's group number and the groups' names: vendors, or vendor:model (azure and
    openai both serve a "gpt-4o")."""
    if by not in ("vendor", "model"):
        raise ValueError(f"by must be 'vendor' or 'model', not {by!r}")
    group, index = _groups(df, ["vendor"] if by == "vendor" else ["vendor", "model"])
    names = [str(k) if by == "vendor" else f"{k[0]}:{k[1]}" for k in index]
    return group, names


def _floats(df: pd.DataFrame, column: str) -> np.ndarray:
    import numpy as np

    return df[column].to_numpy(dtype=np.float64, na_value=np.nan)


def _box_figure(df: pd.DataFrame, column: str, by: str, title: str, unit: str) -> go.Figure:
    import numpy as np

    go = _go()
    fig = go.Figure()
    group, names = _by(df, by)
    values = _floats(df, column)
    keep = _ok(df) & ~np.isnan(values)
    group, values = group[keep], values[keep]
    order = np.argsort(group, kind="stable")
    values = values[order]
    bounds = np.concatenate([[0], np.cumsum(np.bincount(group, minlength=len(names)))])
    for g in sorted(range(len(names)), key=names.__getitem__):
        v = values[bounds[g]:bounds[g + 1]]
        if not len(v):
            continue
        p5, q1, med, q3, p95 = np.quantile(v, [0.05, 0.25, 0.5, 0.75, 0.95])
        fig.add_trace(go.Box(name=names[g], x=[names[g]], q1=[q1], median=[med], q3=[q3],
                             lowerfence=[p5], upperfence=[p95], mean=[float(v.mean())],
                             boxpoints=False,
                             hovertemplate=f"%{{x}}<br>n={len(v)}<extra></extra>"))
    fig.update_layout(title=f"{title} (box p25-p75, whiskers p5-p95)", yaxis_title=unit,
                      showlegend=False, **_LAYOUT)
    return fig


def latency_figure(df: pd.DataFrame, by: str = "vendor") -> go.Figure:
    """Latency of successful attempts, per vendor (or by="model")."""
    return _box_figure(df, "latency_s", by, "Latency", "seconds")


def ttft_figure(df: pd.DataFrame, by: str = "vendor") -> go.Figure:
    """Time to first token of successful streamed attempts, per vendor (or by="model")."""
    return _box_figure(df, "ttft_s", by, "Time to first token", "seconds")


def throughput_figure(df: pd.DataFrame, by: str = "model") -> go.Figure:
    """Output tokens per second (after the first token), per vendor:model (or by="vendor")."""
    return _box_figure(df, "tokens_per_s", by, "Tokens per second", "output tokens / s")


def tradeoff_figure(df: pd.DataFrame) -> go.Figure:
    """Cost against latency: one point per vendor:model (median latency, mean cost per
    priced attempt), sized by the number of calls, labelled with the model."""
    import numpy as np

    go = _go()
    table = summary(df)
    fig = go.Figure()
    vendors = table["vendor"].astype(str).to_numpy() if len(table) else np.empty(0, str)
    biggest = max(1, int(table["calls"].max())) if len(table) else 1
    for vendor in sorted(set(vendors)):
        part = table[vendors == vendor]
        x = part["latency_p50_s"].to_numpy(dtype=np.float64, na_value=np.nan)
        y = part["mean_cost_usd"].to_numpy(dtype=np.float64, na_value=np.nan)
        keep = ~(np.isnan(x) | np.isnan(y))
        if not keep.any():
            continue
        calls = part["calls"].to_numpy()[keep]
        fig.add_trace(go.Scatter(
            x=x[keep], y=y[keep], mode="markers+text", name=vendor,
            text=part["model"].astype(str).to_numpy()[keep], textposition="top center",
            marker={"size": 10 + 30 * np.sqrt(calls / biggest)}, customdata=calls,
            hovertemplate="%{text}<br>p50 latency %{x:.3f} s<br>mean cost $%{y:.6f}"
                          "<br>%{customdata} calls<extra>" + vendor + "</extra>"))
    fig.update_layout(title="Cost vs latency per model", xaxis_title="p50 latency (s)",
                      yaxis_title="mean cost per priced attempt (USD)", **_LAYOUT)
    return fig


def spend_figure(df: pd.DataFrame) -> go.Figure:
    """Cumulative known spend over time, per vendor and in total."""
    import numpy as np

    go = _go()
    fig = go.Figure()
    cost = _floats(df, "cost_usd")
    priced = ~np.isnan(cost)
    stamps = df["timestamp"]
    if getattr(stamps.dt, "tz", None) is not None:  # else to_numpy() makes Timestamp objects
        stamps = stamps.dt.tz_convert("UTC").dt.tz_localize(None)
    times = stamps.to_numpy()[priced]
    cost = cost[priced]
    group, names = _by(df, "vendor")
    group = group[priced]
    order = np.argsort(times, kind="stable")
    times, cost, group = times[order], cost[order], group[order]
    lines = [("total", np.ones(len(cost), dtype=np.bool_))]
    lines += [(names[g], group == g) for g in sorted(range(len(names)), key=names.__getitem__)]
    for name, rows in lines:
        if not rows.any():
            continue
        t, total = _thin(times[rows], np.cumsum(cost[rows]))
        fig.add_trace(go.Scatter(x=t, y=total, mode="lines", name=name,
                                 line={"width": 3 if name == "total" else 1.5},
                                 hovertemplate="%{x}<br>$%{y:.4f}<extra>" + name + "</extra>"))
    fig.update_layout(title="Cumulative spend", xaxis_title="time (UTC)",
                      yaxis_title="US dollars (known prices)", **_LAYOUT)
    return fig


def _thin(times: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """At most _SPEND_POINTS points of a running total, always keeping the last."""
    import numpy as np

    if len(values) <= _SPEND_POINTS:
        return times, values
    pick = np.unique(np.linspace(0, len(values) - 1, _SPEND_POINTS).astype(np.int64))
    return times[pick], values[pick]


def error_figure(df: pd.DataFrame) -> go.Figure:
    """The share of attempts that failed, per vendor:model, stacked by error class."""
    import numpy as np
    import pandas as pd

    go = _go()
    fig = go.Figure()
    group, names = _by(df, "model")
    attempts = np.bincount(group, minlength=len(names))
    failed = ~_ok(df)
    errors = df["error_class"]
    if not isinstance(errors.dtype, pd.CategoricalDtype):
        errors = errors.astype("category")
    codes = errors.cat.codes.to_numpy(dtype=np.int64)[failed]
    classes = [*map(str, errors.cat.categories), "unknown"]
    codes = np.where(codes < 0, len(classes) - 1, codes)
    counts = np.zeros((len(classes), len(names)), dtype=np.int64)
    np.add.at(counts, (codes, group[failed]), 1)
    order = sorted(range(len(names)), key=names.__getitem__)
    for c in sorted(range(len(classes)), key=classes.__getitem__):
        if not counts[c].any():
            continue
        shares = counts[c][order] / np.maximum(attempts[order], 1)
        fig.add_trace(go.Bar(name=classes[c], x=[names[g] for g in order], y=shares,
                             hovertemplate="%{x}<br>%{y:.1%} of attempts<extra>" + classes[c]
                                           + "</extra>"))
    fig.update_layout(title="Error rate per model (share of attempts)", barmode="stack",
                      yaxis_tickformat=".0%", yaxis_title="failed attempts", **_LAYOUT)
    return fig
