"""Per-call overhead against the OpenAI emulator on loopback: raw httpx, our Dispatcher, the
official `openai` SDK, LiteLLM's `acompletion` and LiteLLM's `Router`, in one run.

    .venv/bin/python bench/overhead.py [--n 300] [--n-conc 640] [--rounds 3] [--concurrency 64]

Each client lives in its own worker process (so one client's imports, threads and garbage
do not tax another), talking to the same emulator process (time_scale 0: it answers at
once, so what differs is client-side work). A coordinator interleaves the workers phase by
phase and round by round, rotating the order (A B C, B C A, ...), so drift on a shared
machine hits every client alike. Phases: plain and streamed, sequential and at
`--concurrency` calls at once. Streamed calls also report time to the first text token.

Prints p50/p95 per client and phase, then, last, `ratio_p50 <ours/raw>` (plain,
sequential), the figure issue 2 asks for. `bench/__main__.py` calls `measure()`.
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
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import QUIET_PEERS, ROOT, emulators, loadavg, median, ms, pct

PROMPT = "Say hello in five words."
MODEL = "gpt-4o-mini"
MAX_TOKENS = 64
KEY = "bench-key"

# Peers first, then ours. "httpx_http11" is raw httpx on the transport the Dispatcher uses
# (aiohttp under httpx, `_aiohttp.py`), so ours against it is the cost of our layers alone,
# and raw httpx against it what the transport saves. Each peer's own HTTP stack is in its
# label; bench/transports.py has raw httpx2 and raw httpx on aiohttp beside raw httpx.
CLIENTS = ("httpx", "httpx_http11", "ours", "openai", "litellm", "litellm_router")
LABELS = {
    "httpx": "raw httpx (hand-built request, hand-parsed SSE; httpcore 1's pool, h11)",
    "ours": "llmdispatch_nb Dispatcher (asend/astream, full path; httpx on aiohttp)",
    "openai": "openai SDK (AsyncOpenAI; its stack is httpx2, httpcore2's pool, h11)",
    "litellm": "LiteLLM acompletion (its stack is aiohttp)",
    "litellm_router": "LiteLLM Router.acompletion (its stack is aiohttp)",
    "httpx_http11": "raw httpx on llmdispatch_nb's transport (aiohttp, the one it uses)",
}
PHASES = (("plain", "seq"), ("plain", "conc"), ("stream", "seq"), ("stream", "conc"))

# One call: returns (total seconds, seconds to first text token or None).
Call = Callable[[], Awaitable[tuple[float, float | None]]]


# -- the clients (run inside a worker process) ----------------------------------------------


def _raw_body(stream: bool) -> bytes:
    body: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": PROMPT}],
                            "max_completion_tokens": MAX_TOKENS}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return json.dumps(body).encode()


async def make_httpx(base: str, our_transport: bool = False
                     ) -> tuple[Call, Call, Callable[[], Awaitable[None]]]:
    import httpx

    transport = None
    if our_transport:
        from llmdispatch_nb._aiohttp import Http11Transport

        transport = Http11Transport()
    client = httpx.AsyncClient(limits=httpx.Limits(max_connections=256,
                                                   max_keepalive_connections=64),
                               timeout=httpx.Timeout(60.0, connect=10.0), transport=transport)
    url = f"{base}/chat/completions"
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    plain_body, stream_body = _raw_body(False), _raw_body(True)

    async def plain() -> tuple[float, float | None]:
        t = time.perf_counter()
        r = await client.post(url, content=plain_body, headers=headers)
        data = r.json()
        assert data["choices"][0]["message"]["content"]
        return time.perf_counter() - t, None

    async def stream() -> tuple[float, float | None]:
        t = time.perf_counter()
        ttft = None
        parts: list[str] = []
        async with client.stream("POST", url, content=stream_body, headers=headers) as r:
            assert r.status_code == 200
            # Read to the end of the body, past [DONE], as the SDKs and our dispatcher do:
            # leaving early closes the connection instead of returning it to the pool.
            async for line in r.aiter_lines():
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    continue
                choices = json.loads(payload).get("choices")
                if choices:
                    piece = choices[0]["delta"].get("content")
                    if piece:
                        if ttft is None:
                            ttft = time.perf_counter() - t
                        parts.append(piece)
        assert parts
        return time.perf_counter() - t, ttft

    return plain, stream, client.aclose


async def make_ours(base: str) -> tuple[Call, Call, Callable[[], Awaitable[None]]]:
    d = _dispatcher(base)
    target = f"openai:{MODEL}"

    async def plain() -> tuple[float, float | None]:
        t = time.perf_counter()
        r = await d.asend(PROMPT, target, max_tokens=MAX_TOKENS)
        assert r.text
        return time.perf_counter() - t, None

    async def stream() -> tuple[float, float | None]:
        from llmdispatch_nb import TextDelta

        t = time.perf_counter()
        ttft = None
        s = d.astream(PROMPT, target, max_tokens=MAX_TOKENS)
        async for ev in s:
            if ttft is None and type(ev) is TextDelta:
                ttft = time.perf_counter() - t
        assert s.response is not None and s.response.text
        return time.perf_counter() - t, ttft

    async def close() -> None:
        await asyncio.to_thread(d.close)

    _OURS.append(d)
    return plain, stream, close


_OURS: list[Any] = []


def _dispatcher(base: str) -> Any:
    """The full path: routing, breaker, a limiter with generous limits, a large budget and
    the SQLite ledger (in the temp LLMDISPATCH_HOME the coordinator set). The response cache
    is on as by default; its default policy only consults it for temperature 0 or a seed,
    which these calls do not set, so no call is served from it."""
    import llmdispatch_nb as ld
    from llmdispatch_nb.ledger import Ledger
    from llmdispatch_nb.resilience import Limit

    limits = {"openai": Limit(rpm=1e9, tpm=1e12, concurrent=100_000),
              f"openai:{MODEL}": Limit(rpm=1e9, tpm=1e12)}
    return ld.Dispatcher([ld.Endpoint("openai", "openai", base, key=ld.Secret(KEY))],
                         dotenv=False, ledger=Ledger(), limits=limits, budget=1e9)


async def make_openai(base: str) -> tuple[Call, Call, Callable[[], Awaitable[None]]]:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base, api_key=KEY)
    messages: Any = [{"role": "user", "content": PROMPT}]

    async def plain() -> tuple[float, float | None]:
        t = time.perf_counter()
        r = await client.chat.completions.create(model=MODEL, messages=messages,
                                                 max_completion_tokens=MAX_TOKENS)
        assert r.choices[0].message.content
        return time.perf_counter() - t, None

    async def stream() -> tuple[float, float | None]:
        t = time.perf_counter()
        ttft = None
        parts: list[str] = []
        s = await client.chat.completions.create(
            model=MODEL, messages=messages, max_completion_tokens=MAX_TOKENS, stream=True,
            stream_options={"include_usage": True})
        async for chunk in s:
            if chunk.choices and chunk.choices[0].delta.content:
                if ttft is None:
                    ttft = time.perf_counter() - t
                parts.append(chunk.choices[0].delta.content)
        assert parts
        return time.perf_counter() - t, ttft

    return plain, stream, client.close


async def make_litellm(base: str, router: bool) -> tuple[Call, Call, Callable[[], Awaitable[None]]]:
    import litellm

    litellm.suppress_debug_info = True
    messages = [{"role": "user", "content": PROMPT}]
    if router:
        r = litellm.Router(model_list=[{"model_name": MODEL, "litellm_params": {
            "model": f"openai/{MODEL}", "api_base": base, "api_key": KEY}}])

        def complete(**kw: Any) -> Any:
            return r.acompletion(model=MODEL, messages=messages, max_tokens=MAX_TOKENS, **kw)
    else:
        def complete(**kw: Any) -> Any:
            return litellm.acompletion(model=f"openai/{MODEL}", messages=messages,
                                       api_base=base, api_key=KEY, max_tokens=MAX_TOKENS, **kw)

    async def plain() -> tuple[float, float | None]:
        t = time.perf_counter()
        resp = await complete()
        assert resp.choices[0].message.content
        return time.perf_counter() - t, None

    async def stream() -> tuple[float, float | None]:
        t = time.perf_counter()
        ttft = None
        parts: list[str] = []
        s = await complete(stream=True, stream_options={"include_usage": True})
        async for chunk in s:
            if chunk.choices and chunk.choices[0].delta.content:
                if ttft is None:
                    ttft = time.perf_counter() - t
                parts.append(chunk.choices[0].delta.content)
        assert parts
        return time.perf_counter() - t, ttft

    async def close() -> None:
        pass

    return plain, stream, close


async def _phase(call: Call, mode: str, n: int, concurrency: int, warmup: int,
                 settle: Callable[[], Awaitable[None]] | None = None) -> dict[str, Any]:
    sem = asyncio.Semaphore(concurrency)
    lat: list[float] = []
    ttft: list[float] = []

    async def one(keep: bool) -> None:
        async with sem:
            total, first = await call()
        if keep:
            lat.append(total)
            if first is not None:
                ttft.append(first)

    if mode == "seq":
        for _ in range(warmup):
            await one(False)
    else:
        # A burst first, so the pool has its connections before anything is timed.
        await asyncio.gather(*(one(False) for _ in range(concurrency)))
    if settle is not None:
        await settle()
    t, cpu = time.perf_counter(), time.process_time()
    if mode == "seq":
        for _ in range(n):
            await one(True)
    else:
        await asyncio.gather(*(one(True) for _ in range(n)))
    wall = time.perf_counter() - t
    if settle is not None:  # the ledger's writes are part of what a call costs
        await settle()
    # CPU time of the whole worker process (every thread: our loop, the ledger's writer)
    # per call: what a client costs, less sensitive than latency to a busy machine.
    return {"lat": lat, "ttft": ttft, "wall": wall, "cpu": (time.process_time() - cpu) / max(1, n)}


async def worker(name: str, base: str) -> None:
    """Answer commands from stdin, one JSON line each, with result lines marked '@@'."""
    if name in ("httpx", "httpx_http11"):
        plain, stream, close = await make_httpx(base, our_transport=name == "httpx_http11")
    elif name == "ours":
        plain, stream, close = await make_ours(base)
    elif name == "openai":
        plain, stream, close = await make_openai(base)
    else:
        plain, stream, close = await make_litellm(base, router=name == "litellm_router")
    settle: Callable[[], Awaitable[None]] | None = None
    if _OURS:
        ledger = _OURS[0].ledger

        async def flush_ledger() -> None:
            await asyncio.to_thread(ledger.flush)

        settle = flush_ledger
    loop = asyncio.get_running_loop()
    print("@@ready", flush=True)
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line.strip():
            break
        cmd = json.loads(line)
        call = stream if cmd["kind"] == "stream" else plain
        run = _phase(call, cmd["mode"], cmd["n"], cmd["concurrency"], cmd["warmup"], settle)
        out = await run
        print("@@" + json.dumps(out), flush=True)
    await close()


# -- the coordinator ------------------------------------------------------------------------


class Worker:
    def __init__(self, name: str, base: str, home: str) -> None:
        self.name = name
        env = {**os.environ, **QUIET_PEERS, "LLMDISPATCH_HOME": home, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--base", base],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env)
        self._read()

    def _read(self) -> str:
        assert self.proc.stdout is not None
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"worker {self.name} died (exit {self.proc.wait()})")
            if line.startswith("@@"):
                return line[2:]

    def run(self, **cmd: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return dict(json.loads(self._read()))

    def close(self) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write("\n")
            self.proc.stdin.close()
            self.proc.wait(30)
        except Exception:
            self.proc.kill()


def measure(n: int = 300, n_conc: int = 640, rounds: int = 3, concurrency: int = 64,
            clients: tuple[str, ...] = CLIENTS, log: Callable[[str], None] = print
            ) -> dict[str, Any]:
    """Run every client through every phase, interleaved; return the figures by name."""
    samples: dict[str, dict[str, dict[str, list[float]]]] = {
        c: {f"{k}_{m}": {"lat": [], "ttft": [], "wall": [], "cpu": []} for k, m in PHASES}
        for c in clients}
    load: list[float] = []
    with emulators(0.0) as urls, tempfile.TemporaryDirectory(prefix="llmd-bench-") as home:
        base = urls["openai"]
        workers = [Worker(c, base, home) for c in clients]
        try:
            for r in range(rounds):
                for kind, mode in PHASES:
                    order = workers[r % len(workers):] + workers[:r % len(workers)]
                    for w in order:
                        out = w.run(kind=kind, mode=mode, n=n if mode == "seq" else n_conc,
                                    concurrency=concurrency if mode == "conc" else 1,
                                    warmup=10)
                        s = samples[w.name][f"{kind}_{mode}"]
                        s["lat"].extend(out["lat"])
                        s["ttft"].extend(out["ttft"])
                        s["wall"].append(out["wall"] / max(1, len(out["lat"])))
                        s["cpu"].append(out["cpu"])
                load.append(loadavg()[0])
                log(f"  overhead round {r + 1}/{rounds} done (load {load[-1]:.2f})")
        finally:
            for w in workers:
                w.close()
    figures: dict[str, Any] = {
        "n_seq": n * rounds, "n_conc": n_conc * rounds, "rounds": rounds,
        "concurrency": concurrency, "loadavg_during": load, "labels": LABELS, "clients": {}}
    for c in clients:
        figures["clients"][c] = {}
        for phase, s in samples[c].items():
            entry = {"p50_ms": ms(pct(s["lat"], 50)), "p95_ms": ms(pct(s["lat"], 95)),
                     "n": len(s["lat"]), "cpu_ms_per_call": ms(median(s["cpu"]))}
            if s["ttft"]:
                entry["ttft_p50_ms"] = ms(pct(s["ttft"], 50))
                entry["ttft_p95_ms"] = ms(pct(s["ttft"], 95))
            if phase.endswith("conc"):
                entry["calls_per_s"] = round(1 / median(s["wall"]), 1)
            figures["clients"][c][phase] = entry
    ratios: dict[str, dict[str, float]] = {}
    raw = figures["clients"].get("httpx")
    for c in clients:
        if raw is None:
            break
        ratios[c] = {}
        for phase, entry in figures["clients"][c].items():
            ratios[c][f"{phase}_p50"] = round(entry["p50_ms"] / raw[phase]["p50_ms"], 3)
            ratios[c][f"{phase}_p95"] = round(entry["p95_ms"] / raw[phase]["p95_ms"], 3)
            ratios[c][f"{phase}_cpu"] = round(
                entry["cpu_ms_per_call"] / raw[phase]["cpu_ms_per_call"], 3)
            if "ttft_p50_ms" in entry:
                ratios[c][f"{phase}_ttft_p50"] = round(
                    entry["ttft_p50_ms"] / raw[phase]["ttft_p50_ms"], 3)
    figures["ratio_vs_httpx"] = ratios
    return figures


def print_table(fig: dict[str, Any]) -> None:
    for phase in (f"{k}_{m}" for k, m in PHASES):
        print(f"\n{phase} (n={fig['clients']['httpx'][phase]['n'] if 'httpx' in fig['clients'] else '?'})")
        for c, per in fig["clients"].items():
            e = per[phase]
            line = (f"  {c:15s} p50 {e['p50_ms']:8.3f} ms  p95 {e['p95_ms']:8.3f} ms  "
                    f"cpu {e['cpu_ms_per_call']:6.3f} ms/call")
            if "ttft_p50_ms" in e:
                line += f"  ttft p50 {e['ttft_p50_ms']:8.3f} ms"
            if "calls_per_s" in e:
                line += f"  {e['calls_per_s']:8.1f} calls/s"
            if c in fig["ratio_vs_httpx"]:
                line += f"  x{fig['ratio_vs_httpx'][c][f'{phase}_p50']:.2f}"
            print(line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=300, help="sequential calls per client per round")
    ap.add_argument("--n-conc", type=int, default=640, help="concurrent calls per client per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--clients", default=",".join(CLIENTS))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--base", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        asyncio.run(worker(args.worker, args.base))
        return
    fig = measure(args.n, args.n_conc, args.rounds, args.concurrency,
                  tuple(args.clients.split(",")))
    print_table(fig)
    r = fig["ratio_vs_httpx"].get("ours", {})
    if r:
        print(f"ratio_p50_concurrent {r['plain_conc_p50']:.3f}")
        print(f"ratio_p50 {r['plain_seq_p50']:.3f}")


if __name__ == "__main__":
    main()
