"""A 20,000-request sweep over three vendors submitted as batches to the emulated batch
engines (issue 18), run by hand:

    .venv/bin/python bench/batch_bench.py [--requests 20000]

The emulators run in a subprocess (`python -m llmdispatch_nb.sim --time-scale 0`, their
batch clock at its default: a batch's window passes in about a second once its answers
are made), so the figures here are the client's own. It reports:

- submission: the time from `d.batch(...)` to the job handle (building every vendor body,
  storing the job in the ledger, uploading and creating each vendor batch);
- client memory: this process's peak resident set before and after submitting and
  after collecting (the emulators' memory is their own process's);
- results ready -> DataFrame: from the moment every vendor batch has ended to the full
  DataFrame (downloading the results, one ledger attempt per answer, the frame), target
  under 10 s for 20,000 rows;
- cost: the answers' tokens priced at list price (live) and at the batch price.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TARGETS = ["openai:gpt-4o-mini", "anthropic:claude-haiku-4-5", "google:gemini-2.0-flash"]
MAX_TOKENS = 64


def _rss() -> float:
    """This process's peak resident set so far, MiB (the emulators are another process)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _emulators() -> tuple[subprocess.Popen[str], dict[str, str]]:
    proc = subprocess.Popen([sys.executable, "-m", "llmdispatch_nb.sim", "--time-scale", "0"],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    urls: dict[str, str] = {}
    while len(urls) < 4:
        vendor, url = proc.stdout.readline().split()
        urls[vendor] = url
    return proc, urls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=20_000)
    args = ap.parse_args()
    import pandas  # noqa: F401  (a notebook has it loaded; its import is not the batch's time)

    from llmdispatch_nb import Dispatcher, Endpoint, Secret
    from llmdispatch_nb._types import Usage
    from llmdispatch_nb.ledger import Ledger

    proc, urls = _emulators()
    home = tempfile.mkdtemp(prefix="batch-bench-")
    try:
        key = Secret("bench-key")
        eps = [Endpoint("openai", "openai", urls["openai"], key=key, simulated=True),
               Endpoint("anthropic", "anthropic", urls["anthropic"], key=key, simulated=True),
               Endpoint("google", "gemini", urls["google"], key=key, simulated=True)]
        ledger = Ledger(Path(home) / "ledger.db")
        with Dispatcher(eps, dotenv=False, ledger=ledger) as d:
            d.prices.warm([("openai", "gpt-4o-mini"), ("anthropic", "claude-haiku-4-5"),
                           ("google", "gemini-2.0-flash")])
            per_target = args.requests // len(TARGETS)
            prompts = [f"Question {i}: explain topic {i % 97} briefly." for i in range(per_target)]
            rss0 = _rss()
            t0, c0 = time.perf_counter(), time.process_time()
            job = d.batch(prompts, TARGETS, max_tokens=MAX_TOKENS, name="batch-bench")
            submit_s = time.perf_counter() - t0
            submit_cpu = time.process_time() - c0
            rss1 = _rss()
            print(f"submitted {job.total} requests in {len(job.parts)} vendor batches: "
                  f"{submit_s:.2f} s (CPU {submit_cpu:.2f} s); peak resident set {rss0:.0f} -> {rss1:.0f} MiB",
                  flush=True)
            waited = time.perf_counter()
            while True:
                status = job.status()
                if status["state"] != "running":
                    break
                time.sleep(0.5)
            print(f"every vendor batch ended after {time.perf_counter() - waited:.1f} s "
                  f"(the emulators answering)", flush=True)
            t1, c1 = time.perf_counter(), time.process_time()
            written = job.collect()
            collect_s = time.perf_counter() - t1
            df = job.results()
            frame_s, frame_cpu = time.perf_counter() - t1, time.process_time() - c1
            rss2 = _rss()
            ok = int((df["status"] == "ok").sum())
            print(f"results ready -> DataFrame of {len(df)} rows ({ok} ok): {frame_s:.2f} s, "
                  f"of which collecting ({written} ledger attempts written) {collect_s:.2f} s; "
                  f"CPU {frame_cpu:.2f} s (every thread; the load average was "
                  f"{os.getloadavg()[0]:.1f}) "
                  f"(target < 10 s); peak resident set {rss2:.0f} MiB",
                  flush=True)
            batch_cost = float(df["cost_usd"].sum())
            live_cost = 0.0
            rows = ledger.records(tags=f"batch:{job.id}")
            for r in rows:
                ep = d.endpoints[r.vendor]
                live_cost += d._price(ep, r.model_requested, Usage(
                    input_tokens=r.input_tokens or 0, output_tokens=r.output_tokens or 0)).usd or 0.0
            print(f"cost of the same answers: live ${live_cost:.4f}, batch ${batch_cost:.4f} "
                  f"({batch_cost / live_cost:.0%} of live)" if live_cost else "no price known")
            print(f"ledger rows for the job: {len(rows)} (requests: {job.total})")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    os.environ.setdefault("LLMDISPATCH_HOME", tempfile.mkdtemp(prefix="batch-bench-home-"))
    main()
