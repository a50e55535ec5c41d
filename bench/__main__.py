"""Run every benchmark and write bench/RESULTS.md and bench/results.json.

    .venv/bin/pip install -e '.[bench]'      # once: the peers (openai, litellm)
    .venv/bin/python -m bench                # everything (~30 min on 2 busy cores)
    .venv/bin/python -m bench --quick        # small sizes, a smoke run (~3 min)
    .venv/bin/python -m bench --only soak    # some sections; the others keep their last figures

Sections: imports (fresh interpreters), overhead (raw httpx, ours, the openai SDK, LiteLLM
acompletion and Router; plain and streamed; sequential and 64 at once), profile (where our
time goes), memory (RSS over up to 100,000 calls), soak (20,000 calls over four emulated
vendors with 25% faults), transports (CPU per call of the HTTP stacks we could run on, in our
call path and raw, and their import cost; issue 20).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import imports, memory, overhead, profile_ours, report, soak, transports
from bench._common import loadavg, machine, source_version

HERE = Path(__file__).resolve().parent
SECTIONS = ("imports", "overhead", "profile", "memory", "soak", "transports")

SIZES: dict[str, dict[str, Any]] = {
    "full": {"overhead": {"n": 200, "n_conc": 384, "rounds": 3},
             "imports": {"runs": 7}, "profile": {"calls": 2000},
             "memory": {"calls": 100_000, "budget_s": 300.0, "every": 5_000},
             "soak": {"calls": 20_000, "phases": 10},
             "transports": {"rounds": 4, "calls": 1000, "seq": 200}},
    "quick": {"overhead": {"n": 40, "n_conc": 128, "rounds": 2},
              "imports": {"runs": 3}, "profile": {"calls": 300},
              "memory": {"calls": 3_000, "budget_s": 40.0, "every": 500},
              "soak": {"calls": 600, "phases": 2},
              "transports": {"rounds": 1, "calls": 100, "seq": 30, "import_runs": 3}},
}


def stamp() -> dict[str, Any]:
    """When and on what a section was measured (sections may come from different runs)."""
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "source": source_version(),
            "loadavg_start": loadavg()}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    ap.add_argument("--only", default="", help=f"comma-separated sections of {', '.join(SECTIONS)}")
    ap.add_argument("--out", default=str(HERE), help="where RESULTS.md and results.json go")
    ap.add_argument("--render-only", action="store_true",
                    help="rewrite RESULTS.md from results.json without measuring")
    args = ap.parse_args()
    results: dict[str, Any]
    if args.render_only:
        path = Path(args.out)
        results = json.loads((path / "results.json").read_text())
        (path / "RESULTS.md").write_text(report.render(results, results.get("command", "python -m bench")))
        return
    size = SIZES["quick" if args.quick else "full"]
    only = [s for s in args.only.split(",") if s] or list(SECTIONS)
    unknown = set(only) - set(SECTIONS)
    if unknown:
        ap.error(f"unknown sections {sorted(unknown)}; known: {', '.join(SECTIONS)}")
    out_dir = Path(args.out)
    json_path = out_dir / "results.json"
    results = {}
    if args.only and json_path.exists():  # keep the sections not run this time
        results = json.loads(json_path.read_text())
    results["machine"] = machine()
    results["quick"] = args.quick
    started = time.monotonic()

    if "imports" in only:
        log("import times ...")
        at = stamp()
        results["imports"] = imports.measure(**size["imports"])
        results["imports"]["measured"] = {**at, "loadavg_end": loadavg()}
        log(f"  {results['imports']['ms']}")
    if "overhead" in only:
        log("per-call overhead (5 clients x 4 phases, interleaved) ...")
        at = stamp()
        results["overhead"] = overhead.measure(**size["overhead"], log=log)
        results["overhead"]["measured"] = {**at, "loadavg_end": loadavg()}
        overhead.print_table(results["overhead"])
    if "profile" in only:
        log("profile of the Dispatcher path ...")
        at = stamp()
        results["profile"] = [
            profile_ours.profile(size["profile"]["calls"]),
            profile_ours.profile(size["profile"]["calls"], concurrency=64),
            profile_ours.profile(max(1, size["profile"]["calls"] // 4), stream=True),
            profile_ours.profile(max(64, size["profile"]["calls"] // 4), stream=True,
                                 concurrency=64),
        ]
        for p in results["profile"]:
            p["measured"] = at
    if "memory" in only:
        log("memory over many calls ...")
        at = stamp()
        results["memory"] = memory.measure_in_fresh_process(**size["memory"])
        results["memory"]["measured"] = {**at, "loadavg_end": loadavg()}
    if "soak" in only:
        log("soak ...")
        at = stamp()
        res = soak.run_soak(size["soak"]["calls"], phases=size["soak"]["phases"], log=log)
        log("  " + res.summary())
        results["soak"] = {**res.as_dict(), "measured": {**at, "loadavg_end": loadavg()}}

    if "transports" in only:
        log("transports (in our call path and raw, interleaved) ...")
        at = stamp()
        results["transports"] = transports.measure(**size["transports"], log=log)
        results["transports"]["measured"] = {**at, "loadavg_end": loadavg()}

    results["machine"]["loadavg_end"] = loadavg()
    results["machine"]["bench_minutes"] = round((time.monotonic() - started) / 60, 1)
    command = "python -m bench" + (" --quick" if args.quick else "") + (
        f" --only {args.only}" if args.only else "")
    results["command"] = command
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=1, default=str) + "\n")
    (out_dir / "RESULTS.md").write_text(report.render(results, command))
    log(f"wrote {out_dir / 'RESULTS.md'} and {json_path}")


if __name__ == "__main__":
    main()
