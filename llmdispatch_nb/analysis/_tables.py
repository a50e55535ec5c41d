"""Curated tables: a DataFrame that shows the columns a person asks about first.

`summary()`, `%llm stats`, `%llm calls`, `CompareResult.summary()` and `pivot()` return
one of these. Each is an ordinary pandas DataFrame with every column (code that indexes,
filters or sums it works as before), but in a notebook it shows a short view: labels
first, then calls, errors, p50/p95 latency and time to first token in ms or s, tokens,
and cost in dollars at a precision that shows its digits, styled with pandas' Styler.
`.frame` is the full frame as a plain DataFrame; `.curated()` the short one with its
numbers still numbers; `.styled()` the Styler.

Anything derived from one (a slice, a filter, a sum) is a plain DataFrame again: the
short view only makes sense for the frame it was designed for. This module imports
pandas at the top, so it is itself imported only when a table is made.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import pandas as pd
from pandas.io.formats.style import Styler

Formatter = Callable[[Any], str]


def _missing(v: Any) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def dollars(v: Any) -> str:
    """Dollars with three significant digits below $1 ($0.125, $0.0240, $0.0000608),
    cents above ($12.40); "–" if unknown."""
    if _missing(v):
        return "–"
    v = float(v)
    if v == 0:
        return "$0"
    if abs(v) >= 1:
        return f"${v:,.2f}"
    places = -math.floor(math.log10(abs(v))) + 2  # three significant digits, never e-05
    return f"${v:.{places}f}"


def duration(v: Any) -> str:
    """A duration in ms under a second, in s above: 850 ms, 1.21 s."""
    if _missing(v):
        return "–"
    v = float(v)
    if v < 1:
        return f"{v * 1000:.0f} ms"
    if v < 100:
        return f"{v:.2f} s"
    return f"{v:,.0f} s"


def whole(v: Any) -> str:
    return "–" if _missing(v) else f"{round(float(v)):,}"


def percent(v: Any) -> str:
    return "–" if _missing(v) else f"{float(v):.0%}"


def score(v: Any) -> str:
    return "–" if _missing(v) else f"{float(v):.2f}"


def text(v: Any) -> str:
    return "–" if _missing(v) else str(v)


def clock(v: Any) -> str:
    return "–" if _missing(v) else pd.Timestamp(v).strftime("%H:%M:%S")


KINDS: dict[str, Formatter] = {"text": text, "int": whole, "seconds": duration,
                               "dollars": dollars, "percent": percent, "score": score,
                               "clock": clock}
_NUMERIC = {"int", "seconds", "dollars", "percent", "score"}

# One look for every table: compact cells, names never wrapped, numbers right-aligned.
_STYLES = [
    {"selector": "", "props": "border-collapse:collapse;font-size:12px;"
                               "font-variant-numeric:tabular-nums"},
    {"selector": "th", "props": "text-align:left;padding:3px 7px;font-weight:600;"
                                "border-bottom:1px solid #8c959f;white-space:nowrap"},
    {"selector": "td", "props": "padding:3px 7px;border-bottom:1px solid #e5e7eb;"
                                "white-space:nowrap"},
    {"selector": "caption", "props": "caption-side:bottom;text-align:left;color:#57606a;"
                                     "font-size:11px;padding-top:4px"},
]

Column = tuple[str, str, str]  # source column, label, kind


class CuratedTable(pd.DataFrame):
    """A DataFrame whose notebook view is `COLUMNS` only, formatted (see the module)."""

    COLUMNS: ClassVar[Sequence[Column]] = ()
    CAPTION: ClassVar[str] = "the full table: .frame"

    @property
    def frame(self) -> pd.DataFrame:
        """Every column, as a plain DataFrame."""
        return pd.DataFrame(self)

    def _source(self) -> pd.DataFrame:
        """The frame the short view reads (a subclass adds derived columns here)."""
        return self.frame

    def _shown(self, source: pd.DataFrame) -> list[Column]:
        # A measure no row has (TTFT of calls that were not streamed) is left out.
        return [c for c in self.COLUMNS if c[0] in source.columns
                and (c[2] == "text" or len(source) == 0 or source[c[0]].notna().any())]

    def curated(self) -> pd.DataFrame:
        """The short view's columns under their labels; numbers are still numbers."""
        source = self._source()
        return pd.DataFrame({label: source[name].to_numpy()
                             for name, label, _ in self._shown(source)})

    def styled(self) -> Styler:
        source = self._source()
        shown = self._shown(source)
        view = pd.DataFrame({label: source[name].to_numpy() for name, label, _ in shown})
        styler = view.style.format({label: KINDS[kind] for _, label, kind in shown},
                                   escape="html")
        styler = styler.hide(axis="index").set_table_styles(_STYLES)
        # Per cell (an id selector): a "#table td" rule would outrank it.
        text_labels = [label for _, label, kind in shown if kind not in _NUMERIC]
        if text_labels:
            styler = styler.set_properties(subset=text_labels, **{"text-align": "left"})
        numeric = [label for _, label, kind in shown if kind in _NUMERIC]
        if numeric:  # numbers right-aligned, their headings too; names stay left
            styler = styler.set_properties(subset=numeric, **{"text-align": "right"})
            styler = styler.set_table_styles(
                {label: [{"selector": "th", "props": "text-align:right"}] for label in numeric},
                overwrite=False)
        hidden = len(self.columns) + len([n for n in self.index.names if n is not None])
        if hidden > len(shown):
            styler = styler.set_caption(f"{len(shown)} of {hidden} columns; {self.CAPTION}")
        return styler

    def _repr_html_(self) -> str:
        # In a block MathJax skips: two costs in one row would otherwise pair into maths.
        return f'<div class="mathjax_ignore tex2jax_ignore">{self.styled().to_html()}</div>'

    def text(self) -> str:
        """The short view as plain text, formatted as in the notebook."""
        source = self._source()
        shown = self._shown(source)
        view = pd.DataFrame({label: [KINDS[kind](v) for v in source[name].to_numpy()]
                             for name, label, kind in shown})
        return view.to_string(index=False)


class SummaryTable(CuratedTable):
    """`summary()`: per vendor and model (or the `by` columns, which lead)."""

    COLUMNS = (
        ("vendor", "vendor", "text"), ("model", "model", "text"), ("calls", "calls", "int"),
        ("errors", "errors", "int"), ("latency_p50_s", "latency p50", "seconds"),
        ("latency_p95_s", "latency p95", "seconds"), ("ttft_p50_s", "TTFT p50", "seconds"),
        ("ttft_p95_s", "TTFT p95", "seconds"), ("input_tokens", "tokens in", "int"),
        ("output_tokens", "tokens out", "int"), ("total_cost_usd", "cost", "dollars"),
        ("mean_cost_usd", "cost per call", "dollars"),
    )
    NUMBERS: ClassVar[frozenset[str]] = frozenset({
        "attempts", "successes", "success_rate", "retries", "fallbacks", "cache_hits",
        "tokens_per_s", "cost_per_1k_tokens", "unknown_cost"})

    def _source(self) -> pd.DataFrame:
        frame = self.frame
        if "calls" in frame and "successes" in frame:
            frame["errors"] = frame["calls"] - frame["successes"]  # calls that never answered
        return frame

    def _shown(self, source: pd.DataFrame) -> list[Column]:
        known = {c[0] for c in self.COLUMNS} | self.NUMBERS
        keys = [(str(c), str(c), "text") for c in source.columns if c not in known]
        return keys + super()._shown(source)


class CallsTable(CuratedTable):
    """`%llm calls`: one row per attempt, newest last."""

    COLUMNS = (
        ("timestamp", "time (UTC)", "clock"), ("vendor", "vendor", "text"),
        ("model", "model", "text"), ("attempt", "attempt", "int"), ("status", "status", "text"),
        ("latency_s", "latency", "seconds"), ("ttft_s", "TTFT", "seconds"),
        ("input_tokens", "tokens in", "int"), ("output_tokens", "tokens out", "int"),
        ("cost_usd", "cost", "dollars"), ("error_class", "error", "text"),
    )


class CompareSummary(CuratedTable):
    """`CompareResult.summary()`: per target, means over its runs (± when it ran K times)."""

    COLUMNS = (
        ("target", "target", "text"), ("answered", "answered", "text"),
        ("latency", "latency", "text"), ("ttft", "TTFT", "text"),
        ("input_tokens", "tokens in", "int"), ("output_tokens", "tokens out", "int"),
        ("cost_usd", "cost", "dollars"),
    )
    CAPTION = "means over answered runs; the full table: .frame"

    def _source(self) -> pd.DataFrame:
        frame = self.frame

        def spread(mean: Any, sd: Any) -> str:
            if _missing(mean):
                return "–"
            return duration(mean) + ("" if _missing(sd) else f" ± {duration(sd)}")

        if {"ok", "runs"} <= set(frame.columns):
            frame["answered"] = [f"{ok}/{runs}" for ok, runs in
                                 zip(frame["ok"], frame["runs"], strict=True)]
        for name in ("latency", "ttft"):
            if f"{name}_s" in frame:
                sd = frame[f"{name}_sd"] if f"{name}_sd" in frame else [None] * len(frame)
                frame[name] = [spread(m, s) for m, s in zip(frame[f"{name}_s"], sd, strict=True)]
        return frame


class PivotTable(CuratedTable):
    """`pivot()` of a sweep: per target, runs and errors, each score, cost and latency."""

    COLUMNS = (
        ("runs", "runs", "int"), ("errors", "errors", "int"), ("not_run", "not run", "int"),
        ("cost_usd", "cost per run", "dollars"), ("total_cost_usd", "total cost", "dollars"),
        ("latency_s", "latency mean", "seconds"), ("latency_p95_s", "latency p95", "seconds"),
        ("ttft_s", "TTFT mean", "seconds"),
    )

    def _source(self) -> pd.DataFrame:
        return self.frame.reset_index()

    def _shown(self, source: pd.DataFrame) -> list[Column]:
        keys = [(str(n), str(n), "text") for n in self.index.names if n is not None]
        scores = [(str(c), str(c), "score") for c in self.attrs.get("scores", ())
                  if c in source.columns]
        base = super()._shown(source)
        counts = [c for c in base if c[2] == "int"]
        return keys + counts + scores + [c for c in base if c[2] != "int"]
