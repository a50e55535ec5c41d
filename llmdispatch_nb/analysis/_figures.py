"""Plotly figures of a calls() DataFrame (filter the frame first to narrow a chart).

Each figure draws aggregates, not one mark per attempt, so a million-row ledger gives a
figure of a few kilobytes, built from column arrays without copying the frame.
Distributions are boxes from exact quantiles: the box spans p25-p75 with the median
inside, the whiskers reach p5 and p95; a group of fewer than `FEW` values is drawn as its
points instead (a box of one value is a flat line that says nothing). Every figure
shares the look of `_style`: vendor colours, dollar and second axes, labels placed
where they fit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..ledger._stats import SUCCESS
from ._frames import _groups, summary
from ._style import (
    colour,
    dollar_axis,
    label_trace_args,
    layout,
    padded_range,
    place_labels,
    seconds_axis,
)

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import plotly.graph_objects as go

_SPEND_POINTS = 2000
FEW = 5  # fewer values than this in a group: draw the points, not a box
_MIN_SPAN_S = 60.0  # calls within less than this: the spend chart counts calls, not time


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


def _box_figure(df: pd.DataFrame, column: str, by: str, title: str, unit: str,
                axis: dict[str, Any] | None = None) -> go.Figure:
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
    for i, g in enumerate(sorted(range(len(names)), key=names.__getitem__)):
        v = values[bounds[g]:bounds[g + 1]]
        if not len(v):
            continue
        tint = colour(names[g], i)
        if len(v) < FEW:  # the points themselves, jittered sideways: a box would be flat
            fig.add_trace(go.Box(name=names[g], x=[names[g]] * len(v), y=v, boxpoints="all",
                                 jitter=0.35, pointpos=0, fillcolor="rgba(0,0,0,0)",
                                 line={"color": "rgba(0,0,0,0)"},
                                 marker={"color": tint, "size": 11, "opacity": 0.9,
                                         "line": {"width": 1, "color": "white"}},
                                 hovertemplate=f"%{{x}}<br>%{{y:.3f}} {unit}<br>"
                                               f"{len(v)} of {len(v)}<extra></extra>"))
            continue
        p5, q1, med, q3, p95 = np.quantile(v, [0.05, 0.25, 0.5, 0.75, 0.95])
        fig.add_trace(go.Box(name=names[g], x=[names[g]], q1=[q1], median=[med], q3=[q3],
                             lowerfence=[p5], upperfence=[p95], mean=[float(v.mean())],
                             boxpoints=False, marker={"color": tint}, line={"color": tint},
                             hovertemplate=f"%{{x}}<br>n={len(v)}<extra></extra>"))
    fig.update_layout(**layout(title, f"box p25–p75 with the median, whiskers p5–p95; "
                                      f"the points themselves when fewer than {FEW}"),
                      yaxis=axis or seconds_axis(unit), showlegend=False)
    return fig


def latency_figure(df: pd.DataFrame, by: str = "vendor") -> go.Figure:
    """Latency of successful attempts, per vendor (or by="model")."""
    return _box_figure(df, "latency_s", by, "Latency per " + by, "seconds")


def ttft_figure(df: pd.DataFrame, by: str = "vendor") -> go.Figure:
    """Time to first token of successful streamed attempts, per vendor (or by="model")."""
    return _box_figure(df, "ttft_s", by, "Time to first token per " + by, "seconds")


def throughput_figure(df: pd.DataFrame, by: str = "model") -> go.Figure:
    """Output tokens per second (after the first token), per vendor:model (or by="vendor")."""
    return _box_figure(df, "tokens_per_s", by, "Tokens per second per " + by,
                       "output tokens / s",
                       {"title": {"text": "output tokens / s"}, "rangemode": "tozero"})


def tradeoff_figure(df: pd.DataFrame) -> go.Figure:
    """Cost against latency: one point per vendor:model (median latency, mean cost per
    priced attempt), sized by the number of calls, labelled with the model."""
    import numpy as np

    go = _go()
    table = summary(df).frame
    fig = go.Figure()
    x_all = table["latency_p50_s"].to_numpy(dtype=np.float64, na_value=np.nan)
    y_all = table["mean_cost_usd"].to_numpy(dtype=np.float64, na_value=np.nan)
    keep_all = ~(np.isnan(x_all) | np.isnan(y_all))
    table, x_all, y_all = table[keep_all], x_all[keep_all], y_all[keep_all]
    biggest = max(1, int(table["calls"].max())) if len(table) else 1
    sizes = 12 + 24 * np.sqrt(table["calls"].to_numpy(dtype=np.float64) / biggest)
    xrange = padded_range(x_all, zero=True, high=0.15) or [0.0, 1.0]
    yrange = padded_range(y_all, zero=True, high=0.2) or [0.0, 1.0]
    names = table["model"].astype(str).to_numpy()
    # Labels are placed over all points at once, so two vendors' labels never collide.
    positions = place_labels(x_all, y_all, list(names), list(sizes), xrange, yrange)
    vendors = table["vendor"].astype(str).to_numpy()
    for i, vendor in enumerate(sorted(set(vendors))):
        rows = vendors == vendor
        calls = table["calls"].to_numpy()[rows]
        fig.add_trace(go.Scatter(
            x=x_all[rows], y=y_all[rows], mode="markers+text", name=vendor, text=names[rows],
            **label_trace_args([p for p, r in zip(positions, rows, strict=True) if r]),
            marker={"size": sizes[rows], "color": colour(vendor, i), "opacity": 0.85,
                    "line": {"width": 1, "color": "white"}},
            customdata=calls, textfont={"size": 11},
            hovertemplate="%{text}<br>p50 latency %{x:.3f} s<br>mean cost $%{y:.6f}"
                          "<br>%{customdata} calls<extra>" + vendor + "</extra>"))
    fig.update_layout(**layout("Cost vs latency per model",
                               "one point per model, sized by its number of calls"),
                      xaxis=seconds_axis("p50 latency", range=xrange),
                      yaxis=dollar_axis("mean cost per priced attempt", range=yrange),
                      legend={"title": {"text": "vendor"}})
    return fig


def spend_figure(df: pd.DataFrame) -> go.Figure:
    """Cumulative known spend over time, per vendor and in total. Calls all sent within a
    minute are drawn against their order (call 1, 2, 3...): over a time axis they would
    stand in one vertical line, or fill the axis with milliseconds."""
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
    span = float((times[-1] - times[0]) / np.timedelta64(1, "s")) if len(times) else 0.0
    by_order = span < _MIN_SPAN_S
    position = np.arange(1, len(times) + 1) if by_order else times
    lines = [("total", np.ones(len(cost), dtype=np.bool_))]
    lines += [(names[g], group == g) for g in sorted(range(len(names)), key=names.__getitem__)]
    for i, (name, rows) in enumerate(lines):
        if not rows.any():
            continue
        x, total = _thin(position[rows], np.cumsum(cost[rows]))
        few = len(x) <= 60  # a handful of calls: show each one as a step with its point
        fig.add_trace(go.Scatter(
            x=x, y=total, mode="lines+markers" if few else "lines", name=name,
            line={"width": 3 if name == "total" else 1.5, "shape": "hv",
                  "color": "#24292f" if name == "total" else colour(name, i)},
            marker={"size": 7}, hovertemplate=("call %{x}" if by_order else "%{x|%H:%M:%S.%L}")
            + "<br>$%{y:.6f} so far<extra>" + name + "</extra>"))
    if by_order:
        xaxis: dict[str, Any] = {
            "title": {"text": f"call, in the order sent (all within {span:.1f} s)"},
            "tickformat": "d", "dtick": max(1, len(times) // 10) if len(times) else 1,
            "range": [0.5, len(times) + 0.5]}
    else:
        xaxis = {"title": {"text": "time (UTC)"}, "tickformat": "%H:%M:%S"}
    fig.update_layout(**layout("Cumulative spend", "known prices, in total and per vendor"),
                      xaxis=xaxis, yaxis=dollar_axis("US dollars"),
                      legend={"orientation": "h", "yanchor": "bottom", "y": 1.0,
                              "xanchor": "right", "x": 1.0})
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
                             marker={"color": colour(classes[c], c)},
                             hovertemplate="%{x}<br>%{y:.1%} of attempts<extra>" + classes[c]
                                           + "</extra>"))
    fig.update_layout(**layout("Error rate per model", "share of attempts, by error class"),
                      barmode="stack", yaxis={"tickformat": ".0%",
                                              "title": {"text": "failed attempts"}},
                      legend={"title": {"text": "error class"}})
    return fig
