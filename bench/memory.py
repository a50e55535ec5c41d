"""Resident memory of a process making many calls through the Dispatcher, ledger on.

    .venv/bin/python bench/memory.py [--calls 100000] [--budget-s 300] [--concurrency 32]

The emulator runs in its own process (time_scale 0), so its request log does not count
here. The Dispatcher has the full path (as in `overhead.py`: limiter, budget, breaker,
SQLite ledger in a temp dir). Resident memory (VmRSS) is sampled every `--every` calls,
with the ledger's queue length and Python's count of tracked objects beside it. When the
time budget runs out first, the run stops there and says how many calls it made; the
growth per 10,000 calls over the second half is reported so that it can be extrapolated.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import ROOT, emulator_process, loadavg, rss_mb, temp_home
from bench.overhead import MAX_TOKENS, MODEL, _dispatcher


def measure_in_fresh_process(calls: int = 100_000, budget_s: float = 300.0,
                             concurrency: int = 32, every: int = 5_000) -> dict[str, Any]:
    """`measure` in a new interpreter, so that nothing measured before weighs on its RSS."""
    with tempfile.TemporaryDirectory(prefix="llmd-memout-") as tmp:
        out = Path(tmp) / "memory.json"
        subprocess.run([sys.executable, str(Path(__file__).resolve()), "--calls", str(calls),
                        "--budget-s", str(budget_s), "--concurrency", str(concurrency),
                        "--every", str(every), "--json-out", str(out)], check=True, cwd=ROOT)
        return dict(json.loads(out.read_text()))


def measure(calls: int = 100_000, budget_s: float = 300.0, concurrency: int = 32,
            every: int = 5_000, log: Any = print) -> dict[str, Any]:
    samples: list[dict[str, Any]] = []
    with emulator_process(0.0) as (urls, emu_pid), \
            temp_home("llmd-mem-"):
        rss_before = rss_mb()
        d = _dispatcher(urls["openai"])
        target = f"openai:{MODEL}"

        def sample(done: int, t0: float) -> None:
            samples.append({"calls": done, "rss_mib": round(rss_mb(), 1),
                            "ledger_pending": d.ledger.pending(),
                            "gc_objects": len(gc.get_objects()),
                            "elapsed_s": round(time.monotonic() - t0, 1),
                            "emulator_rss_mib": round(rss_mb(emu_pid), 1)})

        async def run() -> int:
            t0 = time.monotonic()
            sample(0, t0)
            done = 0
            sem = asyncio.Semaphore(concurrency)

            async def one(i: int) -> None:
                async with sem:
                    # A distinct prompt per call, as real traffic would have.
                    r = await d.asend(f"Summarise ticket {i} in one line.", target,
                                      max_tokens=MAX_TOKENS)
                    assert r.text

            while done < calls and time.monotonic() - t0 < budget_s:
                n = min(every, calls - done)
                await asyncio.gather(*(one(done + i) for i in range(n)))
                done += n
                sample(done, t0)
                if len(samples) % 5 == 1:
                    log(f"  memory: {done} calls, RSS {samples[-1]['rss_mib']} MiB, "
                        f"{samples[-1]['elapsed_s']} s")
            return done

        try:
            done = asyncio.run(run())
            d.ledger.flush()
            rows = d.ledger.count()
        finally:
            d.close()
    # Growth over the second half: the first calls grow the connection pool, the ledger's
    # first column blocks and the interpreter's caches, which a long run does not repeat.
    half = next((s for s in samples if s["calls"] >= done // 2), samples[0])
    last = samples[-1]
    span = last["calls"] - half["calls"]
    growth = (last["rss_mib"] - half["rss_mib"]) / span * 10_000 if span else 0.0
    return {
        "calls_requested": calls, "calls_made": done, "concurrency": concurrency,
        "budget_s": budget_s, "stopped_by_budget": done < calls,
        "rss_before_dispatcher_mib": round(rss_before, 1), "ledger_rows": rows,
        "samples": samples,
        "growth_mib_per_10k_second_half": round(growth, 3),
        "extrapolated_rss_at_100k_mib": round(
            last["rss_mib"] + max(0.0, growth) * (100_000 - done) / 10_000, 1),
        "loadavg_end": loadavg(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=100_000)
    ap.add_argument("--budget-s", type=float, default=300.0)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--every", type=int, default=5_000)
    ap.add_argument("--json-out", help="also write the figures to this file")
    args = ap.parse_args()
    fig = measure(args.calls, args.budget_s, args.concurrency, args.every)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(fig))
    for s in fig["samples"]:
        print(s)
    print({k: v for k, v in fig.items() if k != "samples"})


if __name__ == "__main__":
    main()
