"""Ledger speed and memory, by hand: `python bench/ledger_bench.py [--rows 1000000]`
(`--skip read overhead` for the write rate alone, `--text full` for one text setting).

Prints:
  * sustained write rate: records/s from the first `write()` to `flush()` returning, with
    realistic records (prompt ~150 chars, answer ~800, tags, params), per text setting;
    and what `write()` costs the caller's thread
  * a ledger of --rows rows: `analysis.calls()` time, `analysis.summary()` time and the
    peak resident memory of a fresh process that does only that (import time shown apart)
  * per-call overhead through a Dispatcher against the OpenAI emulator (time_scale=0),
    ledger on vs a ledger that drops records

Targets (issue 4): calls() <= 2 s and summary() <= 0.5 s at 1,000,000 rows, <= 400 MB,
>= 50,000 records/s, per-call overhead within 5%.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llmdispatch_nb._types import CallRecord
from llmdispatch_nb.ledger import Ledger

VENDORS = {"openai": ["gpt-4o", "gpt-4o-mini", "gpt-4.1"],
           "anthropic": ["claude-sonnet-4-5", "claude-haiku-4-5"],
           "google": ["gemini-2.5-flash", "gemini-2.5-pro"], "azure": ["gpt-4o"]}
PROMPT = "Summarise the quarterly report in three bullet points, citing the figures used. " * 2
ANSWER = ("The report shows revenue up 12% on the quarter, driven by subscriptions. " * 11)[:800]
ERRORS = ["RateLimitError", "ServerError", "VendorTimeoutError", "OverloadedError"]


def make_records(n: int, seed: int = 1, session: str = "bench") -> list[CallRecord]:
    rng = random.Random(seed)
    out: list[CallRecord] = []
    t0 = time.time() - n * 0.5
    i = 0
    while len(out) < n:
        call_id = f"{rng.getrandbits(128):032x}"
        vendor = rng.choice(list(VENDORS))
        model = rng.choice(VENDORS[vendor])
        attempts = 1 if rng.random() > 0.08 else 2
        for a in range(1, attempts + 1):
            ok = a == attempts and rng.random() > 0.02
            latency = rng.lognormvariate(0, 0.5)
            ttft = latency * rng.uniform(0.1, 0.4)
            out_tokens = rng.randint(20, 600) if ok else None
            out.append(CallRecord(
                call_id=call_id, attempt=a, timestamp=t0 + i * 0.5, vendor=vendor,
                model_requested=model, model_served=model + "-2025" if ok else None,
                status="ok" if ok else "error",
                error_class=None if ok else rng.choice(ERRORS),
                error_message=None if ok else "the vendor answered 429",
                http_status=200 if ok else 429, request_id=f"req_{i:012d}", session=session,
                route_reason="explicit", retried=a > 1, streamed=rng.random() < 0.5,
                latency_s=latency, ttft_s=ttft, input_tokens=rng.randint(20, 2000),
                output_tokens=out_tokens, usage_source="reported" if ok else None,
                cost_usd=(rng.random() / 100 if vendor != "azure" else None) if ok else None,
                price_source="genai-prices" if ok else None, finish_reason="stop" if ok else None,
                tags=("bench", f"t{rng.randint(0, 4)}"), params={"temperature": 0, "max_tokens": 512},
                prompt=PROMPT, response=ANSWER if ok else None))
            i += 1
            if len(out) == n:
                break
    return out


def write_rate(records: list[CallRecord], passes: int, text: str, directory: Path) -> dict[str, float]:
    ledger = Ledger(directory / f"rate-{text}.db", text=text)
    ledger.write(records[0])
    ledger.flush()  # open, migrate, start the writer: not part of the rate
    n = 0
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    caller = 0.0
    for _ in range(passes):
        c0 = time.perf_counter()
        for r in records:
            ledger.write(r)
        caller += time.perf_counter() - c0
        n += len(records)
    ledger.flush()
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    ledger.close()
    assert ledger.count() == n + 1
    # Records per CPU-second of this process (caller, writer and checkpoint threads): what
    # the machine's other load changes less than the wall-clock rate.
    return {"records_per_s": n / elapsed, "records_per_cpu_s": n / cpu,
            "write_call_us": caller / n * 1e6, "n": n}


def build(path: Path, rows: int) -> float:
    ledger = Ledger(path, text="off")  # texts are not read by calls(); keeps the file small
    t0 = time.perf_counter()
    chunk = 100_000
    for start in range(0, rows, chunk):
        for r in make_records(min(chunk, rows - start), seed=start + 7):
            ledger.write(r)
    ledger.flush()
    elapsed = time.perf_counter() - t0
    assert ledger.count() == rows, ledger.count()
    ledger.close()
    return elapsed


READ_PROBE = r"""
import json, resource, sys, time
t0 = time.perf_counter()
import pandas, plotly.graph_objects
from llmdispatch_nb import analysis
from llmdispatch_nb.ledger import Ledger
imports = time.perf_counter() - t0
ledger = Ledger(sys.argv[1])
t = time.perf_counter(); df = analysis.calls(ledger); calls_s = time.perf_counter() - t
t = time.perf_counter(); table = analysis.summary(df); summary_s = time.perf_counter() - t
t = time.perf_counter(); figs = [getattr(analysis, f)(df) for f in (
    "latency_figure", "ttft_figure", "tradeoff_figure", "spend_figure", "error_figure",
    "throughput_figure")]; figures_s = time.perf_counter() - t
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across fork+exec, so
# a child of a big process would report the parent's peak.
try:
    hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
    rss = int(hwm.split()[1]) / 1024
except (OSError, IndexError):
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"rows": len(df), "imports_s": imports, "calls_s": calls_s,
                  "summary_s": summary_s, "figures_s": figures_s, "peak_rss_mb": rss,
                  "frame_mb": df.memory_usage(deep=True).sum() / 2**20, "groups": len(table)}))
"""


def read_probe(path: Path) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-c", READ_PROBE, str(path)], capture_output=True,
                         text=True, check=True, cwd=Path(__file__).resolve().parents[1])
    return json.loads(out.stdout.strip().splitlines()[-1])


class DroppingLedger:
    def write(self, record: CallRecord) -> None:
        pass

    def flush(self, timeout: float | None = None) -> None:
        pass


def dispatcher_overhead(n: int, directory: Path) -> dict[str, dict[str, float]]:
    """Per-call wall and CPU time, ledger on vs off, in alternating rounds of 20 calls (the
    median round is kept: other work on the machine comes and goes)."""
    import statistics

    import llmdispatch_nb as ld
    from llmdispatch_nb.sim import serve

    with serve(["openai"], time_scale=0) as sim:
        ep = ld.Endpoint("openai", "openai", sim.base_url("openai"), key=ld.Secret("bench-key"),
                         simulated=True)
        ledgers: dict[str, Any] = {"ledger off": DroppingLedger(),
                                   "ledger on": Ledger(directory / "overhead.db")}
        ds = {name: ld.Dispatcher([ep], dotenv=False, ledger=lg) for name, lg in ledgers.items()}
        wall: dict[str, list[float]] = {name: [] for name in ds}
        cpu: dict[str, list[float]] = {name: [] for name in ds}
        try:
            for d in ds.values():
                for _ in range(50):
                    d.send("warm up", "openai:gpt-4o-mini", max_tokens=32)
            rounds = max(1, n // 20)
            for _ in range(rounds):
                for name, d in ds.items():
                    t0, c0 = time.perf_counter(), time.process_time()
                    for _ in range(20):
                        d.send(PROMPT, "openai:gpt-4o-mini", max_tokens=64)
                    wall[name].append((time.perf_counter() - t0) / 20 * 1e3)
                    cpu[name].append((time.process_time() - c0) / 20 * 1e3)
            ledgers["ledger on"].flush()
        finally:
            for d in ds.values():
                d.close()
    return {name: {"wall_ms": statistics.median(wall[name]),
                   "cpu_ms": statistics.median(cpu[name])} for name in ds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rate-records", type=int, default=100_000)
    parser.add_argument("--rate-passes", type=int, default=3)
    parser.add_argument("--calls", type=int, default=2000, help="dispatcher calls per side")
    parser.add_argument("--skip", nargs="*", default=[], choices=["rate", "read", "overhead"])
    parser.add_argument("--text", nargs="*", default=["full", "hash", "off"],
                        choices=["full", "hash", "off"], help="text settings for the write rate")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        if "rate" not in args.skip:
            records = make_records(args.rate_records)
            for text in args.text:
                r = write_rate(records, args.rate_passes, text, directory)
                print(f"write rate, text={text:<4}: {r['records_per_s']:>9,.0f} records/s "
                      f"({r['records_per_cpu_s']:,.0f} per CPU-second; {r['n']:,} records; "
                      f"write() costs the caller {r['write_call_us']:.2f} us; "
                      f"load average {os.getloadavg()[0]:.1f})")
            del records
        if "read" not in args.skip:
            path = directory / "big.db"
            built = build(path, args.rows)
            size = sum(p.stat().st_size for p in directory.glob("big.db*")) / 2**20
            print(f"built {args.rows:,} rows in {built:.1f} s "
                  f"({args.rows / built:,.0f} records/s incl. making them); file {size:.0f} MB")
            r = read_probe(path)
            print(f"calls():   {r['calls_s']:.2f} s for {r['rows']:,} rows "
                  f"(frame {r['frame_mb']:.0f} MB)")
            print(f"summary(): {r['summary_s']:.3f} s ({r['groups']} vendor/model rows)")
            print(f"figures:   {r['figures_s']:.2f} s for all six")
            print(f"peak RSS:  {r['peak_rss_mb']:.0f} MB (fresh process; pandas+plotly import "
                  f"{r['imports_s']:.2f} s)")
        if "overhead" not in args.skip:
            per_call = dispatcher_overhead(args.calls, directory)
            for what in ("wall_ms", "cpu_ms"):
                off, on = per_call["ledger off"][what], per_call["ledger on"][what]
                print(f"per call via Dispatcher ({what[:-3]} time, median of rounds): ledger "
                      f"off {off:.3f} ms, on {on:.3f} ms ({(on / off - 1) * 100:+.1f}%)")
    # How fast this machine runs Python, to compare these figures with another machine's.
    t0 = time.perf_counter()
    for _ in range(2000):
        sum(range(1000))
    print(f"calibration: sum(range(1000)) takes {(time.perf_counter() - t0) / 2000 * 1e6:.1f} us "
          f"here; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
