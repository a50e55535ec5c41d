"""Shared pieces of the benchmarks: the emulators in their own process, percentiles,
import timing in fresh interpreters, resident memory and a description of the machine.

The emulators run in a subprocess so that the client measured here does not share its
interpreter (and GIL) with the server it talks to.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# LiteLLM fetches its model price map from GitHub on import unless told not to; this
# machine has no network, and a user's first import should not be timed on a download.
QUIET_PEERS = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False",
               "LITELLM_LOG": "ERROR"}


@contextlib.contextmanager
def emulator_process(time_scale: float = 0.0) -> Iterator[tuple[dict[str, str], int]]:
    """Start `python -m llmdispatch_nb.sim`; yield ({vendor: base_url}, its pid)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmdispatch_nb.sim", "--time-scale", str(time_scale)],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    urls: dict[str, str] = {}
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 30
        while len(urls) < 4 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            vendor, _, url = line.strip().partition(" ")
            urls[vendor] = url
        if len(urls) < 4:
            raise RuntimeError(f"emulators did not start: {urls}")
        yield urls, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextlib.contextmanager
def emulators(time_scale: float = 0.0) -> Iterator[dict[str, str]]:
    """Start `python -m llmdispatch_nb.sim` and yield {vendor: base_url}."""
    with emulator_process(time_scale) as (urls, _):
        yield urls


@contextlib.contextmanager
def temp_home(prefix: str = "llmd-bench-") -> Iterator[str]:
    """A throwaway LLMDISPATCH_HOME (the ledger's dir), restored afterwards."""
    import tempfile

    old = os.environ.get("LLMDISPATCH_HOME")
    with tempfile.TemporaryDirectory(prefix=prefix) as home:
        os.environ["LLMDISPATCH_HOME"] = home
        try:
            yield home
        finally:
            if old is None:
                os.environ.pop("LLMDISPATCH_HOME", None)
            else:
                os.environ["LLMDISPATCH_HOME"] = old


def pct(values: Sequence[float], q: float) -> float:
    """The q-th percentile (nearest rank on the sorted values)."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(q / 100 * (len(s) - 1))))
    return s[k]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def run_time(code: str, env: dict[str, str] | None = None) -> float:
    """Wall seconds for `python -c code` in a fresh interpreter (`env` entries set to ""
    are removed from its environment)."""
    full = {**os.environ, **QUIET_PEERS, **(env or {})}
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT,
                   env={k: v for k, v in full.items() if v != ""}, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def import_time(statement: str, runs: int = 7, base: str = "pass",
                env: dict[str, str] | None = None) -> float:
    """Median seconds for `statement` in a fresh interpreter, the median of `base` (the
    interpreter's own start, by default) subtracted. Runs alternate with the base so that
    drift on a shared machine hits both."""
    base_t: list[float] = []
    stmt_t: list[float] = []
    for _ in range(runs):
        base_t.append(run_time(base, env))
        stmt_t.append(run_time(statement, env))
    return max(0.0, median(stmt_t) - median(base_t))


def rss_mb(pid: int | None = None) -> float:
    """Resident memory of a process (this one by default), in MiB, from /proc."""
    path = f"/proc/{pid or 'self'}/status"
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource  # fallback: the peak, not the current size

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def loadavg() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:
        return (float("nan"),) * 3


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_total_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


PACKAGES = ("llmdispatch-nb", "httpx", "httpcore", "openai", "litellm", "uvicorn", "starlette",
            "ipython", "anyio", "h11")


def source_version() -> str:
    """The commit measured, and whether the package had uncommitted changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, cwd=ROOT, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "llmdispatch_nb"],
                               capture_output=True, text=True, cwd=ROOT, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" (llmdispatch_nb has uncommitted changes)" if dirty else "")


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "source": source_version(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": _memory_total_gib(),
        "os": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "packages": {p: version(p) for p in PACKAGES},
        "loadavg_start": loadavg(),
    }


def ms(seconds: float) -> float:
    return round(seconds * 1e3, 3)
