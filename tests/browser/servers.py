"""What the browser tests need: Debian's chromium, and a Jupyter front end on loopback.

`find_chromium()` returns the chromium executable, installing Debian's package when it is
missing and we may (root with apt-get); never a Playwright browser download.
`JupyterServer` runs JupyterLab (`python -m jupyter lab`), Notebook 7 or Voila from this
venv on 127.0.0.1, a free port and a random token, with its config, data, settings and
workspaces in a temporary directory, so nothing of the user's own Jupyter setup leaks in
and nothing leaks out. Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update"]

# Variables that would point the kernel at real vendors, or at the user's own files.
_SCRUBBED = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY",
             "AZURE_OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_AD_TOKEN",
             "OLLAMA_BASE_URL", "OLLAMA_HOST", "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL",
             "GOOGLE_GEMINI_BASE_URL", "LLMDISPATCH_DEFAULT_TARGET", "LLMDISPATCH_COMPAT_BASE_URL",
             "JUPYTER_PATH", "JUPYTER_CONFIG_PATH", "PYTHONSTARTUP")


def find_chromium(install_timeout: float = 900.0) -> tuple[str | None, str]:
    """(path, why-not): Debian's chromium, installed with apt-get when root and missing."""
    for candidate in ("/usr/bin/chromium", shutil.which("chromium")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate, ""
    if os.name != "posix" or os.geteuid() != 0 or not shutil.which("apt-get"):
        return None, "chromium is not installed and this user cannot apt-get install it"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
            subprocess.run(cmd, env=env, check=True, timeout=install_timeout,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    except (subprocess.SubprocessError, OSError) as exc:
        return None, f"chromium is not installed and `apt-get install chromium` failed: {exc}"
    path = "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else shutil.which("chromium")
    return (path, "") if path else (None, "apt-get installed chromium but it is not on PATH")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_notebook(path: Path, cells: list[str]) -> None:
    """A minimal nbformat 4 notebook of code cells, for this venv's python3 kernel."""
    nb = {
        "cells": [{"cell_type": "code", "execution_count": None, "id": f"cell-{i}",
                   "metadata": {}, "outputs": [], "source": src} for i, src in enumerate(cells)],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                    "language": "python"},
                     "language_info": {"name": "python"}},
        "nbformat": 4, "nbformat_minor": 5,
    }
    path.write_text(json.dumps(nb, indent=1), encoding="utf-8")


FRONT_ENDS = ("lab", "notebook", "voila")


class JupyterServer:
    """JupyterLab, Notebook 7 or Voila serving `root` for one test; use as a context
    manager, it always stops. `page` is the URL path where the notebook opens."""

    def __init__(self, root: Path, front_end: str = "lab", notebook: str = "panel.ipynb",
                 env: dict[str, str] | None = None, start_timeout: float = 90.0) -> None:
        if front_end not in FRONT_ENDS:
            raise ValueError(f"front_end must be one of {FRONT_ENDS}, got {front_end!r}")
        self.root = root
        self.front_end = front_end
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.start_timeout = start_timeout
        self.log_path = root.parent / f"{root.name}-{front_end}.log"
        state = root.parent / f"{root.name}-jupyter"
        for sub in ("config", "data", "runtime", "settings", "workspaces", "ipython"):
            (state / sub).mkdir(parents=True, exist_ok=True)
        # Quiet JupyterLab's news and update toasts: they would sit over the notebook.
        notify = state / "settings" / "@jupyterlab" / "apputils-extension"
        notify.mkdir(parents=True, exist_ok=True)
        (notify / "notification.jupyterlab-settings").write_text(
            json.dumps({"fetchNews": "false", "checkForUpdates": False}), encoding="utf-8")
        base = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
        self.env = {**base, "JUPYTER_CONFIG_DIR": str(state / "config"),
                    "JUPYTER_DATA_DIR": str(state / "data"),
                    "JUPYTER_RUNTIME_DIR": str(state / "runtime"),
                    "IPYTHONDIR": str(state / "ipython"),
                    **(env or {})}
        if front_end == "voila":
            # Voila runs the notebook itself when the page is asked for.
            self.page = ""
            self.args = [sys.executable, "-m", "voila", str(root / notebook), "--no-browser",
                         "--Voila.ip=127.0.0.1", f"--Voila.port={self.port}",
                         "--Voila.port_retries=0", f"--Voila.token={self.token}",
                         "--VoilaConfiguration.show_tracebacks=True"]
        else:
            app = "LabApp" if front_end == "lab" else "JupyterNotebookApp"
            self.page = f"lab/tree/{notebook}" if front_end == "lab" else f"notebooks/{notebook}"
            self.args = [
                sys.executable, "-m", "jupyter", front_end, "--no-browser",
                f"--IdentityProvider.token={self.token}", "--ServerApp.terminals_enabled=False",
                "--ServerApp.ip=127.0.0.1", f"--port={self.port}", "--ServerApp.port_retries=0",
                f"--ServerApp.root_dir={root}",
                f"--{app}.user_settings_dir={state / 'settings'}",
                f"--{app}.workspaces_dir={state / 'workspaces'}",
                f"--{app}.expose_app_in_browser=True",
            ]
            if front_end == "lab":
                self.args += ["--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
                              "--LabApp.extension_manager=readonly"]  # no package index lookups
            if os.name == "posix" and os.geteuid() == 0:  # CI containers run as root
                self.args.append("--allow-root")
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}?token={self.token}"

    def _api(self, path: str, method: str = "GET", timeout: float = 5.0) -> Any:
        req = urllib.request.Request(f"{self.base_url}{path}", method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            body = r.read()
        return json.loads(body) if body else None

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def start(self) -> JupyterServer:
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(self.args, cwd=self.root, env=self.env, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                self.stop()
                raise RuntimeError(f"{self.front_end} exited with {code}:\n{self.log_tail()}")
            try:
                if self.front_end == "voila":
                    socket.create_connection(("127.0.0.1", self.port), timeout=2).close()
                else:
                    self._api("/api/status", timeout=2)
                return self
            except (urllib.error.URLError, OSError, ValueError):
                time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"{self.front_end} did not answer within {self.start_timeout:g} s:\n"
                           f"{self.log_tail()}")

    def stop(self) -> None:
        """Shut the server (and its kernels) down: politely, then by signal."""
        proc = self.proc
        if proc is None:
            return
        self.proc = None
        try:
            if proc.poll() is None:
                try:
                    if self.front_end == "voila":  # no shutdown API: SIGTERM stops it cleanly
                        self._signal(proc, signal.SIGTERM)
                    else:
                        self._api("/api/shutdown", method="POST", timeout=5)
                except (urllib.error.URLError, OSError, ValueError):
                    pass
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    self._signal(proc, signal.SIGTERM)
                    try:
                        proc.wait(10)
                    except subprocess.TimeoutExpired:
                        self._signal(proc, signal.SIGKILL)
                        proc.wait(10)
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None

    @staticmethod
    def _signal(proc: subprocess.Popen[bytes], sig: int) -> None:
        # The server was started in its own session: signal its group, kernels included.
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def __enter__(self) -> JupyterServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
