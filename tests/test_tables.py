"""Curated tables (`analysis/_tables`): `summary()`, `%llm stats`, `%llm calls`,
`CompareResult.summary()`, `pivot()` and the panel's Stats tab show the columns a person
asks about first, formatted, while staying DataFrames with every column (`.frame`).
Calls go to the emulators through a real dispatcher and a real InteractiveShell."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from llmdispatch_nb import Dispatcher, analysis
from llmdispatch_nb.analysis import SUMMARY_COLUMNS
from llmdispatch_nb.analysis._tables import CuratedTable, dollars, duration, whole
from llmdispatch_nb.experiments import pivot, sweep

from .test_magic_support import Notebook

pytest_plugins = ("tests.test_magic_support",)

SUMMARY_SHOWN = ["vendor", "model", "calls", "errors", "latency p50", "latency p95", "TTFT p50",
                 "TTFT p95", "tokens in", "tokens out", "cost", "cost per call"]
# What a formatted cell may look like: a duration, dollars, a whole number, a name or "–".
RAW_FLOAT = re.compile(r"(?<![$\d])\d\.\d{5,}|e-\d\d")


def header(html: str) -> list[str]:
    return re.findall(r'<th[^>]*class="col_heading[^"]*"[^>]*>([^<]*)</th>', html)


@pytest.mark.parametrize(("value", "shown"), [
    (6.0751e-05, "$0.0000608"), (0.000938, "$0.000938"), (5.4e-06, "$0.00000540"),
    (0.0123, "$0.0123"), (0.024, "$0.0240"), (0.5, "$0.500"),
    (1.205761, "$1.21"), (1234.5, "$1,234.50"), (0.0, "$0"), (None, "–"), (float("nan"), "–"),
])
def test_dollars(value: float | None, shown: str) -> None:
    assert dollars(value) == shown


@pytest.mark.parametrize(("value", "shown"), [
    (0.85, "850 ms"), (0.0004, "0 ms"), (1.205761, "1.21 s"), (250.0, "250 s"), (pd.NA, "–"),
])
def test_durations(value: float, shown: str) -> None:
    assert duration(value) == shown
    assert whole(12345.0) == "12,345"


def test_summary_is_curated_and_still_the_whole_frame(d: Dispatcher, nb: Notebook) -> None:
    assert nb.cell("gpt claude -m 8", "for the ledger").success
    table = analysis.summary(d)
    assert isinstance(table, pd.DataFrame) and isinstance(table, CuratedTable)
    assert list(table.columns) == ["vendor", "model", *SUMMARY_COLUMNS]  # as before
    full = table.frame
    assert type(full) is pd.DataFrame and list(full.columns) == list(table.columns)
    assert type(table[["vendor", "calls"]]) is pd.DataFrame  # derived frames are plain
    html = table._repr_html_()
    assert header(html) == SUMMARY_SHOWN
    assert "mathjax_ignore" in html and "12 of 20 columns" in html
    assert RAW_FLOAT.search(table.text()) is None
    text = table.text()
    assert re.search(r"\d+ ms|\d\.\d\d s", text) and re.search(r"\$0\.\d+", text)
    by_vendor = analysis.summary(d, by="vendor")
    assert header(by_vendor._repr_html_())[:2] == ["vendor", "calls"]
    assert header(analysis.summary(d, by=())._repr_html_())[0] == "calls"


def test_stats_and_calls_subcommands_show_the_curated_columns(d: Dispatcher,
                                                               nb: Notebook) -> None:
    assert nb.cell("gpt claude -m 8", "for the ledger").success
    stats = nb.run("%llm stats").published[-1].data
    assert header(stats["text/html"]) == SUMMARY_SHOWN
    calls = nb.run("%llm calls 2").published[-1].data["text/html"]
    assert header(calls) == ["time (UTC)", "vendor", "model", "attempt", "status", "latency",
                             "TTFT", "tokens in", "tokens out", "cost", "error"]
    assert "call_id" not in calls and RAW_FLOAT.search(calls) is None
    assert calls.count("<tr>") == 3  # the header and the two newest attempts


def test_compare_summary(d: Dispatcher, nb: Notebook) -> None:
    assert nb.cell("gpt claude -n 2 -m 8", "twice each").success
    summary = nb.ns["_llm"].summary()
    assert list(summary["ok"]) == [2, 2] and "latency_sd" in summary.frame  # as before
    html = summary._repr_html_()
    assert header(html) == ["target", "answered", "latency", "TTFT", "tokens in", "tokens out",
                            "cost"]
    assert ">2/2<" in html and " ± " in html and RAW_FLOAT.search(summary.text()) is None


def test_pivot_shows_scores_between_counts_and_costs(d: Dispatcher) -> None:
    df = sweep("Say {word}", ["openai:gpt-4o-mini", "anthropic:claude-haiku-4-5"],
               vars={"word": ["a", "b"]}, dispatcher=d, progress=False,
               evaluators={"short": lambda text, row: len(text) < 2000})
    table = pivot(df)
    assert table.loc["openai:gpt-4o-mini", "runs"] == 2  # indexed by target, as before
    shown = header(table._repr_html_())
    assert shown[:4] == ["target", "runs", "errors", "not run"]
    assert shown[4:6] == ["short", "score"] and "cost per run" in shown
    assert RAW_FLOAT.search(table.text()) is None


def test_panel_stats_tab_uses_the_curated_table(d: Dispatcher, nb: Notebook) -> None:
    from llmdispatch_nb.notebook._panel_ledger import table_html

    assert nb.cell("gpt -m 8", "for the ledger").success
    html = table_html(analysis.summary(d))
    assert header(html) == SUMMARY_SHOWN and "call_id" not in html


def test_output_name_keeps_every_column(d: Dispatcher, nb: Notebook) -> None:
    from .test_magic_support import one_error_line

    assert nb.cell("gpt claude -m 8", "for the ledger").success
    assert nb.run("%llm stats -o s").success
    kept = nb.ns.pop("s")
    assert isinstance(kept, CuratedTable) and list(kept.columns) == ["vendor", "model",
                                                                    *SUMMARY_COLUMNS]
    assert nb.run("%llm calls 2 -o c").success
    rows = nb.ns.pop("c")
    assert len(rows) == 2 and {"call_id", "session", "tags"} <= set(rows.columns)
    assert "usage: %llm stats [-o NAME]" in one_error_line(nb.run("%llm stats -o"))
    assert "usage: %llm calls [N] [-o NAME]" in one_error_line(nb.run("%llm calls 1 2"))


def test_a_measure_no_row_has_is_left_out(d: Dispatcher, nb: Notebook) -> None:
    assert nb.cell("gpt -m 8 --no-stream", "not streamed").success
    calls = nb.run("%llm calls 1").published[-1].data["text/html"]
    assert "TTFT" not in header(calls) and "latency" in header(calls)
