"""The figures' look (`analysis/_style`): dollar ticks, charts that mean something with one
or two calls per vendor, a spend chart over a readable span, labels placed inside the plot
and never on top of each other, one look across every figure. What the browser draws
from these is checked by tests/test_quickstart_browser.py."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

from llmdispatch_nb import CallRecord, analysis
from llmdispatch_nb.analysis._style import HEIGHT, MARGIN, padded_range, place_labels
from llmdispatch_nb.experiments import tradeoff_chart
from llmdispatch_nb.ledger import Ledger

from .test_analysis import workload


def frame_of(records: list[CallRecord]) -> pd.DataFrame:
    ledger = Ledger.memory()
    for r in records:
        ledger.write(r)
    return analysis.calls(ledger)


@pytest.fixture(scope="module")
def busy() -> pd.DataFrame:
    return frame_of(workload())


@pytest.fixture(scope="module")
def few() -> pd.DataFrame:
    """One or two answered calls per vendor, all sent within a few milliseconds."""
    records = []
    for i, r in enumerate(r for r in workload(200, seed=9) if r.status == "ok"):
        per_vendor = sum(1 for x in records if x.vendor == r.vendor)
        if per_vendor < (1 if r.vendor == "openai" else 2):
            records.append(dataclasses.replace(r, timestamp=1_750_000_000.0 + i / 1000))
    assert {r.vendor for r in records} >= {"openai", "anthropic"}
    return frame_of(records)


def test_cost_axes_are_dollars(busy: pd.DataFrame) -> None:
    for fig, axis in ((analysis.tradeoff_figure(busy), "yaxis"),
                      (analysis.spend_figure(busy), "yaxis")):
        ax = fig.layout[axis]
        assert ax.tickprefix == "$" and ax.tickformat.endswith("~r")  # $0.0002, not 200μ
    chart = tradeoff_chart(sweep_frame())
    assert chart.layout.xaxis.tickprefix == "$"


def test_latency_with_one_or_two_calls_per_vendor_draws_the_points(few: pd.DataFrame,
                                                                   busy: pd.DataFrame) -> None:
    for make in (analysis.latency_figure, analysis.ttft_figure):
        fig = make(few)
        assert fig.data, "nothing drawn"
        for trace in fig.data:
            assert trace.boxpoints == "all" and len(trace.y) in (1, 2), trace.name
            assert trace.q1 is None  # the values themselves, not a flat box
            assert trace.marker.size >= 8
    boxes = analysis.latency_figure(busy).data
    assert all(t.boxpoints is False and t.q1 is not None for t in boxes)


def test_spend_over_milliseconds_counts_calls(few: pd.DataFrame, busy: pd.DataFrame) -> None:
    fig = analysis.spend_figure(few)
    total = fig.data[0]
    priced = int(few["cost_usd"].notna().sum())
    assert list(total.x) == list(range(1, priced + 1))  # call 1, 2, 3..., not 2 ms of axis
    assert fig.layout.xaxis.title.text.startswith("call, in the order sent")
    assert all(t.mode == "lines+markers" and t.line.shape == "hv" for t in fig.data)
    spread = analysis.spend_figure(busy)  # calls over minutes: a time axis
    assert spread.layout.xaxis.title.text == "time (UTC)"


def test_labels_never_overlap_or_leave_the_plot() -> None:
    names = [f"provider-{i}:a-rather-long-model-name-{i}" for i in range(12)]
    x = [1.0 + 0.01 * i for i in range(12)]  # crowded: most labels cannot fit
    y = [0.5 + 0.002 * (i % 3) for i in range(12)]
    xr, yr = padded_range(x), padded_range(y)
    assert xr is not None and yr is not None
    positions = place_labels(x, y, names, 16.0, xr, yr)
    placed = [p for p in positions if p]
    assert placed and len(placed) < len(names)  # the rest are left to the hover text
    # Points that matter most (the Pareto front) are labelled first.
    favoured = place_labels(x, y, names, 16.0, xr, yr, first=[i == 5 for i in range(12)])
    assert favoured[5] is not None
    spread = place_labels([0.1, 0.5, 0.9], [0.1, 0.5, 0.9], ["a", "b", "c"], 16.0,
                          [0.0, 1.0], [0.0, 1.0])
    assert spread == ["top center"] * 3
    # A label at the top edge goes below its point rather than off the plot.
    assert place_labels([0.5], [1.0], ["top"], 16.0, [0.0, 1.0], [0.0, 1.0]) == [
        "bottom center"]


def test_sweep_tradeoff_legend_clear_of_the_colour_bar() -> None:
    fig = tradeoff_chart(sweep_frame())
    assert fig.layout.legend.orientation == "h" and fig.layout.legend.y < 0
    assert fig.data[1].marker.colorbar.x > 1
    assert fig.layout.margin.b >= 100
    points = fig.data[1]
    assert list(points.texttemplate).count("") < len(points.text)  # some labels fit
    assert points.cliponaxis is False and points.hovertemplate.startswith("%{text}")


def test_one_look_across_the_figures(busy: pd.DataFrame) -> None:
    figures = [analysis.latency_figure(busy), analysis.ttft_figure(busy),
               analysis.throughput_figure(busy), analysis.tradeoff_figure(busy),
               analysis.spend_figure(busy), analysis.error_figure(busy),
               tradeoff_chart(sweep_frame())]
    for fig in figures:
        assert fig.layout.font.family == figures[0].layout.font.family
        assert fig.layout.title.x == 0.01 and fig.layout.height == HEIGHT
        assert fig.layout.margin.t == MARGIN["t"] and fig.layout.margin.l == MARGIN["l"]


def sweep_frame() -> pd.DataFrame:
    from .test_whatif import frame

    return frame()
