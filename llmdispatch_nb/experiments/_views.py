"""Views of a sweep: a pivot by target, and the cost / quality trade-off with its Pareto front.

    pivot(df)                          # runs, errors, mean scores, cost and latency per target
    tradeoff_table(df)                 # per target: cost, quality, latency, pareto (bool)
    tradeoff_chart(df, quality="judge:openai:gpt-4o")   # plotly scatter, front drawn as a line

Costs are per answered run at list price (`cost_usd`), latencies over answered runs.
A target is on the Pareto front when no other target is at least as cheap and at least
as good with one of the two strictly better. pandas and plotly load on first use.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    import plotly.graph_objects as go

def score_columns(df: pd.DataFrame) -> list[str]:
    """The evaluator columns of a sweep frame (and `score`, their mean, when present)."""
    named = [c for c in df.attrs.get("scores", []) if c in df.columns]
    if "score" in df.columns and "score" not in named:
        named.append("score")
    return named


def default_quality(df: pd.DataFrame) -> str:
    cols = score_columns(df)
    if "score" in cols:
        return "score"
    if cols:
        return cols[0]
    raise ValueError("this frame has no score column: run the sweep with evaluators=, or name "
                     "the quality column (quality=...)")


def _answered(df: pd.DataFrame) -> pd.Series:
    return df["status"] == "ok"


def pivot(df: pd.DataFrame, by: str | Sequence[str] = "target",
          scores: Sequence[str] | None = None) -> pd.DataFrame:
    """Per target (or `by`): runs, errors, not run, the mean of each score, mean and total
    cost per answered run, mean and p95 latency, mean time to first token. A DataFrame
    (a `PivotTable`) shown as those columns formatted; `.frame` is the plain frame."""
    import pandas as pd

    keys = [by] if isinstance(by, str) else list(by)
    cols = list(scores) if scores is not None else score_columns(df)
    ok = _answered(df)
    groups = df.groupby(keys, sort=False, observed=True, dropna=False)
    answered = df[ok].groupby(keys, sort=False, observed=True, dropna=False)
    out = pd.DataFrame({
        "runs": groups.size(),
        "ok": ok.groupby([df[k] for k in keys], sort=False, observed=True, dropna=False).sum(),
        "errors": (df["status"] == "error").groupby([df[k] for k in keys], sort=False,
                                                    observed=True, dropna=False).sum(),
        "not_run": (df["status"] == "not_run").groupby([df[k] for k in keys], sort=False,
                                                       observed=True, dropna=False).sum(),
    })
    for c in cols:
        out[c] = groups[c].mean()
    out["cost_usd"] = answered["cost_usd"].mean()
    out["total_cost_usd"] = answered["cost_usd"].sum(min_count=1)
    out["spent_usd"] = groups["spent_usd"].sum()
    out["latency_s"] = answered["latency_s"].mean()
    out["latency_p95_s"] = answered["latency_s"].quantile(0.95)
    out["ttft_s"] = answered["ttft_s"].mean()
    for c in ("runs", "ok", "errors", "not_run"):
        out[c] = out[c].fillna(0).astype("int64")
    from ..analysis._tables import PivotTable

    table = PivotTable(out)  # every column; a notebook shows the curated few
    table.attrs["scores"] = cols
    return table


def tradeoff_table(df: pd.DataFrame, quality: str | None = None, by: str = "target") -> pd.DataFrame:
    """Per target: mean cost per answered run, mean quality, p50 latency, runs, and
    `pareto` (on the cheapest-for-its-quality front), sorted by cost."""
    import numpy as np
    import pandas as pd

    quality = quality or default_quality(df)
    if quality not in df.columns:
        raise ValueError(f"no column {quality!r} in this frame; score columns: "
                         f"{', '.join(score_columns(df)) or 'none'}")
    ok = df[_answered(df)]
    g = ok.groupby(by, sort=False, observed=True)
    table = pd.DataFrame({
        "cost_usd": g["cost_usd"].mean(),
        "quality": g[quality].mean(),
        "latency_p50_s": g["latency_s"].median(),
        "runs": g.size(),
    })
    table.index.name = by
    cost = table["cost_usd"].to_numpy(dtype=np.float64, na_value=np.nan)
    qual = table["quality"].to_numpy(dtype=np.float64, na_value=np.nan)
    table["pareto"] = pareto_front(cost, qual)
    table.attrs["quality"] = quality
    return table.sort_values(["cost_usd", "quality"], ascending=[True, False])


def pareto_front(cost: Any, quality: Any) -> list[bool]:
    """True where no other point is as cheap and as good, one of them strictly; a point
    with an unknown cost or quality is never on the front."""
    import numpy as np

    cost = np.asarray(cost, dtype=np.float64)
    quality = np.asarray(quality, dtype=np.float64)
    known = ~(np.isnan(cost) | np.isnan(quality))
    out = []
    for i in range(len(cost)):
        if not known[i]:
            out.append(False)
            continue
        others = known.copy()
        others[i] = False
        dominated = others & (cost <= cost[i]) & (quality >= quality[i]) & (
            (cost < cost[i]) | (quality > quality[i]))
        out.append(not bool(dominated.any()))
    return out


def tradeoff_chart(df: pd.DataFrame, quality: str | None = None, by: str = "target",
                   latency: str = "color") -> go.Figure:
    """Cost (x) against quality (y), one point per target, latency as colour (or
    latency="size"); the Pareto front is a line through its points, which are ringed."""
    import numpy as np
    import plotly.graph_objects as go

    if latency not in ("color", "size"):
        raise ValueError(f"latency must be 'color' or 'size', not {latency!r}")
    from ..analysis._style import (
        dollar_axis,
        label_trace_args,
        layout,
        padded_range,
        place_labels,
    )

    table = tradeoff_table(df, quality, by)
    quality = table.attrs["quality"]
    names = [str(i) for i in table.index]
    x = table["cost_usd"].to_numpy(dtype=np.float64, na_value=np.nan)
    y = table["quality"].to_numpy(dtype=np.float64, na_value=np.nan)
    lat = table["latency_p50_s"].to_numpy(dtype=np.float64, na_value=np.nan)
    marker: dict[str, Any] = {"line": {"width": 1, "color": "#333"}}
    if latency == "color":
        marker.update(size=16, color=lat, colorscale="Viridis", showscale=True,
                      colorbar={"title": {"text": "p50 latency", "side": "right"},
                                "ticksuffix": " s", "thickness": 14, "x": 1.02})
        sizes: Any = 16.0
    else:
        top = np.nanmax(lat) if np.isfinite(lat).any() else 1.0
        sizes = np.nan_to_num(10 + 30 * lat / (top or 1.0), nan=10.0)
        marker.update(size=sizes)
    xrange = padded_range(x, zero=True, high=0.15) or [0.0, 1.0]
    yrange = padded_range(y, low=0.12, high=0.18) or [0.0, 1.0]
    # Long target names: each label goes where it fits, or only into the hover text.
    front = table["pareto"].to_numpy()
    positions = place_labels(x, y, names, sizes if np.ndim(sizes) else float(sizes),
                             xrange, yrange, first=list(front))
    fig = go.Figure()
    if front.any():
        order = np.argsort(x[front], kind="stable")
        fig.add_trace(go.Scatter(x=x[front][order], y=y[front][order], mode="lines",
                                 name="Pareto front", line={"dash": "dash", "color": "#d62728"},
                                 hoverinfo="skip"))
    fig.add_trace(go.Scatter(
        x=x, y=y, mode="markers+text", name=by, text=names, **label_trace_args(positions),
        marker=marker, textfont={"size": 11}, showlegend=False, customdata=np.stack([lat, table["runs"].to_numpy(dtype=np.float64),
                                            front.astype(np.float64)], axis=-1),
        hovertemplate="%{text}<br>cost $%{x:.6f} per run<br>" + quality
                      + " %{y:.3f}<br>p50 latency %{customdata[0]:.3f} s"
                      "<br>%{customdata[1]} runs<extra></extra>"))
    if front.any():
        fig.add_trace(go.Scatter(x=x[front], y=y[front], mode="markers", name="on the front",
                                 marker={"size": 26, "color": "rgba(0,0,0,0)",
                                         "line": {"width": 2, "color": "#d62728"}},
                                 hoverinfo="skip"))
    base = layout(f"Cost vs {quality} per {by}",
                  "the Pareto front dashed and ringed; hover a point for its figures")
    base["margin"]["b"] = 110  # room for the legend under the plot, clear of the colour bar
    fig.update_layout(**base, xaxis=dollar_axis("mean cost per answered run", range=xrange),
                      yaxis={"title": {"text": quality}, "range": yrange, "zeroline": False},
                      legend={"orientation": "h", "yanchor": "top", "y": -0.2, "x": 0.0})
    return fig
