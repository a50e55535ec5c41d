"""Where a Dispatcher call spends its time: CPU per thread, and a cProfile of the threads
that do the work, grouped by our file:function and by package.

    .venv/bin/python bench/profile_ours.py [--calls 2000] [--stream]

Same setup as `overhead.py`'s "ours" (full path, SQLite ledger, emulator in its own
process), sequential `asend` calls from the caller's own loop. Per-thread CPU comes from
/proc (the caller's loop, the dispatcher's loop thread, the ledger's writer); cProfile runs
in the caller's and the dispatcher's loop threads (it sees one thread each); its shares
are of the wall time those two spend busy (waiting in the selector or on a lock left
out), and cProfile's own cost per function call inflates Python-heavy code somewhat.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import emulators, loadavg, temp_home
from bench.overhead import MAX_TOKENS, MODEL, PROMPT, _dispatcher

PKG = "llmdispatch_nb"


def _thread_cpu() -> dict[str, float]:
    """CPU seconds per live Python thread of this process, by thread name."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for t in threading.enumerate():
        try:
            with open(f"/proc/self/task/{t.native_id}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[t.name] = (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, TypeError):
            continue
    return out


def _group(path: str) -> str:
    if f"{os.sep}{PKG}{os.sep}" in path:
        return PKG
    for name in ("httpx", "httpcore", "anyio", "h11", "sqlite3", "json", "asyncio",
                 "concurrent", "threading", "ssl", "uuid", "hashlib", "dataclasses"):
        if f"{os.sep}{name}{os.sep}" in path or path.endswith(f"{os.sep}{name}.py"):
            return name
    if path.startswith("~") or path == "":
        return "builtins (C)"
    return "other Python"


def _is_wait(fn: str) -> bool:
    """Idle time, not work: the selector waiting for the socket, a thread waiting on a lock."""
    return ("select.epoll" in fn or "'poll'" in fn or "'select'" in fn
            or "'acquire' of '_thread" in fn)


def _short(path: str) -> str:
    i = path.find(f"{os.sep}{PKG}{os.sep}")
    return path[i + 1:] if i >= 0 else Path(path).name


def profile(calls: int = 2000, stream: bool = False, top: int = 15,
            concurrency: int = 1) -> dict[str, Any]:
    with emulators(0.0) as urls, temp_home("llmd-prof-"):
        d = _dispatcher(urls["openai"])
        target = f"openai:{MODEL}"

        async def one() -> None:
            if stream:
                s = d.astream(PROMPT, target, max_tokens=MAX_TOKENS)
                async for _ in s:
                    pass
            else:
                await d.asend(PROMPT, target, max_tokens=MAX_TOKENS)

        async def run() -> dict[str, Any]:
            for _ in range(50):
                await one()
            await asyncio.to_thread(d.ledger.flush)
            # The default (wall) timer: a per-thread CPU timer costs a system call per event
            # and distorts more than it shows. Waiting in the selector or on a lock is
            # left out of the total below.
            loop_prof, main_prof = cProfile.Profile(), cProfile.Profile()
            # cProfile follows the thread that enables it: start one in each loop thread.
            d._loop.loop.call_soon_threadsafe(loop_prof.enable)
            before = _thread_cpu()
            t = time.perf_counter()
            main_prof.enable()
            if concurrency == 1:
                for _ in range(calls):
                    await one()
            else:
                sem = asyncio.Semaphore(concurrency)

                async def limited() -> None:
                    async with sem:
                        await one()

                await asyncio.gather(*(limited() for _ in range(calls)))
            main_prof.disable()
            wall = time.perf_counter() - t
            done = threading.Event()

            def stop_loop_profiler() -> None:
                loop_prof.disable()
                done.set()

            d._loop.loop.call_soon_threadsafe(stop_loop_profiler)
            await asyncio.to_thread(done.wait)
            await asyncio.to_thread(d.ledger.flush)
            after = _thread_cpu()
            cpu = {name: round((after[name] - before.get(name, 0.0)) / calls * 1e3, 4)
                   for name in after if after[name] - before.get(name, 0.0) > 0}
            return {"wall_ms_per_call": round(wall / calls * 1e3, 4),
                    "cpu_ms_per_call_by_thread": cpu,
                    "stats": pstats.Stats(main_prof).add(loop_prof)}

        try:
            out = asyncio.run(run())
        finally:
            d.close()
    st = out.pop("stats")
    stats: dict[Any, Any] = st.stats
    waiting = sum(v[2] for k, v in stats.items() if _is_wait(k[2]))
    total = sum(v[2] for v in stats.values()) - waiting
    by_group: dict[str, float] = {}
    ours: list[tuple[str, float, float]] = []
    others: list[tuple[str, float]] = []
    for (path, _line, fn), (_cc, _nc, tt, ct, _callers) in stats.items():
        if _is_wait(fn):
            continue
        g = _group(path)
        if g != PKG:
            others.append((f"{_short(path)}:{fn}" if path != "~" else fn, tt))
        by_group[g] = by_group.get(g, 0.0) + tt
        if g == PKG:
            ours.append((f"{_short(path)}:{fn}", tt, ct))
    ours.sort(key=lambda r: -r[1])
    by_cum = sorted(ours, key=lambda r: -r[2])
    return {
        "calls": calls, "streamed": stream, "concurrency": concurrency, "loadavg": loadavg(),
        **out,
        "profiled_busy_s": round(total, 3), "profiled_waiting_s": round(waiting, 3),
        "share_by_package": {k: round(v / total, 3) for k, v in
                             sorted(by_group.items(), key=lambda kv: -kv[1])},
        "ours_self_share": round(sum(r[1] for r in ours) / total, 3),
        "top_ours_self": [{"where": w, "self_share": round(tt / total, 4),
                           "self_us_per_call": round(tt / calls * 1e6, 1)} for w, tt, _ in ours[:top]],
        "top_others_self": [{"where": w, "self_share": round(tt / total, 4)}
                            for w, tt in sorted(others, key=lambda r: -r[1])[:12]],
        "top_ours_cumulative": [{"where": w, "cum_share": round(ct / total, 4),
                                 "cum_us_per_call": round(ct / calls * 1e6, 1)}
                                for w, _, ct in by_cum[:top]],
    }


def print_profile(p: dict[str, Any]) -> None:
    kind = "streamed" if p["streamed"] else "plain"
    print(f"{p['calls']} {kind} calls ({p['concurrency']} at once), {p['wall_ms_per_call']} ms "
          f"each (profiled); CPU ms/call by "
          f"thread: {p['cpu_ms_per_call_by_thread']}")
    print("share of profiled time by package:", p["share_by_package"])
    print(f"our own code (self time): {p['ours_self_share']:.1%}")
    for r in p["top_ours_self"]:
        print(f"  self {r['self_share']:6.1%} {r['self_us_per_call']:7.1f} us/call  {r['where']}")
    print("outside our code (self time):")
    for r in p["top_others_self"]:
        print(f"  self {r['self_share']:6.1%}  {r['where']}")
    print("cumulative:")
    for r in p["top_ours_cumulative"]:
        print(f"  cum  {r['cum_share']:6.1%} {r['cum_us_per_call']:7.1f} us/call  {r['where']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--stream", action="store_true")
    ap.add_argument("--concurrency", type=int, default=1)
    args = ap.parse_args()
    print_profile(profile(args.calls, args.stream, concurrency=args.concurrency))


if __name__ == "__main__":
    main()
