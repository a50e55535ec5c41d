"""The panel's Stats and Charts tabs: the ledger, read through `llmdispatch_nb.analysis`.

The analysis floor (pandas, plotly) is imported when a tab is first refreshed. If it is
missing or fails, the tab says so in one line instead of breaking the panel: a panel that
can still send and compare is worth more than a traceback.

Figures go into an `Output` widget as a plotly mime bundle (`application/vnd.plotly.v1+json`),
which JupyterLab, Notebook 7 and Voila render with plotly's own extension; setting the
`outputs` trait directly works from any thread and needs no IPython display machinery.
"""

from __future__ import annotations

import html
import importlib
import json
import threading
from types import ModuleType
from typing import Any

import ipywidgets as widgets

DEFAULT_FIGURE = "latency_figure"


def _message(text: str, colour: str = "#555") -> str:
    return f"<div class='llmd-note' style='color:{colour}'>{html.escape(text)}</div>"


# Compact cells; the selectors only reach inside the panel's own table.
_TABLE_STYLE = (
    "<style>.llmd-stats-table table{border-collapse:collapse;font-size:90%}"
    ".llmd-stats-table th,.llmd-stats-table td{padding:2px 8px;line-height:1.35;"
    "white-space:nowrap;text-align:right;border-bottom:1px solid #e0e0e0}"
    ".llmd-stats-table th{font-weight:600}</style>")


def table_html(value: Any) -> str:
    """A summary as HTML, whatever shape the analysis floor hands back."""
    if value is None:
        return _message("no calls in the ledger yet")
    styled = getattr(value, "styled", None)  # a curated table: its short, formatted view
    to_html = getattr(value, "to_html", None)
    if callable(styled):
        body = str(styled().to_html())
    elif callable(to_html):
        try:
            body = str(to_html(float_format=lambda v: f"{v:.4g}", na_rep="–", index=False,
                               border=0))
        except TypeError:  # a Styler, or another to_html without those arguments
            body = str(to_html())
    elif callable(getattr(value, "_repr_html_", None)):
        body = str(value._repr_html_())
    else:
        return f"<pre>{html.escape(str(value))}</pre>"
    return f"{_TABLE_STYLE}<div style='overflow-x:auto'>{body}</div>"


def figure_bundle(figure: Any) -> dict[str, Any]:
    """A plotly figure as the mime bundle Jupyter front ends render."""
    spec = json.loads(figure.to_json())  # plotly's encoder handles numpy and dates
    spec.setdefault("config", {"displaylogo": False, "responsive": True})
    title = getattr(getattr(figure.layout, "title", None), "text", None) or "plotly figure"
    return {"application/vnd.plotly.v1+json": spec, "text/plain": f"<{title}>"}


class LedgerView:
    """Builds and refreshes the Stats and Charts tabs for one dispatcher."""

    def __init__(self, dispatcher: Any) -> None:
        self.dispatcher = dispatcher
        self._lock = threading.RLock()
        self._filling_picker = False
        self._analysis: ModuleType | None = None
        self._missing: str | None = None

        self.stats = widgets.HTML(_message("no calls yet: send a prompt, then look here"))
        self.stats.add_class("llmd-stats-table")
        refresh_stats = widgets.Button(description="Refresh", icon="refresh",
                                       layout=widgets.Layout(width="auto"))
        refresh_stats.on_click(lambda _b: self.refresh_stats())
        self.stats_tab = widgets.VBox([widgets.HBox([refresh_stats]), self.stats])

        self.figure_picker = widgets.Dropdown(options=[("latency", DEFAULT_FIGURE)],
                                              value=DEFAULT_FIGURE, description="Figure")
        self.figure_picker.observe(self._on_pick, names="value")
        refresh_chart = widgets.Button(description="Refresh", icon="refresh",
                                       layout=widgets.Layout(width="auto"))
        refresh_chart.on_click(lambda _b: self.refresh_charts())
        self.chart_note = widgets.HTML(_message("no calls yet: send a prompt, then look here"))
        self.chart = widgets.Output()
        self.chart.add_class("llmd-chart")
        self.charts_tab = widgets.VBox([widgets.HBox([self.figure_picker, refresh_chart]),
                                        self.chart_note, self.chart])

    def analysis(self) -> ModuleType | None:
        """The analysis module, or None (with the reason kept in `missing`)."""
        if self._analysis is None and self._missing is None:
            try:
                module = importlib.import_module("llmdispatch_nb.analysis")
                for name in ("calls", "summary"):
                    if not callable(getattr(module, name, None)):
                        raise ImportError(f"llmdispatch_nb.analysis has no {name}()")
            except Exception as exc:
                self._missing = f"{type(exc).__name__}: {exc}"
            else:
                self._analysis = module
                figures = sorted(n for n in dir(module)
                                 if n.endswith("_figure") and callable(getattr(module, n)))
                if figures:
                    keep = self.figure_picker.value if self.figure_picker.value in figures else (
                        DEFAULT_FIGURE if DEFAULT_FIGURE in figures else figures[0])
                    self._filling_picker = True
                    try:
                        self.figure_picker.options = [
                            (f.removesuffix("_figure").replace("_", " "), f) for f in figures]
                        self.figure_picker.value = keep
                    finally:
                        self._filling_picker = False
        return self._analysis

    def _on_pick(self, _change: Any) -> None:
        if not self._filling_picker:
            self.refresh_charts()

    @property
    def missing(self) -> str | None:
        return self._missing

    def _calls(self, module: ModuleType) -> Any:
        return module.calls(self.dispatcher)

    def refresh_stats(self) -> None:
        """Recompute the ledger summary (any thread)."""
        with self._lock:
            module = self.analysis()
            if module is None:
                self.stats.value = _message(
                    f"Stats are not available: the analysis module could not be loaded "
                    f"({self._missing}).", "#b00020")
                return
            try:
                frame = self._calls(module)
                self.stats.value = (table_html(module.summary(frame)) if len(frame)
                                    else _message("no calls in the ledger yet"))
            except Exception as exc:
                self.stats.value = _message(f"Stats failed: {type(exc).__name__}: {exc}", "#b00020")

    def refresh_charts(self) -> None:
        """Redraw the chosen figure from the ledger (any thread)."""
        with self._lock:
            module = self.analysis()
            if module is None:
                self.chart_note.value = _message(
                    f"Charts are not available: the analysis module could not be loaded "
                    f"({self._missing}).", "#b00020")
                return
            name = str(self.figure_picker.value)
            make = getattr(module, name, None)
            if not callable(make):
                self.chart_note.value = _message(f"Charts are not available: no {name}() in "
                                                 f"llmdispatch_nb.analysis.", "#b00020")
                return
            try:
                frame = self._calls(module)
                if not len(frame):
                    self.chart_note.value = _message("no calls in the ledger yet")
                    self.chart.outputs = ()
                    return
                bundle = figure_bundle(make(frame))
            except Exception as exc:
                self.chart_note.value = _message(f"Chart failed: {type(exc).__name__}: {exc}",
                                                 "#b00020")
                return
            self.chart_note.value = ""
            self.chart.outputs = ({"output_type": "display_data", "data": bundle,
                                   "metadata": {}},)
