"""The curated public surface: sorted, complete, importable, and light to import."""

from __future__ import annotations

import subprocess
import sys

import llmdispatch_nb


def test_all_is_sorted_and_every_name_resolves() -> None:
    names = [n for n in llmdispatch_nb.__all__ if n != "__version__"]
    assert names == sorted(names)
    for name in llmdispatch_nb.__all__:
        assert getattr(llmdispatch_nb, name) is not None, name


def test_import_pulls_in_no_notebook_or_dataframe_stack() -> None:
    code = (
        "import sys, llmdispatch_nb\n"
        "from llmdispatch_nb import Dispatcher, Request, Response\n"
        "heavy = [m for m in ('pandas', 'plotly', 'IPython', 'ipywidgets', 'genai_prices',"
        " 'uvicorn', 'starlette') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_errors_module_documents_every_exported_error() -> None:
    from llmdispatch_nb import errors

    doc = errors.__doc__ or ""
    for name in errors.__all__:
        if name.endswith("Error"):
            assert name in doc, f"{name} is missing from the tree in errors.py's docstring"
