"""Shared pieces of the benchmarks: the emulators in their own process, percentiles,
and import timing in fresh interpreters.

The emulators run in a subprocess so that the client measured here does not share its
interpreter (and GIL) with the server it talks to.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def emulators(time_scale: float = 0.0) -> Iterator[dict[str, str]]:
    """Start `python -m llmdispatch_nb.sim` and yield {vendor: base_url}."""
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
        yield urls
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def pct(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(q / 100 * (len(s) - 1))))
    return s[k]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def import_time(statement: str, runs: int = 7) -> float:
    """Median seconds for `statement` in a fresh interpreter (process start subtracted)."""
    def once(code: str) -> float:
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
        return time.perf_counter() - t

    base = median([once("pass") for _ in range(runs)])
    return max(0.0, median([once(statement) for _ in range(runs)]) - base)
