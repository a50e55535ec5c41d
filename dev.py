#!/usr/bin/env python3
"""Set up and run llmdispatch-nb on a fresh machine with only Python 3.11+.

    python3 dev.py lab     # JupyterLab on notebooks/quickstart.ipynb (emulators when no keys)
    python3 dev.py test    # ruff, mypy and the whole pytest suite

Both create `.venv/` beside this file on first use and install what they need into it,
so nothing lands in the system Python. Only the standard library is used here.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PY = VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


KEY_VARIABLES = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY",
                 "AZURE_OPENAI_API_KEY", "OLLAMA_BASE_URL", "LLMDISPATCH_COMPAT_BASE_URL")


def run(*cmd: str | os.PathLike[str], **kw: object) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, **kw)  # type: ignore[call-overload]


def ensure_venv(extras: str) -> None:
    """Install the package (editable) with `extras`; skip when pyproject is unchanged."""
    if sys.version_info < (3, 11):
        sys.exit(f"llmdispatch-nb needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    if not PY.exists():
        run(sys.executable, "-m", "venv", VENV)
    stamp = VENV / f".installed-{extras}"
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return
    run(PY, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-e", f"{ROOT}[{extras}]")
    stamp.write_text(digest)


def ensure_chromium() -> None:
    """The panel's end-to-end test drives Debian's chromium; install it when we can."""
    if shutil.which("chromium"):
        return
    if os.name == "posix" and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        run("apt-get", "update", "-qq", env=env)
        run("apt-get", "install", "-y", "-qq", "chromium", env=env)
    else:
        print("note: chromium not found and cannot be installed here; browser tests will skip")


def lab(args: list[str]) -> None:
    ensure_venv("lab")
    os.chdir(ROOT)  # the server's root is the repository, whatever folder this ran from
    extra = ["--allow-root"] if os.name == "posix" and os.geteuid() == 0 else []
    if not any(os.environ.get(v) for v in KEY_VARIABLES):
        print("No API key set: the notebooks run on the built-in vendor emulators (demo mode).")
    os.execv(str(PY), [str(PY), "-m", "jupyter", "lab", "notebooks/quickstart.ipynb", *extra, *args])


def test(args: list[str]) -> None:
    ensure_venv("test")
    ensure_chromium()
    run(PY, "-m", "ruff", "check", "llmdispatch_nb", "tests", "bench", cwd=ROOT)
    run(PY, "-m", "mypy", cwd=ROOT)
    code = subprocess.run([str(PY), "-m", "pytest", *args], cwd=ROOT).returncode
    sys.exit(code)


def main() -> None:
    commands = {"lab": lab, "test": test}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit(f"usage: python3 dev.py {{{'|'.join(commands)}}} [args...]")
    commands[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    main()
