"""The notebook floor: the `%%llm` / `%llm` magic, its result objects and its displays.

    %load_ext llmdispatch_nb
    %%llm openai:gpt-4o-mini claude -t 0.2
    Compare these two answers: {question}

IPython is imported here, so the core never pays for it.
"""

from __future__ import annotations

from typing import Any

from ._display import Table, grid_html, live_grid_bundle
from ._errors import CellError, UsageError
from ._interpolate import fill
from ._magics import LLMMagics
from ._parser import USAGE, CellArgs, parse_cell_line
from ._results import CompareResult, LLMResult, check_json, fenced_code
from ._run import Column, Run, Runner

__all__ = [
    "USAGE",
    "CellArgs",
    "CellError",
    "Column",
    "CompareResult",
    "LLMMagics",
    "LLMResult",
    "Run",
    "Runner",
    "Table",
    "UsageError",
    "check_json",
    "fenced_code",
    "fill",
    "grid_html",
    "live_grid_bundle",
    "load_ipython_extension",
    "panel",
    "parse_cell_line",
    "unload_ipython_extension",
]


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext llmdispatch_nb`: register `%%llm` and `%llm`."""
    from ._magics import load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    from ._magics import unload

    unload(ipython)


def __getattr__(name: str) -> Any:
    # The widget panel pulls in ipywidgets: loaded when first asked for.
    if name == "panel":
        try:
            from ._panel import panel
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}._panel":
                raise
            raise AttributeError("the widget panel is not in this build") from None
        return panel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
