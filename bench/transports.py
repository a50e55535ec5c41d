"""Which HTTP transport the Dispatcher should run on: CPU per call inside our call path, and
the raw clients beside it (issue 20, items 1 and 3).

    .venv/bin/python bench/transports.py [--rounds 5] [--calls 1000] [--seq 300]

Stacks compared, each in a fresh worker process per round (the order rotated every round,
so load from other users of a shared machine hits every stack alike):

* in our call path (the Dispatcher, a client per loop, SQLite ledger, no faults, bodies
  read under the response caps): `ours` (the hand-written `_http11.Http11Transport` under
  httpx, until it was removed), `thin` (aiohttp under httpx through our thin glue,
  `_aiohttp.py`: what the Dispatcher runs on now), `aiohttp` (httpx with
  `httpx_aiohttp.AiohttpTransport`, the same aiohttp through the package's own glue),
  `httpx2` (the whole client moved to httpx2, the openai SDK's stack, on its own
  httpcore2 pool);
* raw clients (adapters build the request, the body is only read, a semaphore per
  vendor): `raw_httpx` (httpx 0.x on httpcore 1), `raw_ours`, `raw_thin`, `raw_aiohttp`,
  `raw_httpx2`.

The httpx2 stacks import httpx2 under the name httpx before anything else (the two share
their API), which is what moving our client to it would be.

Phases: `fanout` (bench/fanout.py's burst: `--calls` at once over the four emulated vendors
at their real pace, 50 per vendor, a quarter streamed) and `seq` (`--seq` calls one at a
time on the OpenAI emulator answering at once, plain then streamed). Reported per stack and
phase: CPU per call (process time of the worker, all its threads: not wall time) as the
median over rounds with its min-max spread, the ratio of medians to `ours` (in-path) or to
the best raw client, p50 latency for `seq`, and the load average around each round. Then
the import cost, as CPU time of fresh interpreters, against `import httpx`.

`python -m bench --only transports` runs this and puts it in bench/RESULTS.md.
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
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# The hand-written transport, measured here until it was replaced by aiohttp (`thin`).
# To measure it again, run this file from a checkout of a commit that still has it.
OLD = ROOT / "llmdispatch_nb" / "_http11.py"

IN_PATH = ("ours", "thin", "aiohttp", "httpx2")
RAW = ("raw_httpx", "raw_ours", "raw_thin", "raw_aiohttp", "raw_httpx2")
STACKS = {
    "ours": "Dispatcher on httpx 0.x + the hand-written HTTP/1.1 transport (_http11.py, "
            "replaced by `thin`)",
    "thin": "Dispatcher on httpx 0.x + aiohttp through our thin glue (_aiohttp.py): what "
            "it runs on now",
    "aiohttp": "Dispatcher on httpx 0.x + httpx-aiohttp's transport (aiohttp, llhttp parser)",
    "httpx2": "Dispatcher on httpx2 with its own pool (httpcore2, h11): the openai SDK's stack",
    "raw_httpx": "raw httpx 0.x on its default pool (httpcore 1, h11, anyio)",
    "raw_ours": "raw httpx 0.x on the hand-written HTTP/1.1 transport",
    "raw_thin": "raw httpx 0.x on aiohttp through our thin glue (_aiohttp.py)",
    "raw_aiohttp": "raw httpx 0.x on httpx-aiohttp's transport (LiteLLM's stack is aiohttp)",
    "raw_httpx2": "raw httpx2 on its own pool (httpcore2): the openai SDK's stack",
}


# -- inside a worker ---------------------------------------------------------------------------


def make_client(kind: str, timeout: Any) -> Any:
    import httpx  # httpx2 itself in the httpx2 stacks

    limits = httpx.Limits(max_connections=256, max_keepalive_connections=64,
                          keepalive_expiry=4.0)  # as ours
    # In our call path, every client reads bodies under the caps, as the Dispatcher's do.
    hooks: dict[str, Any] = {}
    if kind in IN_PATH:
        from llmdispatch_nb._transport import response_caps, response_hook

        hooks = {"response": [response_hook(response_caps())]}
    if kind in ("ours", "raw_ours"):  # the hand-written transport, while it is there
        from llmdispatch_nb._http11 import Http11Transport

        return httpx.AsyncClient(timeout=timeout, transport=Http11Transport(), event_hooks=hooks)
    if kind in ("thin", "raw_thin"):
        from llmdispatch_nb._aiohttp import Http11Transport as Thin

        return httpx.AsyncClient(timeout=timeout, transport=Thin(), event_hooks=hooks)
    if kind in ("aiohttp", "raw_aiohttp"):
        from httpx_aiohttp import AiohttpTransport

        return httpx.AsyncClient(timeout=timeout, transport=AiohttpTransport(limits=limits),
                                 event_hooks=hooks)
    return httpx.AsyncClient(timeout=timeout, limits=limits, event_hooks=hooks)


async def raw_fanout(kind: str, urls: dict[str, str], n: int, max_tokens: int, cap: int) -> None:
    import httpx

    from bench.fanout import TARGETS, VENDORS, endpoints, prompt_for
    from llmdispatch_nb import Request
    from llmdispatch_nb.vendors import adapter_for

    eps = {ep.name: ep for ep in endpoints(urls)}
    gates = {v: asyncio.Semaphore(cap) for v in VENDORS}
    client = make_client(kind, httpx.Timeout(60.0, connect=10.0))  # one per loop, as ours

    async def one(i: int) -> None:
        vendor = VENDORS[i % len(VENDORS)]
        req = adapter_for(eps[vendor].kind).build_request(
            Request(prompt_for(i), max_tokens=max_tokens), TARGETS[vendor].partition(":")[2],
            eps[vendor], stream=i % 4 == 3)
        async with gates[vendor]:
            r = await client.send(req, stream=True)
            try:
                await r.aread()
            finally:
                await r.aclose()

    try:
        await asyncio.gather(*(one(i) for i in range(n)))
    finally:
        await client.aclose()


def dispatcher(kind: str, urls: dict[str, str], concurrent: int) -> tuple[Any, Any]:
    from bench.fanout import DEFAULT_FALLBACKS, VENDORS, endpoints
    from llmdispatch_nb import Dispatcher
    from llmdispatch_nb.ledger import Ledger
    from llmdispatch_nb.resilience import Budget, CircuitBreaker, Limit, RetryPolicy

    tmp = tempfile.TemporaryDirectory()
    if True:  # each stack's client, the caps included
        Dispatcher._new_client = lambda self: make_client(kind, self.timeout)  # type: ignore[method-assign]
    d = Dispatcher(endpoints(urls), dotenv=False, ledger=Ledger(Path(tmp.name)), cache=False,
                   limits={v: Limit(concurrent=concurrent) for v in VENDORS},
                   retry=RetryPolicy(max_attempts=3, base_s=0.1, max_backoff_s=0.5),
                   breaker=CircuitBreaker(min_calls=50, window=100), budget=Budget(1_000.0),
                   default_fallbacks=DEFAULT_FALLBACKS)
    return d, tmp


def worker(kind: str, phase: str, urls: dict[str, str], n: int, max_tokens: int) -> dict[str, Any]:
    from bench.fanout import TARGETS, VENDORS, fan_out

    out: dict[str, Any] = {"kind": kind, "phase": phase}
    if phase == "fanout" and kind in RAW:
        asyncio.run(raw_fanout(kind, urls, 40, max_tokens, 50))  # connections, imports
        cpu0, t0 = time.process_time(), time.perf_counter()
        asyncio.run(raw_fanout(kind, urls, n, max_tokens, 50))
        out.update(cpu=time.process_time() - cpu0, wall=time.perf_counter() - t0, ok=n)
        return out
    if phase == "fanout":
        d, tmp = dispatcher(kind, urls, 50)
        try:
            for v in VENDORS:
                d.send("warm up", TARGETS[v], max_tokens=1)
            ended: list[float] = []
            cpu0, t0 = time.process_time(), time.perf_counter()
            res = asyncio.run(fan_out(d, n, max_tokens, ended))
            out.update(cpu=time.process_time() - cpu0, wall=time.perf_counter() - t0,
                       ok=sum(not isinstance(r, BaseException) for r in res),
                       errors=sorted({type(r).__name__ for r in res if isinstance(r, BaseException)}))
        finally:
            d.close()
            tmp.cleanup()
        return out
    # seq: one at a time on the OpenAI emulator answering at once, plain then streamed
    return out | asyncio.run(seq(kind, urls, n))


async def seq(kind: str, urls: dict[str, str], n: int) -> dict[str, Any]:
    import httpx

    from bench._common import pct
    from llmdispatch_nb import Request
    from llmdispatch_nb.vendors import adapter_for

    out: dict[str, Any] = {}
    if kind in RAW:
        from bench.fanout import endpoints

        ep = next(e for e in endpoints(urls) if e.name == "openai")
        client = make_client(kind, httpx.Timeout(60.0, connect=10.0))

        async def call(stream: bool) -> None:
            req = adapter_for("openai").build_request(
                Request("Say hello in five words.", max_tokens=64), "gpt-4o-mini", ep, stream=stream)
            r = await client.send(req, stream=True)
            try:
                await r.aread()
            finally:
                await r.aclose()
    else:
        d, tmp = dispatcher(kind, urls, 64)
        await d._clients.adopt()

        async def call(stream: bool) -> None:
            if stream:
                async for _ in d.astream("Say hello in five words.", "openai:gpt-4o-mini",
                                         max_tokens=64):
                    pass
            else:
                await d.asend("Say hello in five words.", "openai:gpt-4o-mini", max_tokens=64)
    try:
        for stream in (False, True):
            for _ in range(10):
                await call(stream)
            lat = []
            cpu0 = time.process_time()
            for _ in range(n):
                t = time.perf_counter()
                await call(stream)
                lat.append(time.perf_counter() - t)
            name = "stream" if stream else "plain"
            out[f"cpu_{name}"] = time.process_time() - cpu0
            out[f"p50_{name}"] = pct(lat, 50)
    finally:
        if kind in RAW:
            await client.aclose()
        else:
            d.close()
            tmp.cleanup()
    return out


def worker_main(argv: list[str]) -> None:
    kind, phase, urls_json, n, max_tokens = argv
    if kind.endswith("httpx2"):
        import httpx2

        sys.modules["httpx"] = httpx2  # before anything of ours imports httpx
    sys.path.insert(0, str(ROOT))
    os.environ["LLMDISPATCH_HOME"] = tempfile.mkdtemp(prefix="llmd-transports-")
    print(json.dumps(worker(kind, phase, json.loads(urls_json), int(n), int(max_tokens))))


# -- the coordinator ---------------------------------------------------------------------------


def run_worker(kind: str, phase: str, urls: dict[str, str], n: int, max_tokens: int
               ) -> dict[str, Any]:
    load0 = os.getloadavg()[0]
    proc = subprocess.run([sys.executable, __file__, "--worker", kind, phase, json.dumps(urls),
                           str(n), str(max_tokens)], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        raise RuntimeError(f"{kind} {phase} failed:\n{proc.stderr[-3000:]}")
    res: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    res["load"] = round((load0 + os.getloadavg()[0]) / 2, 2)
    return res


def summarize(runs: list[dict[str, Any]], n: int, n_seq: int) -> dict[str, Any]:
    """Median, min and max per stack and figure; in-path ratios against `ours` (else the
    Dispatcher's own stack, `thin`), raw ones against the best raw client."""
    import statistics

    out: dict[str, Any] = {}
    for metric, denom in (("cpu", n), ("cpu_plain", n_seq), ("cpu_stream", n_seq),
                          ("p50_plain", 1 / 1e3), ("p50_stream", 1 / 1e3)):
        rows: dict[str, Any] = {}
        for kind in (*IN_PATH, *RAW):
            vals = [1e3 * r[metric] / denom if metric.startswith("cpu") else r[metric] / denom
                    for r in runs if r["kind"] == kind and metric in r]
            if vals:
                rows[kind] = {"median_ms": round(statistics.median(vals), 3),
                              "min_ms": round(min(vals), 3), "max_ms": round(max(vals), 3),
                              "n_rounds": len(vals)}
        if rows:
            ours = (rows.get("ours") or rows.get("thin") or {}).get("median_ms")
            raw = [rows[k]["median_ms"] for k in RAW if k in rows]
            best = min(raw) if raw else None
            for kind, row in rows.items():
                base = best if kind in RAW else ours
                if base:
                    row["ratio"] = round(row["median_ms"] / base, 3)
            out[("fanout_" if metric == "cpu" else "seq_") + metric + "_per_call"] = rows
    return out


IMPORTS = ("import httpx", "import httpx2", "import aiohttp", "import llmdispatch_nb",
           "from llmdispatch_nb import Dispatcher")


def import_cpu(runs: int = 9) -> dict[str, Any]:
    """CPU time (user + sys) of fresh interpreters running each statement, the bare
    interpreter's subtracted, interleaved, median of `runs`: on a shared machine CPU time
    moves far less with other users' load than wall time does."""
    import resource
    import statistics

    def cpu(stmt: str, env: dict[str, str]) -> float:
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([sys.executable, "-c", stmt], check=True, env=env, cwd=ROOT)
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        return (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)

    with tempfile.TemporaryDirectory() as pyc:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = pyc  # bytecode for everyone, written by a first run
        stmts = ("pass", *IMPORTS)
        for stmt in stmts:
            cpu(stmt, env)
        samples: dict[str, list[float]] = {stmt: [] for stmt in stmts}
        for _ in range(runs):
            for stmt in stmts:
                samples[stmt].append(cpu(stmt, env))
    base = statistics.median(samples["pass"])
    ms = {s: max(0.0, round(1e3 * (statistics.median(v) - base), 1))
          for s, v in samples.items() if s != "pass"}
    httpx_ms = ms["import httpx"]
    return {"runs": runs, "cpu_ms": ms,
            "min_max_ms": {s: [round(1e3 * (min(v) - base), 1), round(1e3 * (max(v) - base), 1)]
                           for s, v in samples.items() if s != "pass"},
            "ratio_vs_import_httpx": {s: round(v / httpx_ms, 2) for s, v in ms.items()},
            "loadavg_end": os.getloadavg()}


def measure(rounds: int = 5, calls: int = 1000, seq: int = 300, max_tokens: int = 48,
            stacks: str = "", import_runs: int = 9, log: Any = None) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from importlib import metadata

    from bench._common import emulators
    from bench.fanout import Emulators

    kinds = (stacks or default_stacks()).split(",")
    runs: list[dict[str, Any]] = []
    t_start = time.time()
    paced = Emulators(1.0, in_process=False)  # real pace, for the fan-out
    try:
        paced.set_fault_rate(0.0)
        with emulators(0.0) as instant:  # answers at once, for one at a time
            for r in range(rounds):
                order = kinds[r % len(kinds):] + kinds[:r % len(kinds)]
                for kind in order:
                    if calls:
                        runs.append(run_worker(kind, "fanout", paced.urls, calls, max_tokens))
                    if seq:
                        runs.append(run_worker(kind, "seq", instant, seq, max_tokens))
                    if log is not None:
                        log(f"  transports round {r + 1}/{rounds}: {kind}")
    finally:
        paced.close()
    return {"setup": {"rounds": rounds, "fanout_calls": calls, "seq_calls": seq,
                      "max_tokens": max_tokens, "cpus": os.cpu_count(),
                      "minutes": round((time.time() - t_start) / 60, 1),
                      "loadavg_per_run": [r["load"] for r in runs],
                      "versions": {p: metadata.version(p) for p in
                                   ("httpx", "httpcore", "httpx2", "httpcore2", "aiohttp",
                                    "httpx-aiohttp")}},
            "stacks": {k: STACKS[k] for k in kinds}, **summarize(runs, calls, seq),
            "imports": import_cpu(import_runs) if import_runs else None, "runs": runs}


def default_stacks() -> str:
    return ",".join(k for k in (*IN_PATH, *RAW) if k not in ("ours", "raw_ours") or OLD.exists())


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker_main(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=1000, help="fan-out size")
    ap.add_argument("--seq", type=int, default=300, help="calls one at a time, each kind")
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--stacks", default=default_stacks())
    ap.add_argument("--import-runs", type=int, default=9, help="0 skips the import figures")
    ap.add_argument("--out", default="", help="also write the JSON here")
    args = ap.parse_args()
    result = measure(args.rounds, args.calls, args.seq, args.max_tokens, args.stacks,
                     args.import_runs, log=lambda msg: print(msg, file=sys.stderr, flush=True))
    text = json.dumps(result, indent=1)
    if args.out:
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
