"""The ledger as pandas DataFrames and plotly figures.

    from llmdispatch_nb import analysis
    df = analysis.calls(d)             # this dispatcher's attempts (or a Ledger, records...)
    analysis.summary(df)               # per vendor and model
    analysis.latency_figure(df[df.vendor == "openai"])

pandas and plotly are imported when a function is first called, not with this module.
"""

from __future__ import annotations

from ._figures import (
    error_figure,
    latency_figure,
    spend_figure,
    throughput_figure,
    tradeoff_figure,
    ttft_figure,
)
from ._frames import SUMMARY_COLUMNS, calls, summary

__all__ = [
    "SUMMARY_COLUMNS",
    "calls",
    "error_figure",
    "latency_figure",
    "spend_figure",
    "summary",
    "throughput_figure",
    "tradeoff_figure",
    "ttft_figure",
]
