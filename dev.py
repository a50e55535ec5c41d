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
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PY = VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


KEY_VARIABLES = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY",
                 "AZURE_OPENAI_API_KEY", "OLLAMA_BASE_URL", "LLMDISPATCH_COMPAT_BASE_URL")


def run(*cmd: str | os.PathLike[str], **kw: object) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, **kw)  # type: ignore[call-overload]


class Progress:
    """One line saying what a long step is doing and for how long: rewritten in place on a
    terminal; elsewhere (CI, a log) a new line when the phase changes or every 15 s."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.start = time.monotonic()
        self.doing = "starting"
        self.tty = sys.stdout.isatty()
        self.printed_at = 0.0
        self.printed = ""
        self.lock = threading.Lock()
        self.done = threading.Event()
        threading.Thread(target=self._tick, daemon=True).start()  # pip is silent for minutes

    def set(self, doing: str) -> None:
        with self.lock:
            changed = doing.split(":")[0] != self.doing.split(":")[0]
            self.doing = doing
        self.show(force=changed)

    def show(self, force: bool = False) -> None:
        with self.lock:
            now = time.monotonic()
            line = f"  {self.what}: {self.doing} ({now - self.start:.0f} s)"
            if self.tty:
                sys.stdout.write("\r" + line[:110].ljust(len(self.printed)))
                self.printed = line[:110]
            elif force or now - self.printed_at >= 15:
                sys.stdout.write(line + "\n")
            else:
                return
            self.printed_at = now
            sys.stdout.flush()

    def _tick(self) -> None:
        while not self.done.wait(1.0 if self.tty else 15.0):
            self.show()

    def finish(self, last: str) -> None:
        self.done.set()
        self.set(last)
        if self.tty:
            sys.stdout.write("\n")


def pip_install(*args: str) -> None:
    """pip install, with a line of progress instead of its whole log (or four silent
    minutes); its last lines are shown if it fails."""
    cmd = [str(PY), "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar",
           "off", *args]
    print("+", " ".join(cmd), flush=True)
    progress = Progress("pip")
    tail: deque[str] = deque(maxlen=60)
    found = 0
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1)
    assert proc.stdout is not None
    for line in proc.stdout:
        tail.append(line)
        if m := re.match(r"(?:Collecting|Requirement already satisfied:) ([\w.-]+)", line):
            found += 1
            progress.set(f"collecting: {found} packages so far, now {m.group(1)}")
        elif m := re.match(r"Installing collected packages: (.*)", line):
            n = len(m.group(1).split(","))
            progress.set(f"installing: {n} packages into .venv (the slowest step, often a minute "
                         "or more)")
    if proc.wait() != 0:
        progress.finish("failed")
        sys.stdout.write("".join(tail))
        sys.exit(f"pip install failed (exit {proc.returncode}); its last lines are above")
    progress.finish("done")


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
    first = not any(VENV.glob(".installed-*"))
    how_long = ("first run: about 150 packages, usually 2-5 minutes" if first
                else "pyproject.toml changed: usually under a minute")
    print(f"Installing llmdispatch-nb[{extras}] and its dependencies into .venv ({how_long}).",
          flush=True)
    pip_install("-e", f"{ROOT}[{extras}]")
    stamp.write_text(digest)


def ensure_chromium() -> None:
    """The panel's end-to-end test drives Debian's chromium; install it when we can."""
    if shutil.which("chromium"):
        return
    if os.name == "posix" and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        print("Installing Debian's chromium for the browser tests (a minute or two).", flush=True)
        run("apt-get", "update", "-qq", env=env)
        run("apt-get", "install", "-y", "-qq", "chromium", env=env)
    else:
        print("note: chromium not found and cannot be installed here; browser tests will skip")


def ensure_servers() -> None:
    """The team tests start Debian's postgresql and redis-server on loopback; install them
    when missing and we can (the tests skip, loudly, when they are not there)."""
    import glob

    if glob.glob("/usr/lib/postgresql/*/bin/initdb") and shutil.which("redis-server"):
        return
    if os.name == "posix" and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        print("Installing Debian's postgresql and redis-server for the team tests.", flush=True)
        try:
            run("apt-get", "update", "-qq", env=env)
            run("apt-get", "install", "-y", "-qq", "postgresql", "redis-server", env=env)
        except subprocess.CalledProcessError as exc:  # the other tests still run
            print(f"note: installing them failed ({exc}); the team tests will skip")
    else:
        print("note: postgresql or redis-server not found and cannot be installed here; "
              "the team tests will skip")


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
    ensure_servers()
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
