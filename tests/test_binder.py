"""Binder's recipe, followed here: a fresh virtual environment (never
--system-site-packages, which would hide a dependency missing from binder/ or pyproject),
`pip install -r binder/requirements.txt`, then `binder/postBuild` run from a copy of the
repository with that environment first on PATH, as repo2docker runs it. The quickstart is
then executed by that environment's own Jupyter (nbconvert, nbclient underneath) and
kernel, with no keys, and its outputs are checked as in test_notebooks.

Slow (a whole JupyterLab install into a new venv: a few minutes, less with pip's cache),
and worth it: this is what a visitor clicking the Binder badge gets.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.test_notebooks import (
    KEY_VARIABLES,
    NOTEBOOKS,
    PROBE,
    ROOT,
    check_probe,
    check_quickstart,
)

nbformat = pytest.importorskip("nbformat")

BINDER = ROOT / "binder"
# What repo2docker copies is the repository, not this working tree's local state.
NOT_IN_THE_REPO = shutil.ignore_patterns(
    ".git", ".venv", "__pycache__", "*.egg-info", "build", "dist", "test-artifacts",
    ".pytest_cache", ".mypy_cache", ".ruff_cache", ".ipynb_checkpoints", ".env", "*.tmp")


def run(cmd: list[str | Path], cwd: Path, env: dict[str, str], what: str) -> str:
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=1800, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{what} failed ({done.returncode}):\n{output[-4000:]}"
    return output


def test_binder_files_are_what_repo2docker_reads() -> None:
    assert (BINDER / "requirements.txt").is_file()
    post = BINDER / "postBuild"
    assert os.access(post, os.X_OK), "repo2docker runs postBuild as a program: keep it executable"
    assert post.read_text().startswith("#!/bin/bash")
    # runtime.txt: python-3.X, no older than the package allows.
    runtime = (BINDER / "runtime.txt").read_text().strip()
    m = re.fullmatch(r"python-3\.(\d+)", runtime)
    assert m, runtime
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    least = re.fullmatch(r">=\s*3\.(\d+)", project["requires-python"])
    assert least, project["requires-python"]
    assert int(m.group(1)) >= int(least.group(1))
    # Everything the notebooks need beyond the package: Lab, a kernel, widgets.
    wanted = {re.split(r"[<>=!~ \[]", line, maxsplit=1)[0].lower()
              for line in (BINDER / "requirements.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")}
    assert {"jupyterlab", "ipykernel", "ipywidgets"} <= wanted


def test_a_fresh_binder_environment_runs_the_quickstart(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(ROOT, repo, ignore=NOT_IN_THE_REPO)
    venv = tmp_path / "venv"
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    python = bindir / "python"

    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME") and k not in KEY_VARIABLES}
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"

    run([sys.executable, "-m", "venv", venv], tmp_path, env, "python -m venv")
    run([python, "-m", "pip", "install", "-q", "-r", "binder/requirements.txt"], repo, env,
        "pip install -r binder/requirements.txt")
    run([repo / "binder" / "postBuild"], repo, env, "binder/postBuild")

    # The package comes from the environment, not from the copy of the sources.
    where = run([python, "-c", "import llmdispatch_nb; print(llmdispatch_nb.__file__)"],
                tmp_path, env, "import llmdispatch_nb").strip()
    assert Path(where).is_relative_to(venv), where

    work = tmp_path / "work"
    work.mkdir()
    nb = nbformat.read(NOTEBOOKS / "quickstart.ipynb", as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(PROBE, id="test-probe"))
    nbformat.write(nb, work / "quickstart.ipynb")
    kernel_env = {**env, "LLMDISPATCH_DEMO": "1", "LLMDISPATCH_HOME": str(tmp_path / "home"),
                  "IPYTHONDIR": str(tmp_path / "ipython"), "JUPYTER_PLATFORM_DIRS": "1"}
    run([bindir / "jupyter", "nbconvert", "--to", "notebook", "--execute",
         "--ExecutePreprocessor.timeout=240", "--output", "executed.ipynb", "quickstart.ipynb"],
        work, kernel_env, "jupyter nbconvert --execute quickstart.ipynb")

    executed = nbformat.read(work / "executed.ipynb", as_version=4)
    check_quickstart(executed)
    check_probe(executed, str(python), [])
