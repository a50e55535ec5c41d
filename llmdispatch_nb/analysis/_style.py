"""One look for every figure: the layout, vendor colours, dollar and second axes, ranges
with room for labels, and label placement that never overlaps or leaves the plot.

Plotly places text labels where it is told and clips or overlaps them freely, so a chart
of long target names came out unreadable. `place_labels` decides, in pixels of an
assumed (conservative) plot size, where each point's label goes: above, below, right or
left of its marker (or diagonally), the first that stays inside the plot and clear of
every marker and label already placed; a label with no room is left to the hover text.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

FONT = {"family": "Inter, 'Segoe UI', Helvetica, Arial, sans-serif", "size": 13, "color": "#24292f"}
# A figure as a notebook output is about this size (JupyterLab: the output's width, 450 px
# high); labels are placed for a slightly smaller plot, so they still fit when it is.
WIDTH, HEIGHT = 680, 450
MARGIN = {"l": 80, "r": 40, "t": 80, "b": 70}

VENDOR_COLOURS = {"openai": "#10a37f", "anthropic": "#c2410c", "google": "#4285f4",
                  "azure": "#7c3aed", "compat": "#6b7280", "ollama": "#6b7280"}
PALETTE = ["#0f766e", "#b45309", "#1d4ed8", "#9333ea", "#be123c", "#4d7c0f", "#0e7490",
           "#a16207"]


def layout(title: str, subtitle: str | None = None, **more: Any) -> dict[str, Any]:
    """The shared layout: white template, one font, room for titles and axis labels."""
    head: dict[str, Any] = {"text": title, "x": 0.01, "xanchor": "left",
                            "font": {"size": 16}}
    if subtitle:
        head["subtitle"] = {"text": subtitle, "font": {"size": 12, "color": "#57606a"}}
    out: dict[str, Any] = {"template": "plotly_white", "font": FONT, "title": head,
                           "margin": dict(MARGIN), "height": HEIGHT,
                           "hoverlabel": {"font": {"size": 12}}}
    out.update(more)
    return out


def colour(name: str, order: int = 0) -> str:
    """A vendor's colour (for "vendor" or "vendor:model"), else one from the palette."""
    vendor = name.split(":", 1)[0]
    return VENDOR_COLOURS.get(vendor, PALETTE[order % len(PALETTE)])


def dollar_axis(title: str, **more: Any) -> dict[str, Any]:
    """Dollar ticks at the precision they need: $0, $0.0002, $0.0004 (never 200μ)."""
    return {"title": {"text": title}, "tickprefix": "$", "tickformat": ",.3~r",
            "hoverformat": ",.6~r", "rangemode": "tozero", "zeroline": False, **more}


def seconds_axis(title: str, **more: Any) -> dict[str, Any]:
    return {"title": {"text": title}, "ticksuffix": " s", "tickformat": ",.3~r",
            "rangemode": "tozero", "zeroline": False, **more}


def padded_range(values: Sequence[float], *, low: float = 0.08, high: float = 0.12,
                 zero: bool = False) -> list[float] | None:
    """[lo, hi] around the finite values, with a share of the span as room on each side
    (from 0 when `zero`); None when there is nothing to show."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        return None
    lo, hi = min(finite), max(finite)
    if zero:
        lo = min(lo, 0.0)
    span = hi - lo
    if span <= 0:
        span = abs(hi) or 1.0
    if zero and lo == 0.0:
        # A sliver below zero: the two axes' "0" ticks would meet in the corner.
        return [-span * 0.04, hi + span * high]
    return [lo - span * low, hi + span * high]


Box = tuple[float, float, float, float]  # left, top, right, bottom in pixels (y down)

POSITIONS = ("top center", "bottom center", "top right", "bottom right", "top left",
             "bottom left", "middle right", "middle left")
CHAR_PX, LINE_PX, GAP_PX = 7.0, 15.0, 3.0


def place_labels(x: Sequence[float], y: Sequence[float], names: Sequence[str],
                 sizes: Sequence[float] | float, xrange: Sequence[float],
                 yrange: Sequence[float], *, width: float = WIDTH - 60,
                 height: float = HEIGHT, first: Sequence[bool] | None = None) -> list[str | None]:
    """Each point's text position (a plotly `textposition`), or None where no position
    fits: inside the plot, clear of every marker and of the labels placed before it.
    Points marked in `first` are labelled before the others (they matter most)."""
    plot_w = width - MARGIN["l"] - MARGIN["r"]
    plot_h = height - MARGIN["t"] - MARGIN["b"]
    n = len(names)
    radii = [float(sizes) / 2] * n if isinstance(sizes, int | float) else [s / 2 for s in sizes]
    (x0, x1), (y0, y1) = xrange, yrange

    def px(i: int) -> tuple[float, float] | None:
        xi, yi = float(x[i]), float(y[i])
        if not (math.isfinite(xi) and math.isfinite(yi)) or x1 == x0 or y1 == y0:
            return None
        return (xi - x0) / (x1 - x0) * plot_w, (y1 - yi) / (y1 - y0) * plot_h

    centres = [px(i) for i in range(n)]
    markers: dict[int, Box] = {i: (c[0] - r, c[1] - r, c[0] + r, c[1] + r)
                               for i, (c, r) in enumerate(zip(centres, radii, strict=True))
                               if c is not None}
    placed: list[Box] = []
    out: list[str | None] = [None] * n
    order = sorted(range(n), key=lambda i: not first[i]) if first is not None else range(n)
    for i in order:
        c = centres[i]
        if c is None:
            continue
        w, h, r = len(str(names[i])) * CHAR_PX, LINE_PX, radii[i] + GAP_PX
        cx, cy = c
        boxes = {"top center": (cx - w / 2, cy - r - h, cx + w / 2, cy - r),
                 "bottom center": (cx - w / 2, cy + r, cx + w / 2, cy + r + h),
                 "top right": (cx, cy - r - h, cx + w, cy - r),
                 "bottom right": (cx, cy + r, cx + w, cy + r + h),
                 "top left": (cx - w, cy - r - h, cx, cy - r),
                 "bottom left": (cx - w, cy + r, cx, cy + r + h),
                 "middle right": (cx + r, cy - h / 2, cx + r + w, cy + h / 2),
                 "middle left": (cx - r - w, cy - h / 2, cx - r, cy + h / 2)}
        chosen = None
        for position in POSITIONS:
            box = boxes[position]
            inside = box[0] >= 0 and box[1] >= 0 and box[2] <= plot_w and box[3] <= plot_h
            others = [b for k, b in markers.items() if k != i] + placed  # not its own marker
            if inside and not any(_overlap(box, other) for other in others):
                chosen = position
                placed.append(box)
                break
        out[i] = chosen
    return out


def _overlap(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def label_trace_args(positions: Sequence[str | None]) -> dict[str, Any]:
    """`textposition` and `texttemplate` for a scatter trace: a placed label shows its
    text, one with no room shows nothing (its name is still in the hover text)."""
    return {"textposition": [p or "top center" for p in positions],
            "texttemplate": ["%{text}" if p else "" for p in positions],
            "cliponaxis": False}
