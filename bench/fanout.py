"""Fan-out: 2,000 calls at once across the four emulated vendors at their real pace, a
fifth of the responses faulted, fallbacks on, and a concurrency cap per vendor.

    .venv/bin/python bench/fanout.py [--calls 2000] [--fault-rate 0.2] [--concurrent 50]
                                     [--time-scale 1] [--max-tokens 48] [--in-process]
                                     [--default-breaker] [--overhead-n 300]

The emulators run in a subprocess (this script with --serve) so the calls measured here
do not share an interpreter and its GIL with the servers; that subprocess scripts each
emulator's FaultPlan (`faults.rate(...)`: 429s with a short retry-after, in seconds and in
milliseconds or RetryInfo, 500, 503, 529 and connection resets) and reports its request
counts. `--in-process` serves them from this process instead (`serve(time_scale=...)`),
which shows what sharing one interpreter costs.

Every call goes through the whole path: routing with a default fallback chain across the
vendors, the circuit breaker, the per-vendor limiter (`Limit(concurrent=N)`), a budget,
and the SQLite ledger. A quarter of the calls are streamed.

What it reports:

* answered, typed errors (by class) and lost calls (anything else, or an answer the ledger
  does not hold; must be 0);
* ledger rows for attempts that reached a vendor against the emulators' request counts
  (must be equal), in total and per vendor;
* wall time against the ideal. Answers are cut to `max_tokens` (every profile's shortest
  answer is longer), so each successful request holds a slot for a known time, the
  model's time to first token plus max_tokens / tokens per second (times time_scale).
  With `--max-tokens 0` answers keep their natural length (60-260 tokens, as the
  profiles give them) and each answered request's service time comes from its own
  reported output tokens.
  A faulted request fails at once and its retry waits outside the slot, so it costs a
  slot next to nothing. The vendors run side by side, each behind its own cap, so

      ideal = max over vendors v of (requests answered by v x service time of v) / cap of v

  (the sum over vendors would be the ideal only if the vendors took turns). The same
  figure is also computed from the latencies the ledger observed;
* the full path's per-call overhead against raw httpx, sequential p50 on the OpenAI
  emulator (in its own process) with no emulated delay, as bench/overhead.py measures it,
  for the bare dispatcher and for one with a group, the cheapest strategy, fallbacks,
  breaker, limits (vendor and candidate), a budget with a tag budget, and the SQLite
  ledger; awaited from the caller's loop, where async calls run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ROOT = Path(__file__).resolve().parent.parent
VENDORS = ("openai", "anthropic", "google", "azure")
TARGETS = {"openai": "openai:gpt-4o-mini", "anthropic": "anthropic:claude-haiku-4-5",
           "google": "google:gemini-2.5-flash", "azure": "azure:gpt-4o-mini"}
PROFILE = {"openai": ("openai", "gpt-4o-mini"), "anthropic": ("anthropic", "claude-haiku-4-5"),
           "google": ("google", "gemini-2.5-flash"), "azure": ("azure", "gpt-4o-mini")}
DEFAULT_FALLBACKS = [TARGETS["anthropic"], TARGETS["google"], TARGETS["azure"], TARGETS["openai"]]


def fault_mix() -> tuple[Any, ...]:
    from llmdispatch_nb.sim import Fault

    return (Fault("429", retry_after=0.2), Fault("429-ms", retry_after=0.1), "500", "503",
            "529", "reset")


# -- the emulators ---------------------------------------------------------------------------


def serve_main(time_scale: float) -> None:
    """The emulators' process: `rate <p>` sets the fault rate, `counts` reports."""
    from llmdispatch_nb.sim import serve

    with serve(VENDORS, time_scale=time_scale) as sim:
        for vendor in sim.emulators:
            print(vendor, sim.base_url(vendor), flush=True)
        for line in sys.stdin:
            cmd, _, arg = line.strip().partition(" ")
            if cmd == "rate":
                script(sim, float(arg))
                print("{}", flush=True)
            elif cmd == "counts":
                print(json.dumps(tally(sim)), flush=True)


def script(sim: Any, fault_rate: float) -> None:
    for i, emu in enumerate(sim.emulators.values()):
        emu.faults.clear()
        if fault_rate > 0:
            emu.faults.rate(fault_rate, *fault_mix(), seed=2000 + i)


def tally(sim: Any) -> dict[str, Any]:
    return {"counts": {v: e.count for v, e in sim.emulators.items()},
            "faults": {v: sum(1 for r in e.requests.chat() if r.fault)
                       for v, e in sim.emulators.items()},
            "cpu_s": time.process_time()}


class Emulators:
    """The emulators in a subprocess, or (in_process) in this one."""

    def __init__(self, time_scale: float, in_process: bool) -> None:
        self.sim: Any = None
        self.proc: subprocess.Popen[str] | None = None
        self.urls: dict[str, str] = {}
        if in_process:
            from llmdispatch_nb.sim import serve

            self.sim = serve(VENDORS, time_scale=time_scale)
            self.urls = {v: self.sim.base_url(v) for v in VENDORS}
            return
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", "--time-scale", str(time_scale)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        assert self.proc.stdout is not None
        while len(self.urls) < len(VENDORS):
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("the emulators did not start")
            vendor, _, url = line.strip().partition(" ")
            self.urls[vendor] = url

    def _ask(self, line: str) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None and self.proc.stdout
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return dict(json.loads(self.proc.stdout.readline()))

    def set_fault_rate(self, rate: float) -> None:
        if self.sim is not None:
            script(self.sim, rate)
        else:
            self._ask(f"rate {rate}")

    def stats(self) -> dict[str, Any]:
        return tally(self.sim) if self.sim is not None else self._ask("counts")

    def close(self) -> None:
        if self.sim is not None:
            self.sim.close()
            return
        assert self.proc is not None
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


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


# -- the fan-out -----------------------------------------------------------------------------


def service_s(vendor: str, max_tokens: int, time_scale: float) -> float:
    from llmdispatch_nb.sim._core import profile_for, total_time

    return total_time(profile_for(*PROFILE[vendor]), max_tokens, time_scale)


def prompt_for(i: int) -> str:
    return f"fan-out call {i}: say something about rivers."


async def fan_out(d: Any, n: int, max_tokens: int, ended: list[float]) -> list[Any]:
    """All `n` calls at once through the dispatcher; a quarter of them streamed. Each
    call's end time (perf_counter) goes into `ended`."""
    async def one(i: int) -> Any:
        target = TARGETS[VENDORS[i % len(VENDORS)]]
        try:
            if i % 4 == 3:
                s = d.astream(prompt_for(i), target, max_tokens=max_tokens or None)
                async for _ in s:
                    pass
                return s.response
            return await d.asend(prompt_for(i), target, max_tokens=max_tokens or None)
        except BaseException as exc:  # counted by the caller: typed or lost
            return exc
        finally:
            ended.append(time.perf_counter())

    return await asyncio.gather(*(one(i) for i in range(n)))


async def raw_fan_out(urls: dict[str, str], n: int, max_tokens: int, cap: int,
                      our_transport: bool = False) -> float:
    """The baseline: the same calls with plain httpx and a semaphore per vendor (the
    requests built by our sans-IO adapters, the bodies only read), no retries; on httpx's
    own transport, or (`our_transport`) on the HTTP/1.1 transport the Dispatcher uses."""
    import httpx

    from llmdispatch_nb import Request
    from llmdispatch_nb.vendors import adapter_for

    eps = {ep.name: ep for ep in endpoints(urls)}
    gates = {v: asyncio.Semaphore(cap) for v in VENDORS}
    # A client (a connection pool) per vendor, keeping every connection alive, as the
    # Dispatcher does: one pool shared by all four vendors spends its CPU walking the
    # pool and reconnecting (httpcore closes idle connections above its keep-alive limit).
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    def transport() -> httpx.AsyncBaseTransport | None:
        if not our_transport:
            return None
        from llmdispatch_nb._aiohttp import Http11Transport

        return Http11Transport()

    clients = {v: httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=10.0), limits=limits,
                                    transport=transport())
               for v in VENDORS}
    try:

        async def one(i: int) -> None:
            vendor = VENDORS[i % len(VENDORS)]
            ep = eps[vendor]
            model = TARGETS[vendor].partition(":")[2]
            req = adapter_for(ep.kind).build_request(
                Request(prompt_for(i), max_tokens=max_tokens or None), model, ep,
                stream=i % 4 == 3)
            async with gates[vendor]:
                r = await clients[vendor].send(req, stream=True)
                await r.aread()
                await r.aclose()

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        return time.perf_counter() - t0
    finally:
        for client in clients.values():
            await client.aclose()


def run_fanout(emus: Emulators, args: argparse.Namespace, fault_rate: float) -> dict[str, Any]:
    from llmdispatch_nb import Dispatcher, Response
    from llmdispatch_nb.errors import LLMDispatchError
    from llmdispatch_nb.ledger import Ledger
    from llmdispatch_nb.resilience import Budget, CircuitBreaker, Limit, RetryPolicy

    emus.set_fault_rate(fault_rate)
    tmp = tempfile.TemporaryDirectory()
    ledger = Ledger(Path(tmp.name))
    # The default breaker judges a candidate after 5 outcomes. At the start of a burst the
    # faults come back first (they fail at once; answers take a second), so a 20% fault
    # rate reads as far more and trips circuits for 30 s. Judging over 50 outcomes keeps
    # that early bias out; --default-breaker shows what happens without it.
    breaker = CircuitBreaker() if args.default_breaker else CircuitBreaker(min_calls=50, window=100)
    d = Dispatcher(endpoints(emus.urls), dotenv=False, ledger=ledger, cache=False,
                   limits={v: Limit(concurrent=args.concurrent) for v in VENDORS},
                   retry=RetryPolicy(max_attempts=3, base_s=0.1, max_backoff_s=0.5),
                   breaker=breaker, budget=Budget(1_000.0),
                   default_fallbacks=DEFAULT_FALLBACKS)
    try:
        for v in VENDORS:  # price tables, connections; not counted below
            d.send("warm up", TARGETS[v], max_tokens=1, fallbacks=list(TARGETS.values()))
        before = emus.stats()
        cpu0, t0 = time.process_time(), time.perf_counter()
        ended: list[float] = []
        out = asyncio.run(fan_out(d, args.calls, args.max_tokens, ended))
        wall = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        server = emus.stats()
        records = [r for r in d.session_records() if r.prompt and r.prompt.startswith("fan-out")]
        stats = d.stats()
    finally:
        d.close()
        tmp.cleanup()
    counts = {v: server["counts"][v] - before["counts"].get(v, 0) for v in VENDORS}
    faults = {v: server["faults"][v] - before["faults"].get(v, 0) for v in VENDORS}
    answered = [r for r in out if isinstance(r, Response)]
    typed = [r for r in out if isinstance(r, LLMDispatchError)]
    ok_calls = {r.call_id for r in records if r.status == "ok"}
    lost = (len(out) - len(answered) - len(typed)) + sum(r.call_id not in ok_calls for r in answered)
    sent = [r for r in records if r.status in ("ok", "error", "cancelled")
            and r.error_class != "LimitWaitTimeoutError"]
    sent_by_vendor = Counter(r.vendor for r in sent)
    ok_by_vendor = Counter(r.vendor for r in records if r.status == "ok")
    if args.max_tokens:
        ideal_by_vendor = {v: ok_by_vendor[v] * service_s(v, args.max_tokens, args.time_scale)
                           / args.concurrent for v in VENDORS}
    else:  # answers at their natural length: each answered request's own service time
        ideal_by_vendor = {v: sum(service_s(v, r.output_tokens or 0, args.time_scale)
                                  for r in records if r.vendor == v and r.status == "ok")
                           / args.concurrent for v in VENDORS}
    observed_by_vendor = {v: sum(r.latency_s or 0.0 for r in records if r.vendor == v)
                          / args.concurrent for v in VENDORS}
    ideal = max(ideal_by_vendor.values())
    observed = max(observed_by_vendor.values())
    return {
        "fault_rate": fault_rate, "calls": args.calls, "answered": len(answered),
        "typed_errors": len(typed),
        "typed_errors_by_class": dict(Counter(type(e).__name__ for e in typed)), "lost": lost,
        "faults_injected": sum(faults.values()),
        "requests_received": sum(counts.values()), "ledger_attempts_sent": len(sent),
        "ledger_matches_emulators": dict(sent_by_vendor) == {v: c for v, c in counts.items() if c},
        "requests_by_vendor": counts, "ledger_sent_by_vendor": dict(sent_by_vendor),
        "ledger_sent_errors_by_class": dict(Counter(r.error_class for r in sent if r.error_class)),
        "answers_by_vendor": dict(ok_by_vendor),
        "retries": stats["retries"], "fallbacks": stats["fallbacks"],
        "breaker": "default" if args.default_breaker else "min_calls=50, window=100",
        "wall_s": round(wall, 2),
        # How long the body of the calls took, and the tail after it (retry waits, the
        # slowest answers): when 50%, 90%, 99% of the calls had ended.
        "ended_by_s": {f"p{q}": round(sorted(ended)[int(len(ended) * q / 100) - 1] - t0, 2)
                       for q in (50, 90, 99)},
        "ideal_s": round(ideal, 2),
        "ideal_by_vendor_s": {v: round(x, 2) for v, x in ideal_by_vendor.items()},
        "ideal_if_vendors_took_turns_s": round(sum(ideal_by_vendor.values()), 2),
        "ratio_to_ideal": round(wall / ideal, 3) if ideal else None,
        "ideal_from_observed_latency_s": round(observed, 2),
        "ratio_to_observed_ideal": round(wall / observed, 3) if observed else None,
        "latency_p50_s": stats["latency_s"]["p50"], "latency_p95_s": stats["latency_s"]["p95"],
        "calls_per_s": round(args.calls / wall, 1),
        "client_cpu_ms_per_call": round(1000 * cpu / args.calls, 3),
        "client_cpu_share_of_wall": round(cpu / wall, 3),
        "emulator_cpu_share_of_wall": None if args.in_process
        else round((server["cpu_s"] - before["cpu_s"]) / wall, 3),
        "loadavg_1min_at_end": round(os.getloadavg()[0], 2),
    }


def run_raw(emus: Emulators, args: argparse.Namespace, our_transport: bool = False
            ) -> dict[str, Any]:
    emus.set_fault_rate(0.0)
    cpu0 = time.process_time()
    wall = asyncio.run(raw_fan_out(emus.urls, args.calls, args.max_tokens, args.concurrent,
                                   our_transport))
    cpu = time.process_time() - cpu0
    answered = {v: args.calls // len(VENDORS) + (i < args.calls % len(VENDORS))
                for i, v in enumerate(VENDORS)}
    # With answers at their natural length the ideal comes from the answers' lengths: the
    # caller fills it in from ours without faults (the same prompts get the same answers).
    ideal = max(n * service_s(v, args.max_tokens, args.time_scale) / args.concurrent
                for v, n in answered.items()) if args.max_tokens else 0.0
    return {"calls": args.calls, "wall_s": round(wall, 2), "ideal_s": round(ideal, 2),
            "ratio_to_ideal": round(wall / ideal, 3) if ideal else None,
            "client_cpu_ms_per_call": round(1000 * cpu / args.calls, 3),
            "client_cpu_share_of_wall": round(cpu / wall, 3),
            "loadavg_1min_at_end": round(os.getloadavg()[0], 2)}


# -- the full path's overhead ------------------------------------------------------------------


PROMPT = "Say hello in five words."
MODEL = "gpt-4o-mini"


async def raw_call(client: Any, base: str) -> float:
    """One call as raw httpx makes it: a hand-built request, a hand-read answer."""
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": PROMPT}],
                       "max_completion_tokens": 64}).encode()
    t = time.perf_counter()
    r = await client.post(f"{base}/chat/completions", content=body,
                          headers={"Authorization": "Bearer bench-key",
                                   "Content-Type": "application/json"})
    assert r.json()["choices"][0]["message"]["content"]
    return time.perf_counter() - t


async def overhead_run(mode: str, n: int, base: str) -> list[float]:
    """`n` sequential calls by one client: raw httpx, the bare dispatcher or the full path."""
    import httpx

    seq: list[float] = []
    if mode in ("raw", "raw_our_transport"):
        from llmdispatch_nb._aiohttp import Http11Transport

        transport = Http11Transport() if mode == "raw_our_transport" else None
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=256),
                                     transport=transport) as client:
            for _ in range(10):
                await raw_call(client, base)
            for _ in range(n):
                seq.append(await raw_call(client, base))
        return seq
    from llmdispatch_nb import Dispatcher, Endpoint, Secret
    from llmdispatch_nb.ledger import Ledger
    from llmdispatch_nb.resilience import Budget, CircuitBreaker, Limit

    tmp = tempfile.TemporaryDirectory()
    eps = [Endpoint("openai", "openai", base, key=Secret("bench-key")),
           Endpoint("backup", "openai", base, key=Secret("bench-key"))]
    kw: dict[str, Any] = {}
    target = f"openai:{MODEL}"
    if mode != "bare":
        kw = dict(groups={"chat": [target, f"backup:{MODEL}"]}, strategy="cheapest",
                  fallbacks={target: ["backup:gpt-4o"]}, default_fallbacks=["backup:gpt-4.1-nano"],
                  breaker=CircuitBreaker(), budget=Budget(1_000.0, per_tag={"bench": 1_000.0}),
                  limits={"openai": Limit(concurrent=64, rpm=1e7, tpm=1e9),
                          target: Limit(concurrent=64)})
        target = "chat"
    d = Dispatcher(eps, dotenv=False, ledger=Ledger(Path(tmp.name)), cache=False, **kw)
    tags = [] if mode == "bare" else ["bench"]

    async def calls() -> list[float]:
        out: list[float] = []
        for i in range(10 + n):
            t = time.perf_counter()
            r = await d.asend(PROMPT, target, max_tokens=64, tags=tags)
            assert r.text
            if i >= 10:
                out.append(time.perf_counter() - t)
        return out

    try:
        seq = await calls()
    finally:
        d.close()
        tmp.cleanup()
    return seq


def run_overhead(n: int, rounds: int = 8) -> dict[str, Any]:
    from bench._common import emulators, pct

    modes = ("raw", "raw_our_transport", "bare", "full")
    results: dict[str, list[float]] = {m: [] for m in modes}
    per_round = max(1, n // rounds)
    with emulators(0.0) as urls:
        # Short rounds, the order rotated each round, so drift on a shared machine hits
        # every client alike.
        for r in range(rounds):
            for mode in modes[r % len(modes):] + modes[:r % len(modes)]:
                results[mode] += asyncio.run(overhead_run(mode, per_round, urls["openai"]))
    p50 = {m: pct(v, 50) for m, v in results.items()}
    return {
        "n_sequential_each": per_round * rounds,
        "p50_ms": {m: round(v * 1e3, 3) for m, v in p50.items()},
        "p95_ms": {m: round(pct(v, 95) * 1e3, 3) for m, v in results.items()},
        "ratio_p50_bare_to_raw": round(p50["bare"] / p50["raw"], 3),
        "ratio_p50_full_path_to_raw": round(p50["full"] / p50["raw"], 3),
        # The Dispatcher runs on our HTTP/1.1 transport: against raw httpx on the same
        # transport, what our layers alone cost.
        "ratio_p50_full_path_to_raw_on_our_transport":
            round(p50["full"] / p50["raw_our_transport"], 3),
        "full_path_overhead_ms_p50": round((p50["full"] - p50["raw"]) * 1e3, 3),
        "loadavg_1min_at_end": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=2000, help="0 skips the fan-out")
    ap.add_argument("--fault-rate", type=float, default=0.2)
    ap.add_argument("--concurrent", type=int, default=50, help="cap per vendor")
    ap.add_argument("--time-scale", type=float, default=1.0)
    ap.add_argument("--max-tokens", type=int, default=48,
                    help="0: answers at their profile's natural length (60-260 tokens)")
    ap.add_argument("--in-process", action="store_true", help="serve the emulators from this process")
    ap.add_argument("--default-breaker", action="store_true")
    ap.add_argument("--no-baseline", action="store_true",
                    help="skip the raw httpx and no-fault passes")
    ap.add_argument("--overhead-n", type=int, default=300, help="0 skips the overhead part")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve_main(args.time_scale)
        return
    out: dict[str, Any] = {"setup": {
        "calls": args.calls, "concurrent_per_vendor": args.concurrent,
        "time_scale": args.time_scale, "max_tokens": args.max_tokens,
        "emulators": "in-process" if args.in_process else "subprocess",
        "service_s_by_vendor": {v: round(service_s(v, args.max_tokens, args.time_scale), 3)
                                for v in VENDORS},
        "cpus": os.cpu_count(), "loadavg_1min_at_start": round(os.getloadavg()[0], 2)}}
    emus = Emulators(args.time_scale, args.in_process) if args.calls else None
    if emus is not None:  # --calls 0: the overhead part only
        try:
            if not args.no_baseline:
                # What a client with no routing, retries or ledger reaches on this machine
                # now, then ours with no faults: the part of the gap to the ideal that is
                # not ours.
                raws = [run_raw(emus, args), run_raw(emus, args, our_transport=True)]
                out["raw_httpx_no_faults"], out["raw_httpx_our_transport_no_faults"] = raws
                ours = out["ours_no_faults"] = run_fanout(emus, args, 0.0)
                if not args.max_tokens:
                    for raw in raws:
                        raw["ideal_s"] = ours["ideal_s"]
                        raw["ratio_to_ideal"] = round(raw["wall_s"] / ours["ideal_s"], 3)
            out["ours_with_faults"] = run_fanout(emus, args, args.fault_rate)
        finally:
            emus.close()
    if args.overhead_n:
        out["overhead"] = run_overhead(args.overhead_n)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
