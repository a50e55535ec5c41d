"""The reliability soak: many calls over the four emulated vendors with a quarter of the
answers faulty, fallbacks on, and three independent ledgers of what happened compared.

    .venv/bin/python bench/soak.py [--calls 20000] [--concurrency 64]

What is counted, and by whom:

* the caller: every call ends answered, or with one of our typed errors
  (`LLMDispatchError`); anything else, or a call still running after its deadline plus a
  grace period, is *lost* (must be 0);
* the wire: an httpx transport wrapped around the dispatcher's client logs every request
  sent (which call, from the marker in the prompt; which candidate; when), and for an
  error response the wait it asked for (`retry-after-ms`, Gemini's `RetryInfo`, else
  `retry-after`), read here independently of the adapters;
* the emulators: every request they received (their own log);
* our ledger (SQLite): one row per attempt.

Checks: ledger rows = emulator requests = wire requests, in total and per call; no retry
on the same candidate sent sooner after an error response than the wait it asked for,
measured on the wire (send time of the retry minus arrival of the error) and in the ledger
(start of the retry minus the end of the failed attempt). The run goes in phases; after
each, the emulators' and the wire's logs are tallied and cleared, so resident memory is
sampled without the test harness's own logs growing.

`tests/test_soak.py` runs a few hundred calls of the same mix; `bench/__main__.py` the full one.
"""

from __future__ import annotations

import argparse
import asyncio
import email.utils
import json
import re
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from bench._common import pct, rss_mb

TARGETS = ("openai:gpt-4o-mini", "anthropic:claude-haiku-4-5", "google:gemini-2.5-flash",
           "azure:gpt-4o-mini")
_MARK = re.compile(rb"soak call #(\d+)")
_MARK_TEXT = re.compile(r"soak call #(\d+)")


def fault_mix() -> tuple[Any, ...]:
    """The faults a quarter of the answers get: rate limits with a wait (in seconds, and in
    milliseconds or RetryInfo), server errors, overload, resets, hangs, cut streams."""
    from llmdispatch_nb.sim import Fault

    return (Fault("429", retry_after=0.05), Fault("429-ms", retry_after=0.03), "500",
            Fault("503", retry_after=0.05), "529", "reset", Fault("hang", hang_s=30.0),
            Fault("midstream-disconnect", after_tokens=3), "midstream-error")


# -- the wire log ---------------------------------------------------------------------------


@dataclass(slots=True)
class Sent:
    call: int  # the marker in the prompt, -1 when absent
    candidate: str  # port + path + model: one vendor:model
    t_send: float  # time.monotonic() when handed to the connection
    t_back: float  # when the status line arrived (and an error body was read) or it failed
    status: int | None  # None: no response (reset, timeout)
    wait_s: float | None  # the wait an error response asked for


def asked_wait(headers: httpx.Headers, body: bytes) -> float | None:
    """The wait an error response asks for, as the vendors document it: `retry-after-ms`
    (OpenAI, Anthropic), Gemini's `RetryInfo.retryDelay`, else `retry-after` (seconds or an
    HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return float(ms) / 1000
        except ValueError:
            pass
    try:
        details = json.loads(body)["error"]["details"]
        for d in details:
            if str(d.get("@type", "")).endswith("google.rpc.RetryInfo"):
                return float(str(d["retryDelay"]).rstrip("s"))
    except (ValueError, KeyError, TypeError, AttributeError):
        pass
    ra = headers.get("retry-after")
    if ra:
        try:
            return float(ra)
        except ValueError:
            when = email.utils.parsedate_to_datetime(ra)
            return max(0.0, when.timestamp() - time.time())
    return None


class WireLog(httpx.AsyncBaseTransport):
    """Wraps the real transport; logs what went out and what came back. It reads an error
    body itself (to find Gemini's RetryInfo) and hands on an identical response."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.sent: list[Sent] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        content = request.content
        m = _MARK.search(content)
        model = re.search(rb'"model"\s*:\s*"([^"]+)"', content)
        candidate = f"{request.url.port}{request.url.path}|{model.group(1).decode() if model else ''}"
        item = Sent(int(m.group(1)) if m else -1, candidate, time.monotonic(), 0.0, None, None)
        self.sent.append(item)
        try:
            resp = await self.inner.handle_async_request(request)
            if resp.status_code >= 400:
                raw = b"".join([chunk async for chunk in resp.aiter_raw()])
                await resp.aclose()
                item.wait_s = asked_wait(resp.headers, raw)
                resp = httpx.Response(resp.status_code, headers=resp.headers, content=raw,
                                      extensions=resp.extensions)
            item.status = resp.status_code
            return resp
        finally:
            item.t_back = time.monotonic()

    async def aclose(self) -> None:
        await self.inner.aclose()


# -- the run --------------------------------------------------------------------------------


@dataclass
class SoakResult:
    calls: int = 0
    answered: int = 0
    typed_errors: dict[str, int] = field(default_factory=dict)
    lost: int = 0
    lost_examples: list[str] = field(default_factory=list)
    ledger_rows: int = 0
    emulator_requests: dict[str, int] = field(default_factory=dict)
    ledger_by_vendor: dict[str, int] = field(default_factory=dict)
    wire_requests: int = 0
    calls_with_count_mismatch: int = 0
    mismatch_examples: list[str] = field(default_factory=list)
    faults_injected: dict[str, int] = field(default_factory=dict)
    retries_after_a_wait: int = 0  # retries on the same candidate after a response that named a wait
    early_retries_wire: int = 0
    early_retries_ledger: int = 0
    early_examples: list[str] = field(default_factory=list)
    min_margin_wire_ms: float | None = None
    min_margin_ledger_ms: float | None = None
    breaker_trips: int = 0
    attempts_by_status: dict[str, int] = field(default_factory=dict)
    rss_mb: list[tuple[int, float]] = field(default_factory=list)  # (calls done, MiB)
    call_ms: dict[str, float] = field(default_factory=dict)  # per-call wall time percentiles
    duration_s: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def emulator_total(self) -> int:
        return sum(self.emulator_requests.values())

    @property
    def rss_growth_mb(self) -> float:
        """Resident memory at the end minus after the first phase (warm)."""
        if len(self.rss_mb) < 2:
            return 0.0
        return round(self.rss_mb[-1][1] - self.rss_mb[0][1], 1)

    @property
    def rss_growth_second_half_mb(self) -> float:
        """Resident memory at the end minus halfway through (once caches have filled)."""
        if len(self.rss_mb) < 2:
            return 0.0
        return round(self.rss_mb[-1][1] - self.rss_mb[(len(self.rss_mb) - 1) // 2][1], 1)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["emulator_total"] = self.emulator_total
        out["rss_growth_mb"] = self.rss_growth_mb
        out["rss_growth_second_half_mb"] = self.rss_growth_second_half_mb
        return out

    def summary(self) -> str:
        errs = ", ".join(f"{k} {v}" for k, v in sorted(self.typed_errors.items())) or "none"
        return (f"{self.calls} calls in {self.duration_s:.1f} s: answered {self.answered}, "
                f"typed errors {sum(self.typed_errors.values())} ({errs}), lost {self.lost}; "
                f"ledger rows {self.ledger_rows}, emulator requests {self.emulator_total}, "
                f"wire requests {self.wire_requests}, calls whose counts differ "
                f"{self.calls_with_count_mismatch}; retries after a named wait "
                f"{self.retries_after_a_wait}, early: wire {self.early_retries_wire}, ledger "
                f"{self.early_retries_ledger} (least margin {self.min_margin_wire_ms} ms wire, "
                f"{self.min_margin_ledger_ms} ms ledger); breaker trips {self.breaker_trips}; "
                f"RSS {self.rss_mb[0][1] if self.rss_mb else 0:.1f} -> "
                f"{self.rss_mb[-1][1] if self.rss_mb else 0:.1f} MiB")


def run_soak(calls: int = 20_000, *, concurrency: int = 64, fault_rate: float = 0.25,
             stream_share: float = 0.5, read_timeout_s: float = 2.0, phases: int = 10,
             seed: int = 0, home: str | None = None,
             log: Callable[[str], None] = lambda s: None) -> SoakResult:
    """Run the soak in this process (emulators on loopback threads); see the module doc."""
    with tempfile.TemporaryDirectory(prefix="llmd-soak-") as tmp:
        return asyncio.run(_soak(calls, concurrency, fault_rate, stream_share, read_timeout_s,
                                 max(1, phases), seed, home or tmp, log))


async def _soak(n_calls: int, concurrency: int, fault_rate: float, stream_share: float,
                read_timeout_s: float, phases: int, seed: int, home: str,
                log: Callable[[str], None]) -> SoakResult:
    import random

    import llmdispatch_nb as ld
    from llmdispatch_nb.errors import LLMDispatchError
    from llmdispatch_nb.ledger import Ledger
    from llmdispatch_nb.resilience import CircuitBreaker, RetryPolicy

    res = SoakResult(settings={
        "calls": n_calls, "concurrency": concurrency, "fault_rate": fault_rate,
        "stream_share": stream_share, "read_timeout_s": read_timeout_s, "phases": phases,
        "fault_mix": [f if isinstance(f, str) else f"{f.kind}(retry_after={f.retry_after})"
                      if f.retry_after is not None else f.kind for f in fault_mix()],
        "retry": "3 attempts per candidate, exponential backoff from 20 ms (max 200 ms), "
                 "server waits honoured",
        "breaker": "defaults, cool-down 1 s", "fallbacks": list(TARGETS)})
    timeout = httpx.Timeout(10.0, read=read_timeout_s, connect=5.0)
    wire = WireLog(httpx.AsyncHTTPTransport(
        limits=httpx.Limits(max_connections=256, max_keepalive_connections=64)))
    client = httpx.AsyncClient(transport=wire, timeout=timeout)
    ledger = Ledger(Path(home) / "soak-ledger.db")
    d = ld.Dispatcher(demo=True, sim_time_scale=0.0, env={}, dotenv=False, client=client,
                      timeout=timeout, deadline_s=60.0, ledger=ledger,
                      retry=RetryPolicy(max_attempts=3, base_s=0.02, max_backoff_s=0.2),
                      breaker=CircuitBreaker(cooldown_s=1.0), budget=1e6,
                      default_fallbacks=TARGETS)
    sim = d.sim
    for i, emu in enumerate(sim.emulators.values()):
        emu.reset()
        emu.faults.rate(fault_rate, *fault_mix(), seed=seed * 101 + i)
    rng = random.Random(seed)
    typed: Counter[str] = Counter()
    port_vendor = {str(port): v for v, port in sim.ports.items()}
    emu_counts: Counter[str] = Counter()
    faults: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    ledger_vendors: Counter[str] = Counter()
    durations: list[float] = []
    started = time.monotonic()
    guard = d.deadline_s + 30.0

    async def one(i: int, target: str, streamed: bool) -> None:
        prompt = f"[soak call #{i}] Summarise the status of ticket {i} in two sentences."
        t0 = time.perf_counter()
        try:
            if streamed:
                s = d.astream(prompt, target, max_tokens=48, tags=["soak"])

                async def drain() -> Any:
                    async for _ in s:
                        pass
                    return s.response

                resp = await asyncio.wait_for(drain(), guard)
            else:
                resp = await asyncio.wait_for(d.asend(prompt, target, max_tokens=48,
                                                      tags=["soak"]), guard)
            if resp is not None and resp.text:
                res.answered += 1
            else:
                _lose(res, i, "ended without an answer or an error")
        except LLMDispatchError as exc:
            typed[type(exc).__name__] += 1
        except BaseException as exc:  # anything untyped (or the guard firing) is lost
            _lose(res, i, f"{type(exc).__name__}: {exc}"[:200])
        durations.append(time.perf_counter() - t0)

    sem = asyncio.Semaphore(concurrency)

    async def limited(i: int) -> None:
        async with sem:
            await one(i, TARGETS[i % len(TARGETS)], rng.random() < stream_share)

    per_phase = -(-n_calls // phases)
    done = 0
    try:
        for p in range(phases):
            ids = range(done, min(n_calls, done + per_phase))
            if not ids:
                break
            phase_start = time.time()
            await asyncio.gather(*(limited(i) for i in ids))
            done = ids[-1] + 1
            res.rss_mb.append((done, round(rss_mb(), 1)))
            await _settle(sim)
            sent, wire.sent = wire.sent, []
            for v, emu in sim.emulators.items():
                items = list(emu.requests.items)
                emu.requests.clear()
                emu_counts[v] += len(items)
                faults.update(r.fault or "none" for r in items)
            rows = await asyncio.to_thread(_phase_rows, ledger, d.session, phase_start)
            statuses.update(f"{r.status}:{r.error_class or ''}" for r in rows)
            ledger_vendors.update(r.vendor for r in rows)
            _compare(res, ids, sent, rows, port_vendor)
            res.wire_requests += len(sent)
            log(f"  soak phase {p + 1}/{phases}: {done} calls, {res.answered} answered, "
                f"{sum(typed.values())} typed errors, {res.lost} lost, RSS {res.rss_mb[-1][1]} MiB")
    finally:
        res.duration_s = round(time.monotonic() - started, 2)
        res.breaker_trips = sum(c["trips"] for c in d.breaker.snapshot().values())
        try:
            d._loop.run(client.aclose())  # the client is ours; close it on the loop it ran on
        finally:
            await asyncio.to_thread(d.close)
    res.calls = done
    res.call_ms = {f"p{q}": round(pct(durations, q) * 1e3, 1) for q in (50, 90, 99, 100)}
    res.typed_errors = dict(typed)
    res.emulator_requests = dict(emu_counts)
    res.ledger_by_vendor = dict(ledger_vendors)
    res.faults_injected = dict(faults)
    res.attempts_by_status = dict(statuses)
    res.ledger_rows = await asyncio.to_thread(ledger.count)
    ledger.close()
    return res


def _lose(res: SoakResult, i: int, why: str) -> None:
    res.lost += 1
    if len(res.lost_examples) < 10:
        res.lost_examples.append(f"call #{i}: {why}")


async def _settle(sim: Any, quiet_s: float = 0.3, limit_s: float = 10.0) -> None:
    """Wait until the emulators have logged every request they will log: a request the
    client gave up on may still be read by a busy server a moment later."""
    end = time.monotonic() + limit_s
    last = -1
    while time.monotonic() < end:
        now = sum(len(e.requests) for e in sim.emulators.values())
        if now == last:
            return
        last = now
        await asyncio.sleep(quiet_s)


def _phase_rows(ledger: Any, session: str, since: float) -> list[Any]:
    """This phase's rows: the session's rows started since the phase began (every earlier
    phase had finished, and its rows had been written, before this one started)."""
    return ledger.records(session=session, since=since)


def _call_of(record: Any) -> int:
    m = _MARK_TEXT.search(record.prompt or "")
    return int(m.group(1)) if m else -1


def _compare(res: SoakResult, ids: range, sent: list[Sent], rows: list[Any],
             port_vendor: dict[str, str]) -> None:
    """Per call: as many ledger rows as requests on the wire, the same vendors in the same
    order, and no retry sooner than the wait the previous error response asked for."""
    wire_by: dict[int, list[Sent]] = defaultdict(list)
    for s in sent:
        wire_by[s.call].append(s)
    rows_by: dict[int, list[Any]] = defaultdict(list)
    for r in rows:
        rows_by[_call_of(r)].append(r)
    for i in ids:
        w = sorted(wire_by.get(i, ()), key=lambda s: s.t_send)
        lr = sorted(rows_by.get(i, ()), key=lambda r: r.attempt)
        w_vendors = [port_vendor.get(s.candidate.split("/", 1)[0], "?") for s in w]
        l_vendors = [r.vendor for r in lr]
        if w_vendors != l_vendors:
            res.calls_with_count_mismatch += 1
            if len(res.mismatch_examples) < 10:
                res.mismatch_examples.append(f"call #{i}: wire {w_vendors} ledger {l_vendors}")
            continue
        for k, a in enumerate(w):
            if a.wait_s is None:
                continue
            nxt = next((j for j in range(k + 1, len(w)) if w[j].candidate == a.candidate), None)
            if nxt is None:
                continue
            res.retries_after_a_wait += 1
            b = w[nxt]
            margin = (b.t_send - a.t_back) - a.wait_s
            res.min_margin_wire_ms = _least(res.min_margin_wire_ms, margin)
            ra, rb = lr[k], lr[nxt]
            lmargin = (rb.timestamp - (ra.timestamp + (ra.latency_s or 0.0))) - a.wait_s
            res.min_margin_ledger_ms = _least(res.min_margin_ledger_ms, lmargin)
            if margin < 0:
                res.early_retries_wire += 1
            if lmargin < 0:
                res.early_retries_ledger += 1
            if (margin < 0 or lmargin < 0) and len(res.early_examples) < 10:
                res.early_examples.append(
                    f"call #{i} {a.candidate}: status {a.status} asked {a.wait_s * 1e3:.0f} ms, "
                    f"retried after {(b.t_send - a.t_back) * 1e3:.1f} ms (wire), "
                    f"{(rb.timestamp - ra.timestamp - (ra.latency_s or 0)) * 1e3:.1f} ms (ledger)")


def _least(current: float | None, margin_s: float) -> float:
    m = round(margin_s * 1e3, 3)
    return m if current is None else min(current, m)


def main() -> None:
    ap = argparse.ArgumentParser(description="the reliability soak (see the module doc)")
    ap.add_argument("--calls", type=int, default=20_000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--phases", type=int, default=10)
    ap.add_argument("--read-timeout", type=float, default=2.0)
    args = ap.parse_args()
    res = run_soak(args.calls, concurrency=args.concurrency, phases=args.phases,
                   read_timeout_s=args.read_timeout, log=print)
    print(res.summary())
    print(json.dumps(res.as_dict(), indent=1, default=str))


if __name__ == "__main__":
    main()
