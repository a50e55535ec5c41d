"""A team's setup against the local defaults: `python bench/team_bench.py [--n 400] [--rows 1000000]`.

Starts a PostgreSQL and a Redis server on loopback (as the tests do: `tests/_team_servers.py`)
and the emulators (time_scale 0: they answer at once, so what differs is our own work), then:

    overhead   per-call p50/p95 of `Dispatcher.asend`, sequential, with a budget and a limit
               in force: local defaults (SQLite ledger, in-process state) against the team's
               (PostgreSQL ledger, Redis state), interleaved round by round; the p50 ratio
               and difference (target: within +1 ms on loopback), and the process's CPU per
               call (every thread, the ledgers' writers included: less swayed by the load of
               a shared machine than wall time)
    writer     the PostgreSQL ledger's sustained records/s: `--writer-rows` records written
               from one thread, until flushed
    read       `analysis.calls()` over a `--rows`-row team ledger with a filter (one session
               of a thousand rows; one tag of a tenth), the filter run by the server

Prints each figure, then one JSON line of them all.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("LLMDISPATCH_HOME", tempfile.mkdtemp(prefix="llmd-team-bench-"))

from bench._common import emulators, ms, pct  # noqa: E402
from llmdispatch_nb import Dispatcher, Endpoint, Secret  # noqa: E402
from llmdispatch_nb._types import CallRecord  # noqa: E402
from llmdispatch_nb.ledger import Ledger, PostgresLedger  # noqa: E402
from llmdispatch_nb.resilience import Budget, Limit, RateLimiter  # noqa: E402
from llmdispatch_nb.state import RedisState  # noqa: E402
from tests._team_servers import start_postgres, start_redis  # noqa: E402


def dispatcher(base: str, ledger: Any, state: Any) -> Dispatcher:
    ep = Endpoint("openai", "openai", base, key=Secret("bench-key"), simulated=True)
    return Dispatcher([ep], dotenv=False, ledger=ledger, cache=False,
                      budget=Budget(1e6, state=state),
                      limits=RateLimiter({"openai": Limit(rpm=1e9, concurrent=1000)},
                                         state=state))


async def timed_calls(d: Dispatcher, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await d.asend("Say hello in five words.", "openai:gpt-4o-mini", max_tokens=16)
        out.append(time.perf_counter() - t)
    return out


def overhead(base: str, pg_url: str, redis_url: str, n: int, rounds: int) -> dict[str, Any]:
    local = dispatcher(base, Ledger(Path(os.environ["LLMDISPATCH_HOME"]) / "bench.db"), False)
    team = dispatcher(base, PostgresLedger(pg_url, user="bench"),
                      RedisState(redis_url, team="bench" + uuid.uuid4().hex[:6]))
    times: dict[str, list[float]] = {"local": [], "team": []}
    cpu: dict[str, list[float]] = {"local": [], "team": []}
    for d in (local, team):  # warm: connections, price table, scripts loaded
        asyncio.run(timed_calls(d, 20))
    for r in range(rounds):
        order = [("local", local), ("team", team)] if r % 2 == 0 else [("team", team),
                                                                      ("local", local)]
        for name, d in order:
            d.ledger.flush()  # the other setup's writing does not fall in this one's time
            start = time.process_time()
            times[name] += asyncio.run(timed_calls(d, n))
            d.ledger.flush()  # its own writing does (the process's CPU, every thread)
            cpu[name].append((time.process_time() - start) / n)
    out: dict[str, Any] = {"os_load_1min": os.getloadavg()[0]}
    for name, values in times.items():
        out[f"{name}_p50_ms"] = ms(statistics.median(values))
        out[f"{name}_p95_ms"] = ms(pct(values, 95))
        out[f"{name}_cpu_ms_per_call"] = ms(statistics.median(cpu[name]))
    out["ratio_p50"] = round(out["team_p50_ms"] / out["local_p50_ms"], 3)
    out["extra_p50_ms"] = round(out["team_p50_ms"] - out["local_p50_ms"], 3)
    out["extra_cpu_ms_per_call"] = round(out["team_cpu_ms_per_call"]
                                         - out["local_cpu_ms_per_call"], 3)
    local.ledger.flush()
    team.ledger.flush()
    local.close()
    team.close()
    return out


def record(i: int, session: str, tags: tuple[str, ...]) -> CallRecord:
    return CallRecord(call_id=uuid.uuid4().hex, attempt=1, timestamp=1.7e9 + i * 0.01,
                      vendor="openai", model_requested="gpt-4o-mini",
                      model_served="gpt-4o-mini", status="ok", session=session, tags=tags,
                      latency_s=0.42, ttft_s=0.1, input_tokens=20, output_tokens=40,
                      cost_usd=2.7e-5, usage_source="reported", price_source="genai-prices",
                      prompt="Say hello in five words.", response="Hello there, how are you?")


def writer(pg_url: str, rows: int) -> dict[str, Any]:
    ledger = PostgresLedger(pg_url, user="bench")
    recs = [record(i, f"s{i // 1000}", ("eval",) if i % 10 else ("eval", "nightly"))
            for i in range(rows)]
    t = time.perf_counter()
    for r in recs:
        ledger.write(r)
    ledger.flush(600)
    took = time.perf_counter() - t
    ledger.close()
    return {"writer_rows": rows, "writer_s": round(took, 3),
            "writer_records_per_s": round(rows / took)}


def read(pg_url: str, rows: int, have: int) -> dict[str, Any]:
    from llmdispatch_nb.analysis import calls

    ledger = PostgresLedger(pg_url, user="bench")
    t = time.perf_counter()
    for i in range(have, rows):
        ledger.write(record(i, f"s{i // 1000}", ("eval",) if i % 10 else ("eval", "nightly")))
    ledger.flush(1800)
    fill = time.perf_counter() - t
    assert ledger.count() >= rows
    out: dict[str, Any] = {"read_table_rows": ledger.count(), "fill_s": round(fill, 1)}
    middle = rows // 2  # a thousand rows from the middle of the table, found two ways
    for name, kw in (("session", {"session": f"s{middle // 1000}"}),
                     ("since_until", {"since": 1.7e9 + middle * 0.01,
                                      "until": 1.7e9 + middle * 0.01 + 10})):
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            frame = calls(ledger, **kw)
            best = min(best, time.perf_counter() - t)
        out[f"read_{name}_rows"] = len(frame)
        out[f"read_{name}_ms"] = ms(best)
    ledger.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300, help="calls per round and setup")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--writer-rows", type=int, default=100_000)
    ap.add_argument("--rows", type=int, default=1_000_000, help="team ledger rows to read from")
    args = ap.parse_args()
    pg, rs = start_postgres(), start_redis()
    try:
        pg_url = pg.new_database()
        results: dict[str, Any] = {}
        with emulators() as urls:
            results.update(overhead(urls["openai"], pg_url, rs.url(), args.n, args.rounds))
        for k, v in results.items():
            print(f"{k:24} {v}")
        big = pg.new_database()
        part = writer(big, args.writer_rows)
        for k, v in part.items():
            print(f"{k:24} {v}")
        results.update(part)
        part = read(big, args.rows, args.writer_rows)
        for k, v in part.items():
            print(f"{k:24} {v}")
        results.update(part)
        print(json.dumps(results))
    finally:
        pg.close()
        rs.close()


if __name__ == "__main__":
    main()
