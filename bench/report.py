"""Render the figures of one `python -m bench` run as bench/RESULTS.md (tables, verdicts)."""

from __future__ import annotations

from typing import Any

from bench.overhead import LABELS, PHASES

PEERS = ("openai", "litellm", "litellm_router")


def _f(x: Any, nd: int = 2) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:,.{nd}f}"
    return str(x)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(_f(c) if not isinstance(c, str) else c for c in r) + " |" for r in rows]
    return [*out, ""]


def _load(la: Any) -> str:
    return " / ".join(f"{x:.2f}" for x in la) if la else "–"


def machine(m: dict[str, Any]) -> list[str]:
    pk = ", ".join(f"{k} {v}" for k, v in m["packages"].items() if v)
    return [f"- Date: {m['date']}",
            f"- Machine: {m['cores']} cores, {m['memory_gib']} GiB, CPU {m['cpu_model']}, {m['os']}",
            f"- Python: {m['python']}; llmdispatch-nb at commit {m.get('source', 'unknown')}",
            f"- Packages: {pk}",
            f"- Load average (1/5/15 min) at start: {_load(m['loadavg_start'])}; at end: "
            f"{_load(m.get('loadavg_end'))}. This machine is shared with other jobs (2 cores): "
            f"absolute figures are inflated by it; the ratios come from interleaved runs.", ""]


def measured(section: dict[str, Any]) -> list[str]:
    m = section.get("measured")
    if not m:
        return []
    end = f", at the end {_load(m['loadavg_end'])}" if m.get("loadavg_end") else ""
    return [f"_Measured {m['date']} at commit {m['source']}; load average at the start "
            f"{_load(m['loadavg_start'])}{end}._", ""]


def overhead(o: dict[str, Any]) -> list[str]:
    out = ["## 1. Per-call overhead (OpenAI emulator on loopback, its own process, time_scale 0)", "",
           *measured(o),
           f"{o['n_seq']} sequential and {o['n_conc']} concurrent ({o['concurrency']} at once) "
           f"calls per client and phase, in {o['rounds']} interleaved rounds (order rotated each "
           f"round), each client in its own worker process. 64 output tokens per answer. "
           f"Load average (1 min) after each round: "
           f"{', '.join(f'{x:.2f}' for x in o['loadavg_during'])}.", "",
           "CPU ms/call is the worker process's CPU time (all its threads: our loop thread and "
           "the ledger writer included) per call; it is less sensitive than latency to other "
           "jobs on the machine. Ratios are against raw httpx in the same run.", ""]
    for c, label in o.get("labels", LABELS).items():  # as they were when measured
        if c in o["clients"]:
            out.append(f"- `{c}`: {label}")
    out.append("")
    ratios = o.get("ratio_vs_httpx", {})
    for kind, mode in PHASES:
        phase = f"{kind}_{mode}"
        title = f"{'Streamed' if kind == 'stream' else 'Plain'}, " + (
            "sequential" if mode == "seq" else f"{o['concurrency']} at once")
        out.append(f"### {title}")
        out.append("")
        header = ["client", "p50 ms", "p95 ms"]
        if kind == "stream":
            header += ["TTFT p50 ms", "TTFT p95 ms"]
        if mode == "conc":
            header += ["calls/s"]
        header += ["CPU ms/call", "p50 vs httpx", "CPU vs httpx"]
        rows = []
        for c, per in o["clients"].items():
            e = per[phase]
            row: list[Any] = [c, e["p50_ms"], e["p95_ms"]]
            if kind == "stream":
                row += [e.get("ttft_p50_ms"), e.get("ttft_p95_ms")]
            if mode == "conc":
                row += [e.get("calls_per_s")]
            r = ratios.get(c, {})
            row += [e["cpu_ms_per_call"], f"{r.get(f'{phase}_p50', float('nan')):.2f}x",
                    f"{r.get(f'{phase}_cpu', float('nan')):.2f}x"]
            rows.append(row)
        out += _table(header, rows)
        out += _verdict(o, phase)
    return out


def _verdict(o: dict[str, Any], phase: str) -> list[str]:
    cl = o["clients"]
    if "ours" not in cl or "httpx" not in cl:
        return []
    ours = cl["ours"][phase]["p50_ms"]
    raw = cl["httpx"][phase]["p50_ms"]
    ratio = ours / raw
    peers = {p: cl[p][phase]["p50_ms"] for p in PEERS if p in cl}
    beaten = [p for p, v in peers.items() if ours < v]
    lost = [p for p, v in peers.items() if ours >= v]
    goal = "meets" if ratio <= 1.2 else "misses"
    line = f"Ours at p50: {ratio:.2f}x raw httpx ({goal} the 1.2x goal)"
    if peers:
        line += (f"; below {', '.join(beaten) or 'no peer'}" +
                 (f"; not below {', '.join(lost)}" if lost else ""))
    if "ttft_p50_ms" in cl["ours"][phase]:
        t = cl["ours"][phase]["ttft_p50_ms"] / cl["httpx"][phase]["ttft_p50_ms"]
        line += f". Time to first token: {t:.2f}x raw httpx"
    return [line + ".", ""]


def profile(ps: list[dict[str, Any]]) -> list[str]:
    out = ["## Where our time goes (profile of the Dispatcher path)", "",
           "cProfile in the caller's and the dispatcher's loop threads (waiting in the selector "
           "or on a lock left out), same setup as `ours`; per-thread CPU from /proc. cProfile's "
           "own cost per Python call inflates Python-heavy code; read shares, not absolutes.", ""]
    if ps:
        out += measured(ps[0])
    for p in ps:
        kind = "streamed" if p["streamed"] else "plain"
        out.append(f"### {p['calls']} {kind} calls, {p['concurrency']} at once "
                   f"(load {_load(p['loadavg'])})")
        out.append("")
        cpu = ", ".join(f"{k} {v:.2f}" for k, v in p["cpu_ms_per_call_by_thread"].items())
        out.append(f"CPU ms per call by thread: {cpu}. Busy time by package: " +
                   ", ".join(f"{k} {v:.0%}" for k, v in p["share_by_package"].items() if v >= 0.01)
                   + f". Our own code, self time: {p['ours_self_share']:.1%}.")
        out.append("")
        rows = [[r["where"], f"{r['self_share']:.1%}", r["self_us_per_call"]] for r in p["top_ours_self"][:10]]
        out += _table(["our function (self time)", "share", "µs/call"], rows)
        rows = [[r["where"], f"{r['cum_share']:.1%}", r["cum_us_per_call"]]
                for r in p["top_ours_cumulative"][:10]]
        out += _table(["our function (cumulative, incl. what it calls)", "share", "µs/call"], rows)
        rows = [[r["where"], f"{r['self_share']:.1%}"] for r in p["top_others_self"]]
        out += _table(["outside our code (self time)", "share"], rows)
    return out


def imports(i: dict[str, Any]) -> list[str]:
    out = ["## 2. Import time (fresh interpreters)", "", *measured(i),
           f"Median of {i['runs']} runs (LiteLLM: fewer), interpreter start subtracted; "
           "`%load_ext` is an IPython `InteractiveShell` that loads the extension minus the same "
           "shell without it (the shell's own start is the row above it). LiteLLM with "
           "`LITELLM_LOCAL_MODEL_COST_MAP=True` (no price-map download: no network here).", ""]
    rows = [[name, t] for name, t in i["ms"].items()]
    out += _table(["statement", "ms"], rows)
    out.append(f"`import llmdispatch_nb` / `import httpx`: {i['ratio_llmdispatch_vs_httpx']}x; "
               f"`from llmdispatch_nb import Dispatcher` / `import httpx`: "
               f"{i['ratio_dispatcher_vs_httpx']}x (it imports httpx itself).")
    out.append("")
    for name, mods in i["modules_loaded"].items():
        out.append(f"- after `{name}`, loaded of {{pandas, numpy, plotly, IPython, ipywidgets, "
                   f"sqlite3, httpx}}: {', '.join(mods) or 'none'}")
    return [*out, ""]


def memory(m: dict[str, Any]) -> list[str]:
    out = ["## 3. Memory over many calls (Dispatcher, ledger on)", "", *measured(m),
           f"{m['calls_made']:,} calls made of {m['calls_requested']:,} asked "
           f"({m['concurrency']} at once, distinct prompts, time budget {m['budget_s']:.0f} s"
           + ("; stopped by the budget" if m["stopped_by_budget"] else "") + "). "
           f"Process RSS before the Dispatcher existed: {m['rss_before_dispatcher_mib']} MiB. "
           f"Ledger rows at the end: {m['ledger_rows']:,}.", ""]
    s = m["samples"]
    if len(s) <= 12:
        picked = s
    else:  # 0, a quarter, half, three quarters and all of the calls made
        done = s[-1]["calls"]
        picked = [next(x for x in s if x["calls"] >= q * done // 4) for q in range(5)]
    rows = [[f"{x['calls']:,}", x["rss_mib"], x["ledger_pending"], f"{x['gc_objects']:,}",
             x["elapsed_s"], x["emulator_rss_mib"]] for x in picked]
    out += _table(["calls", "RSS MiB", "ledger queue", "Python objects", "elapsed s",
                   "emulator RSS MiB (other process)"], rows)
    g = m["growth_mib_per_10k_second_half"]
    line = f"Growth over the second half of the run: {g} MiB per 10,000 calls"
    if g <= 0.5:
        line += " (none measurable: the samples wander by a few MiB as allocator arenas come and go)"
    elif m["stopped_by_budget"]:
        line += f"; extrapolated to 100,000 calls: {m['extrapolated_rss_at_100k_mib']} MiB"
    out.append(line + ".")
    return [*out, ""]


def soak(s: dict[str, Any]) -> list[str]:
    st = s["settings"]
    out = ["## 4. Reliability soak (four emulated vendors, in process)", "", *measured(s),
           f"{s['calls']:,} calls, {st['concurrency']} at once, {st['stream_share']:.0%} streamed, "
           f"{st['fault_rate']:.0%} of answers faulty per vendor, mix: {', '.join(st['fault_mix'])}. "
           f"Fallbacks: every call lists the four vendors. Retry: {st['retry']}. Breaker: "
           f"{st['breaker']}. Read timeout {st['read_timeout_s']} s (hangs). "
           f"Took {s['duration_s']:.0f} s.", ""]
    errs = ", ".join(f"{k} {v}" for k, v in sorted(s["typed_errors"].items())) or "none"
    rows = [
        ["answered", s["answered"], ""],
        ["typed errors", sum(s["typed_errors"].values()), errs],
        ["lost (neither)", s["lost"], "must be 0"],
        ["ledger rows", s["ledger_rows"], "one per attempt; " + ", ".join(
            f"{k} {v}" for k, v in s.get("ledger_by_vendor", {}).items())],
        ["emulator requests", s["emulator_total"],
         ", ".join(f"{k} {v}" for k, v in s["emulator_requests"].items())],
        ["wire requests (transport log)", s["wire_requests"], ""],
        ["calls whose ledger rows and requests differ", s["calls_with_count_mismatch"], "must be 0"],
        ["retries after a response that named a wait", s["retries_after_a_wait"], ""],
        ["of them sooner than the wait (wire)", s["early_retries_wire"],
         f"must be 0; least margin {s['min_margin_wire_ms']} ms"],
        ["of them sooner than the wait (ledger)", s["early_retries_ledger"],
         f"must be 0; least margin {s['min_margin_ledger_ms']} ms"],
        ["breaker trips", s["breaker_trips"], ""],
        ["RSS MiB (after phase 1 -> end)",
         f"{s['rss_mb'][0][1]} -> {s['rss_mb'][-1][1]}" if s["rss_mb"] else "–",
         f"growth {s['rss_growth_mb']} MiB, of it {s.get('rss_growth_second_half_mb', '–')} MiB "
         f"over the second half (includes the in-process emulators and this harness)"],
        ["call wall time ms", ", ".join(f"{k} {v:,.0f}" for k, v in s["call_ms"].items()), ""],
    ]
    out += _table(["", "count", "note"], rows)
    out.append("Resident memory here is that of one process holding the four emulators, the "
               "client and this checker (which reads each phase's ledger rows back): section 3 "
               "measures the Dispatcher alone.")
    out.append("")
    out.append("Faults served: " + ", ".join(f"{k} {v}" for k, v in sorted(
        s["faults_injected"].items(), key=lambda kv: -kv[1])) + ".")
    out.append("")
    out.append("Attempts in the ledger by outcome: " + ", ".join(
        f"{k.rstrip(':')} {v}" for k, v in sorted(s["attempts_by_status"].items(),
                                                  key=lambda kv: -kv[1])) + ".")
    for title, key in (("Lost calls", "lost_examples"), ("Count mismatches", "mismatch_examples"),
                       ("Early retries", "early_examples")):
        if s.get(key):
            out += ["", f"{title}:", *(f"- {x}" for x in s[key])]
    return [*out, ""]


_POOL = ("connection.py:is_idle", "http11.py:is_idle", "connection_pool.py:",
         "_sockets.py:extra_attributes", "'getpeername'", "_utils.py:is_socket_readable")


def findings(r: dict[str, Any]) -> list[str]:
    """What the figures say, read off them (no judgement added by hand)."""
    out: list[str] = []
    o = r.get("overhead", {}).get("clients", {})
    if {"ours", "httpx"} <= set(o):
        for phase, what in (("plain_seq", "plain, sequential"), ("stream_seq", "streamed, sequential"),
                            ("plain_conc", "plain, 64 at once"), ("stream_conc", "streamed, 64 at once")):
            ours, raw = o["ours"][phase], o["httpx"][phase]
            extra = ""
            if "httpx_http11" in o:
                same = o["httpx_http11"][phase]
                extra = (f"; against raw httpx on the same HTTP/1.1 transport as ours (our "
                         f"layers alone) {ours['p50_ms'] / same['p50_ms']:.2f}x at p50, "
                         f"{ours['cpu_ms_per_call'] - same['cpu_ms_per_call']:+.2f} ms CPU")
            out.append(f"- {what}: ours {ours['p50_ms'] / raw['p50_ms']:.2f}x raw httpx at p50, "
                       f"{ours['cpu_ms_per_call'] / raw['cpu_ms_per_call']:.2f}x its CPU per call "
                       f"({ours['cpu_ms_per_call'] - raw['cpu_ms_per_call']:+.2f} ms){extra}.")
    for p in r.get("profile", []):
        cum = {x["where"]: x for x in p["top_ours_cumulative"]}
        hand = cum.get("llmdispatch_nb/_stream.py:send")
        if p["streamed"] and hand:
            out.append(
                f"- Streamed, {p['concurrency']} at once: handing the text events to the caller "
                f"(`_stream.py` StreamSink.send) takes {hand['cum_share']:.0%} "
                f"of the profiled busy time, {hand['cum_us_per_call']:,.0f} µs per call of 64 "
                f"events.")
        if not p["streamed"] and p["concurrency"] > 1:
            pool = sum(x["self_share"] for x in p["top_others_self"]
                       if any(k in x["where"] for k in _POOL))
            if pool:
                out.append(
                    f"- Plain, {p['concurrency']} at once: httpcore 1.x's connection-pool "
                    f"bookkeeping (is_idle / has_expired -> getpeername, is_socket_readable on every "
                    f"pooled connection, per request) is at least {pool:.0%} of the profiled busy time; "
                    f"raw httpx pays it too. The openai SDK here runs on httpx2/httpcore2 and LiteLLM "
                    f"on aiohttp, which do not, so at 64 at once the peers' HTTP stacks differ from "
                    f"ours and raw httpx's.")
        if not p["streamed"] and p["concurrency"] == 1:
            # Leave out the call chain itself and the HTTP exchange it wraps.
            chain = (":asend", ":_call", ":_try_candidate", ":_attempt", "_attempt.py:send_plain",
                     "_attempt.py:send_stream", "_http11.py:", "_aiohttp.py:")
            pieces = [x for x in p["top_ours_cumulative"]
                      if not any(x["where"].endswith(c) or c in x["where"] for c in chain)]
            top = ", ".join(f"{x['where'].split('/', 1)[-1]} {x['cum_us_per_call']:,.0f} µs"
                            for x in pieces[:5])
            out.append(f"- Plain, sequential, our largest pieces besides the HTTP exchange "
                       f"(cumulative µs per call, profiled): {top}.")
    i = r.get("imports")
    if i:
        out.append(f"- `import llmdispatch_nb` takes {i['ratio_llmdispatch_vs_httpx']}x `import httpx` "
                   f"(the package is lazy); `from llmdispatch_nb import Dispatcher` "
                   f"{i['ratio_dispatcher_vs_httpx']}x, httpx included.")
    m = r.get("memory")
    if m:
        out.append(f"- Memory: {m['samples'][-1]['rss_mib']} MiB after {m['calls_made']:,} calls"
                   f"{' (the time budget ran out before 100,000)' if m['stopped_by_budget'] else ''}, "
                   f"{m['growth_mib_per_10k_second_half']} MiB per 10,000 calls over the second half; "
                   f"the ledger's queue stayed at most {max(x['ledger_pending'] for x in m['samples'])}.")
    sk = r.get("soak")
    if sk:
        ok = (sk["lost"] == 0 and sk["calls_with_count_mismatch"] == 0
              and sk["ledger_rows"] == sk["emulator_total"] == sk["wire_requests"]
              and sk["early_retries_wire"] == 0 and sk["early_retries_ledger"] == 0)
        out.append(f"- Soak: {'every check holds' if ok else 'A CHECK FAILED'} (lost {sk['lost']}, "
                   f"ledger {sk['ledger_rows']} = emulators {sk['emulator_total']} = wire "
                   f"{sk['wire_requests']}, early retries {sk['early_retries_wire']}/"
                   f"{sk['early_retries_ledger']}); RSS {sk['rss_mb'][0][1]} -> "
                   f"{sk['rss_mb'][-1][1]} MiB, {sk.get('rss_growth_second_half_mb', '–')} MiB "
                   f"of it over the second half.")
    t = r.get("transports")
    if t and "fanout_cpu_per_call" in t:
        fan, plain = t["fanout_cpu_per_call"], t.get("seq_cpu_plain_per_call", {})
        parts = [f"`{k}` {fan[k]['ratio']:.2f}x" for k in ("thin", "aiohttp", "httpx2")
                 if "ratio" in fan.get(k, {})]
        raw = sorted((row["median_ms"], k) for k, row in fan.items() if k.startswith("raw_"))
        out.append(f"- Transport (section 5): CPU per call in the fan-out against the old "
                   f"hand-written transport: {', '.join(parts)}; one at a time, plain, `thin` "
                   f"{plain.get('thin', {}).get('ratio', '–')}x. Raw clients in the fan-out, "
                   f"best first: " + ", ".join(f"{k} {v:.2f} ms" for v, k in raw) + ".")
        imp = t.get("imports")
        if imp:
            out.append(f"- Import cost as CPU (section 5): `from llmdispatch_nb import "
                       f"Dispatcher` {imp['ratio_vs_import_httpx']['from llmdispatch_nb import Dispatcher']:.2f}x "
                       f"`import httpx`, httpx included; aiohttp is not imported until a "
                       f"Dispatcher is made.")
    return ["## Findings", "", *out, ""] if out else []


def _cell(row: dict[str, Any] | None) -> str:
    if not row:
        return "–"
    spread = f" ({row['min_ms']:.2f}-{row['max_ms']:.2f})" if row["n_rounds"] > 1 else ""
    ratio = f", {row['ratio']:.2f}x" if "ratio" in row else ""
    return f"{row['median_ms']:.2f}{spread}{ratio}"


def transports(t: dict[str, Any]) -> list[str]:
    """Issue 20: which HTTP stack the Dispatcher runs on, and the raw baselines."""
    st = t["setup"]
    loads = st["loadavg_per_run"]
    out = ["## 5. The transport: HTTP stacks in our call path and raw (issue 20)", "",
           *measured(t),
           f"{st['rounds']} interleaved rounds (order rotated each round), each stack in a fresh "
           f"worker process per round and phase. Fan-out: {st['fanout_calls']:,} calls at once "
           f"over the four emulated vendors at their real pace (50 per vendor, a quarter "
           f"streamed, no faults; bench/fanout.py's burst). One at a time: {st['seq_calls']} "
           f"calls plain, then streamed, on the OpenAI emulator answering at once. Each cell: "
           f"CPU ms per call (the worker's process time, all threads; not wall time), the "
           f"median over rounds with the min-max spread, then the ratio of medians. Load "
           f"average (1 min) around the runs: {min(loads):.1f} to {max(loads):.1f} on "
           f"{st['cpus']} cores. Versions: "
           + ", ".join(f"{k} {v}" for k, v in st["versions"].items()) + ".", ""]
    out += [f"- `{k}`: {v}" for k, v in t["stacks"].items()] + [""]
    fan, plain, stream = (t.get("fanout_cpu_per_call", {}), t.get("seq_cpu_plain_per_call", {}),
                          t.get("seq_cpu_stream_per_call", {}))
    p50p, p50s = t.get("seq_p50_plain_per_call", {}), t.get("seq_p50_stream_per_call", {})
    base = "ours" if "ours" in fan else "thin"
    out += [f"In our call path (the Dispatcher, caps on), ratios against `{base}`:", ""]
    out += _table(["stack", "fan-out CPU ms/call", "one at a time, plain", "one at a time, streamed",
                   "p50 ms plain", "p50 ms streamed"],
                  [[k, _cell(fan.get(k)), _cell(plain.get(k)), _cell(stream.get(k)),
                    _f(p50p.get(k, {}).get("median_ms")), _f(p50s.get(k, {}).get("median_ms"))]
                   for k in t["stacks"] if not k.startswith("raw_")])
    out += ["Raw clients (our adapters build the request, the body is only read), ratios against "
            "the best raw client in each column:", ""]
    out += _table(["stack", "fan-out CPU ms/call", "one at a time, plain", "one at a time, streamed"],
                  [[k, _cell(fan.get(k)), _cell(plain.get(k)), _cell(stream.get(k))]
                   for k in t["stacks"] if k.startswith("raw_")])
    imp = t.get("imports")
    if imp:
        out += [f"Import cost: CPU ms of a fresh interpreter, the bare interpreter's subtracted, "
                f"median of {imp['runs']} interleaved runs (min-max), and the ratio to "
                f"`import httpx`. aiohttp is imported on a Dispatcher's creation, in the "
                f"background, not by `import llmdispatch_nb` nor `from llmdispatch_nb import "
                f"Dispatcher`.", ""]
        out += _table(["statement", "CPU ms", "vs import httpx"],
                      [[f"`{k}`", f"{v:.0f} ({imp['min_max_ms'][k][0]:.0f}-{imp['min_max_ms'][k][1]:.0f})",
                        f"{imp['ratio_vs_import_httpx'][k]:.2f}x"] for k, v in imp["cpu_ms"].items()])
    kept = {k: fan[k]["ratio"] for k in ("thin", "aiohttp", "httpx2") if k in fan and "ratio" in fan[k]}
    if "ours" in fan and kept:
        best = min(kept, key=lambda k: kept[k])
        verdict = ("within" if kept[best] <= 1.15 else "outside")
        out += [f"Decision: issue 20's rule was to keep the hand-written transport unless a "
                f"kept one came within 1.15x of its CPU per call in the fan-out, and the team's "
                f"is to prefer a kept library unless every kept option misses by a wide margin. "
                f"The best kept stack, `{best}`, is at {kept[best]:.2f}x ({verdict}); "
                + ", ".join(f"`{k}` {v:.2f}x" for k, v in kept.items() if k != best) + ".", ""]
    return out


def render(results: dict[str, Any], command: str) -> str:
    out = ["# llmdispatch-nb benchmarks", "",
           f"Written by `{command}` (see bench/README.md). The same figures, by name, are in "
           "bench/results.json.", ""]
    out += machine(results["machine"])
    out += findings(results)
    if "overhead" in results:
        out += overhead(results["overhead"])
    if results.get("profile"):
        out += profile(results["profile"])
    if "imports" in results:
        out += imports(results["imports"])
    if "memory" in results:
        out += memory(results["memory"])
    if "soak" in results:
        out += soak(results["soak"])
    if "transports" in results:
        out += transports(results["transports"])
    return "\n".join(out).rstrip() + "\n"
