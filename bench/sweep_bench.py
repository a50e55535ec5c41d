"""A 10,000-run sweep against the four emulators at their realistic pace, with faults.

    .venv/bin/python bench/sweep_bench.py [--runs 10000] [--fault-rate 0.1] [--time-scale 1]

The emulators run in a subprocess (this script with --serve), so the sweep measured here
does not share its interpreter and GIL with the servers; that subprocess scripts each
emulator's FaultPlan in-process (a fault rate over retryable kinds: 429 with a
retry-after, 500, 503 and connection resets) and reports its request counts and CPU.

The dispatcher caps each vendor's concurrent calls (`Limit(concurrent=...)`). With
answers cut to `max_tokens` tokens, every run's service time is known from the model's
profile (time to first token + tokens / tokens per second), so the limit the caps set is

    ideal = max over vendors of (sum of its runs' service times) / (its cap)

(a failed attempt costs a slot almost nothing: the emulators fail at once, and retries
wait outside the slot). The bench reports the wall time against that ideal, runs per
second, CPU per run in this process and in the emulators', lost runs (rows that are
neither answered nor failed, or answered rows the ledger does not hold; must be 0) and
whether the ledger holds exactly the attempts the emulators received.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ROOT = Path(__file__).resolve().parent.parent
FAULT_KINDS = ("429", "500", "503", "reset")
MAX_TOKENS = 48
# (target, emulator profile vendor, model) and the per-vendor caps.
TARGETS = [
    ("openai:gpt-4o-mini", "openai", "gpt-4o-mini"),
    ("openai:gpt-4.1-nano", "openai", "gpt-4.1-nano"),
    ("anthropic:claude-haiku-4-5", "anthropic", "claude-haiku-4-5"),
    ("anthropic:claude-sonnet-4-5", "anthropic", "claude-sonnet-4-5"),
    ("google:gemini-2.5-flash", "google", "gemini-2.5-flash"),
    ("google:gemini-2.0-flash", "google", "gemini-2.0-flash"),
    ("azure:gpt-4o-mini", "azure", "gpt-4o-mini"),
    ("azure:gpt-4o", "azure", "gpt-4o"),
]
CAPS = {"openai": 32, "anthropic": 48, "google": 32, "azure": 40}
TEMPLATES = [f"Question {i}: explain {{topic}} {{style}}." for i in range(25)]
STYLES = ["briefly", "to a child"]


# -- the emulators' process ----------------------------------------------------------------


def serve_main(time_scale: float, fault_rate: float) -> None:
    from llmdispatch_nb.sim import serve

    with serve(time_scale=time_scale) as sim:
        for i, emu in enumerate(sim.emulators.values()):
            if fault_rate > 0:
                emu.faults.rate(fault_rate, *FAULT_KINDS, seed=1000 + i)
        for vendor in sim.emulators:
            print(vendor, sim.base_url(vendor), flush=True)
        for line in sys.stdin:
            if line.strip() == "counts":
                counts = {v: e.count for v, e in sim.emulators.items()}
                faults = {v: sum(1 for r in e.requests.chat() if r.fault)
                          for v, e in sim.emulators.items()}
                print(json.dumps({"counts": counts, "faults": faults,
                                  "cpu_s": time.process_time()}), flush=True)


class Emulators:
    def __init__(self, time_scale: float, fault_rate: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", "--time-scale", str(time_scale),
             "--fault-rate", str(fault_rate)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        assert self.proc.stdout is not None
        self.urls: dict[str, str] = {}
        while len(self.urls) < 4:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("the emulators did not start")
            vendor, _, url = line.strip().partition(" ")
            self.urls[vendor] = url

    def stats(self) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("counts\n")
        self.proc.stdin.flush()
        return dict(json.loads(self.proc.stdout.readline()))

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# -- the client ----------------------------------------------------------------------------


def sharded_client(shards: int) -> Any:
    """An httpx client whose requests go to the least busy of `shards` connection pools.

    One httpcore pool serving ~150 concurrent requests adds seconds of latency on this
    machine (see the closing note); several small pools do not. Passed to the Dispatcher
    as `client=` to tell that cost apart from the sweep's own scheduling."""
    import httpx

    class ShardedTransport(httpx.AsyncBaseTransport):
        def __init__(self) -> None:
            limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
            self.pools = [httpx.AsyncHTTPTransport(limits=limits) for _ in range(shards)]
            self.busy = [0] * shards

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            i = min(range(shards), key=self.busy.__getitem__)
            self.busy[i] += 1
            try:
                return await self.pools[i].handle_async_request(request)
            finally:
                self.busy[i] -= 1

        async def aclose(self) -> None:
            for pool in self.pools:
                await pool.aclose()

    return httpx.AsyncClient(transport=ShardedTransport(),
                             timeout=httpx.Timeout(60.0, connect=10.0))


# -- the sweep -----------------------------------------------------------------------------


def endpoints(urls: dict[str, str]) -> list[Any]:
    from llmdispatch_nb import Endpoint, Secret

    key = Secret("bench-key")
    deployments = {"gpt-4o-mini": "gpt-4o-mini", "gpt-4o": "gpt-4o"}
    return [
        Endpoint("openai", "openai", urls["openai"], key=key, simulated=True),
        Endpoint("anthropic", "anthropic", urls["anthropic"], key=key, simulated=True),
        Endpoint("google", "gemini", urls["google"], key=key, simulated=True),
        Endpoint("azure", "azure", urls["azure"], key=key, auth="api-key",
                 api_version="2024-10-21", route="deployments", deployments=deployments,
                 models=tuple(deployments), simulated=True),
    ]


def ideal_wall_s(runs_per_target: int, time_scale: float) -> tuple[float, dict[str, float]]:
    from llmdispatch_nb.sim._core import profile_for, total_time

    per_vendor: dict[str, float] = {}
    for _, vendor, model in TARGETS:
        service = total_time(profile_for(vendor, model), MAX_TOKENS, time_scale)
        per_vendor[vendor] = per_vendor.get(vendor, 0.0) + runs_per_target * service
    limits = {v: s / CAPS[v] for v, s in per_vendor.items()}
    return max(limits.values()), limits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--fault-rate", type=float, default=0.10)
    ap.add_argument("--time-scale", type=float, default=1.0)
    ap.add_argument("--shards", type=int, default=0,
                    help="spread requests over this many connection pools (0: the "
                         "dispatcher's own client)")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve_main(args.time_scale, args.fault_rate)
        return

    from llmdispatch_nb import Dispatcher
    from llmdispatch_nb.experiments import contains, length_between, sweep
    from llmdispatch_nb.ledger import Ledger
    from llmdispatch_nb.resilience import CircuitBreaker, Limit

    per_case = len(TEMPLATES) * len(STYLES) * len(TARGETS)
    topics = max(1, round(args.runs / per_case))
    runs = topics * per_case
    vars = {"topic": [f"topic-{i}" for i in range(topics)], "style": STYLES}
    ideal, by_vendor = ideal_wall_s(runs // len(TARGETS), args.time_scale)

    load_before = os.getloadavg()[0]
    emus = Emulators(args.time_scale, args.fault_rate)
    tmp = tempfile.TemporaryDirectory()
    ledger = Ledger(Path(tmp.name))
    # min_calls = window: the default breaker judges after 5 outcomes, and at the start of a
    # burst the first outcomes are the faults (they fail at once, answers take a second),
    # so 10% faults can read as 80% and trip it for 30 s. Judging over 20 outcomes keeps
    # that early bias out.
    client = sharded_client(args.shards) if args.shards else None
    d = Dispatcher(endpoints(emus.urls), dotenv=False, ledger=ledger, client=client,
                   limits={v: Limit(concurrent=c) for v, c in CAPS.items()},
                   breaker=CircuitBreaker(min_calls=20, window=20))
    # How full each vendor's slots are kept: sampled from a side thread while it runs.
    in_flight: dict[str, list[int]] = {v: [] for v in CAPS}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.25):
            for v, snap in d.limiter.snapshot().items():
                in_flight[v].append(snap["in_flight"])

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        cpu0, t0 = time.process_time(), time.perf_counter()
        df = sweep(TEMPLATES, [t for t, _, _ in TARGETS], vars=vars, dispatcher=d,
                   max_tokens=MAX_TOKENS, evaluators=[contains("simulated"),
                                                      length_between(10, 4000)],
                   resume=False)
        wall = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        server = emus.stats()
        done.set()
        records = ledger.records(tags=f"sweep:{df.attrs['sweep_id']}")
        breaker = {k: (v["trips"], v["last_failure"]) for k, v in d.breaker.snapshot().items()
                   if v["trips"]}
    finally:
        done.set()
        if client is not None:
            d._loop.run(client.aclose())
        d.close()
        emus.close()
        threads = threading.active_count()
    ok = df["status"] == "ok"
    failed = df["status"] == "error"
    ok_calls = {r.call_id for r in records if r.status == "ok"}
    cells_in_ledger = {t[5:] for r in records for t in r.tags if t.startswith("cell:")}
    # Lost: a row neither answered nor failed, an answer the ledger does not hold, a cell
    # the sweep did not return. (A run refused by an open circuit sends nothing and leaves
    # no ledger row: it is failed, counted apart.)
    lost = int((~(ok | failed)).sum()) + int((~df.loc[ok, "call_id"].isin(ok_calls)).sum()) \
        + (runs - len(df))
    unsent = int((failed & ~df["cell_id"].isin(cells_in_ledger)).sum())
    sent = sum(server["counts"].values())
    attempts_in_ledger = sum(1 for r in records if r.status in ("ok", "error"))
    per_vendor = {v: {"received": server["counts"][v],
                     "ledger": sum(1 for r in records if r.vendor == v
                                   and r.status in ("ok", "error"))} for v in CAPS}
    attempt_errors: dict[str, int] = {}
    for r in records:
        if r.status == "error":
            attempt_errors[r.error_class or "?"] = attempt_errors.get(r.error_class or "?", 0) + 1
    observed = {}
    for v in CAPS:
        busy = sum(r.latency_s or 0.0 for r in records if r.vendor == v)
        observed[v] = busy / CAPS[v]
    ideal_observed = max(observed.values())
    out = {
        "runs": runs, "answered": int(ok.sum()), "failed": int(failed.sum()), "lost": lost,
        "failed_by_type": df.loc[failed, "error_type"].value_counts().to_dict(),
        "failed_unsent": unsent,
        "fault_rate": args.fault_rate, "faults_injected": sum(server["faults"].values()),
        "requests_received": sent, "ledger_attempts": attempts_in_ledger,
        "ledger_matches_requests": sent == attempts_in_ledger,
        "attempts_by_vendor": per_vendor,
        "failed_attempts_by_type": attempt_errors,
        "retried_runs": int((df["attempts"] > 1).sum()),
        "caps": CAPS, "time_scale": args.time_scale, "max_tokens": MAX_TOKENS,
        "wall_s": round(wall, 2),
        "ideal_from_profiles_s": round(ideal, 2),
        "ideal_by_vendor_s": {v: round(s, 2) for v, s in by_vendor.items()},
        "ratio_to_ideal": round(wall / ideal, 3) if ideal else None,
        "ideal_from_observed_latency_s": round(ideal_observed, 2),
        "ratio_to_observed_ideal": round(wall / ideal_observed, 3) if ideal_observed else None,
        "slot_use": {v: round(sum(b) / len(b) / CAPS[v], 3) if b else None
                     for v, b in in_flight.items()},
        "mean_latency_s": round(float(df.loc[ok, "latency_s"].mean()), 3),
        "breaker_trips": breaker,
        "client": f"{args.shards} sharded pools" if args.shards else "dispatcher default",
        "runs_per_s": round(runs / wall, 1),
        "client_cpu_ms_per_run": round(1000 * cpu / runs, 3),
        "emulator_cpu_ms_per_run": round(1000 * server["cpu_s"] / runs, 3),
        "spent_usd": round(float(df["spent_usd"].sum()), 4),
        "threads_at_end": threads,
        # Other work on the machine slows both processes; the figures are only as quiet
        # as the machine was (2 cores here).
        "load_avg_1m": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2),
                        "cores": os.cpu_count()},
    }
    print(json.dumps(out, indent=2))
    tmp.cleanup()


if __name__ == "__main__":
    main()
