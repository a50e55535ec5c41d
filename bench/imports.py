"""Import time in fresh interpreters, and what an import drags in.

    .venv/bin/python bench/imports.py [--runs 7]

Each figure is the median wall time of `python -c "<statement>"` minus the median of
`python -c "<base>"` (the interpreter's own start, or IPython's shell start for the
extension), runs alternating with the base. `%load_ext llmdispatch_nb` is timed as an
IPython `InteractiveShell` that loads the extension, minus the same shell without it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import QUIET_PEERS, ROOT, import_time, ms, run_time

SHELL = ("from IPython.core.interactiveshell import InteractiveShell; "
         "sh = InteractiveShell.instance()")
STATEMENTS: dict[str, tuple[str, str]] = {  # name: (statement, base)
    "import httpx": ("import httpx", "pass"),
    "import llmdispatch_nb": ("import llmdispatch_nb", "pass"),
    "from llmdispatch_nb import Dispatcher": ("from llmdispatch_nb import Dispatcher", "pass"),
    "import openai": ("import openai", "pass"),
    "import litellm": ("import litellm", "pass"),
    "IPython InteractiveShell start": (SHELL, "pass"),
    "%load_ext llmdispatch_nb": (SHELL + "; sh.run_line_magic('load_ext', 'llmdispatch_nb')", SHELL),
}
HEAVY = ("pandas", "numpy", "plotly", "IPython", "ipywidgets", "sqlite3", "httpx")


def dragged_in(statement: str) -> list[str]:
    code = (f"import sys, json; {statement}; "
            f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, **QUIET_PEERS}, check=True).stdout.strip()
    return list(json.loads(out.splitlines()[-1]))


def measure(runs: int = 7, peers_runs: int = 5) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="llmd-ipy-") as ipydir, \
            tempfile.TemporaryDirectory(prefix="llmd-pyc-") as pyc:
        # Every module gets its bytecode from one cache dir, written by a first untimed run:
        # installed packages ship theirs, but a checkout run with PYTHONDONTWRITEBYTECODE=1
        # (as here) would compile ours from source on every import and httpx's not.
        env = {"IPYTHONDIR": ipydir, "PYTHONPYCACHEPREFIX": pyc, "PYTHONDONTWRITEBYTECODE": ""}
        times = {}
        for name, (stmt, base) in STATEMENTS.items():
            run_time(stmt, env)
            n = peers_runs if name == "import litellm" else runs
            times[name] = ms(import_time(stmt, runs=n, base=base, env=env))
        out: dict[str, Any] = {"runs": runs, "ms": times, "bytecode": "cached (one cache dir for all)"}
        out["ratio_llmdispatch_vs_httpx"] = round(
            times["import llmdispatch_nb"] / times["import httpx"], 2) if times["import httpx"] else None
        out["ratio_dispatcher_vs_httpx"] = round(
            times["from llmdispatch_nb import Dispatcher"] / times["import httpx"], 2) \
            if times["import httpx"] else None
        out["modules_loaded"] = {
            "import llmdispatch_nb": dragged_in("import llmdispatch_nb"),
            "from llmdispatch_nb import Dispatcher": dragged_in("from llmdispatch_nb import Dispatcher"),
            "%load_ext llmdispatch_nb": dragged_in(
                SHELL + "; sh.run_line_magic('load_ext', 'llmdispatch_nb')"),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    fig = measure(args.runs)
    for name, t in fig["ms"].items():
        print(f"{name:40s} {t:8.1f} ms")
    print("import llmdispatch_nb / import httpx:", fig["ratio_llmdispatch_vs_httpx"])
    for name, mods in fig["modules_loaded"].items():
        print(f"{name}: loads {mods}")


if __name__ == "__main__":
    main()
