"""Per-call overhead of the Dispatcher against raw httpx, on the OpenAI emulator (loopback).

    .venv/bin/python bench/overhead.py [--n 400] [--concurrency 64]

Runs N sequential and N concurrent (64 at a time) calls through (a) raw httpx with a
hand-built request and (b) our Dispatcher, prints p50/p95 per call for each, the import
times, and last a line `ratio_p50 <ours/raw>` (sequential). The emulator answers with no
emulated delay (time_scale 0) in its own process, so what differs is client-side work.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from bench._common import emulators, import_time, pct  # noqa: E402

PROMPT = "Say hello in five words."
MODEL = "gpt-4o-mini"


async def raw_call(client: httpx.AsyncClient, base: str) -> float:
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": PROMPT}],
                       "max_completion_tokens": 64}).encode()
    t = time.perf_counter()
    r = await client.post(f"{base}/chat/completions", content=body,
                          headers={"Authorization": "Bearer bench-key",
                                   "Content-Type": "application/json"})
    data = r.json()
    assert data["choices"][0]["message"]["content"]
    return time.perf_counter() - t


async def run(mode: str, n: int, concurrency: int, base: str) -> tuple[list[float], list[float]]:
    import llmdispatch_nb as ld
    from llmdispatch_nb.ledger import default_ledger

    seq: list[float] = []
    conc: list[float] = []
    if mode == "raw":
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=256)) as client:
            for _ in range(20):
                await raw_call(client, base)
            for _ in range(n):
                seq.append(await raw_call(client, base))
            sem = asyncio.Semaphore(concurrency)

            async def one() -> None:
                async with sem:
                    conc.append(await raw_call(client, base))

            await asyncio.gather(*(one() for _ in range(n)))
        return seq, conc

    d = ld.Dispatcher([ld.Endpoint("openai", "openai", base, key=ld.Secret("bench-key"))],
                      dotenv=False, ledger=default_ledger())

    async def ours() -> float:
        t = time.perf_counter()
        r = await d.asend(PROMPT, f"openai:{MODEL}", max_tokens=64)
        assert r.text
        return time.perf_counter() - t

    try:
        for _ in range(20):
            await ours()
        for _ in range(n):
            seq.append(await ours())
        sem = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with sem:
                conc.append(await ours())

        await asyncio.gather(*(one() for _ in range(n)))
    finally:
        d.close()
    return seq, conc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--concurrency", type=int, default=64)
    args = ap.parse_args()
    results = {}
    with emulators(0.0) as urls:
        base = urls["openai"]
        # Alternate the two so drift on a shared machine hits both alike.
        for mode in ("raw", "ours", "raw", "ours"):
            seq, conc = asyncio.run(run(mode, args.n, args.concurrency, base))
            prev = results.get(mode, ([], []))
            results[mode] = (prev[0] + seq, prev[1] + conc)
    for mode, (seq, conc) in results.items():
        print(f"{mode:5s} sequential p50 {pct(seq, 50) * 1e3:7.3f} ms  p95 {pct(seq, 95) * 1e3:7.3f} ms   "
              f"concurrent({args.concurrency}) p50 {pct(conc, 50) * 1e3:7.3f} ms  "
              f"p95 {pct(conc, 95) * 1e3:7.3f} ms")
    t_httpx = import_time("import httpx")
    t_ours = import_time("import llmdispatch_nb")
    print(f"import httpx {t_httpx * 1e3:.0f} ms, import llmdispatch_nb {t_ours * 1e3:.0f} ms, "
          f"ratio {t_ours / t_httpx:.2f}")
    heavy = "import sys, llmdispatch_nb; print(sorted(m for m in ('pandas','plotly','IPython','ipywidgets') if m in sys.modules))"
    import subprocess

    print("heavy modules imported:", subprocess.run([sys.executable, "-c", heavy], capture_output=True,
                                                    text=True).stdout.strip())
    raw_seq = results["raw"][0]
    our_seq = results["ours"][0]
    print(f"ratio_p50_concurrent {pct(results['ours'][1], 50) / pct(results['raw'][1], 50):.3f}")
    print(f"ratio_p50 {pct(our_seq, 50) / pct(raw_seq, 50):.3f}")


if __name__ == "__main__":
    main()
