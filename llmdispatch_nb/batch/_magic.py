"""`%llm batch ...`: submit a sweep to the vendors' batch engines, list jobs, look at one,
wait for it, read its results, cancel it. The notebook floor only calls `handle`.

    %llm batch                                  the jobs in the ledger (any kernel's)
    %llm batch submit PROMPTS TARGET... [-m N] [-o NAME]
                                                PROMPTS: a notebook variable (a list, a
                                                Series, a string); the job is kept in NAME
                                                (default _batch)
    %llm batch status|wait|cancel [JOB]         JOB: an id or a sweep name (default: newest)
    %llm batch results [JOB] [-o NAME]          the sweep-shaped DataFrame
"""

from __future__ import annotations

from typing import Any

USAGE = ("batch [list] | batch submit PROMPTS TARGET... [-m N] [-o NAME] | "
         "batch status|wait|cancel|results [JOB] [-o NAME]")
ACTIONS = ("list", "submit", "status", "wait", "cancel", "results")


def _jobs_table(jobs: Any) -> Any:
    import pandas as pd

    return pd.DataFrame([{
        "job": j.id, "name": j.name, "state": j.state, "requests": j.total,
        "batches": len(j.parts),
        "vendors": ", ".join(sorted({p["endpoint"] for p in j.parts})),
        "created": pd.Timestamp(j.created, unit="s", tz="UTC").floor("s")} for j in jobs],
        columns=["job", "name", "state", "requests", "batches", "vendors", "created"])


def _status_table(status: dict[str, Any]) -> Any:
    import pandas as pd

    return pd.DataFrame([{
        "vendor": b["vendor"], "model": b["model"], "batch_id": b["batch_id"],
        "status": b["status"], "requests": b["requests"],
        "completed": b["counts"].get("completed"), "failed": b["counts"].get("failed"),
        "collected": b["collected"], "error": b["error"]} for b in status["batches"]])


def handle(d: Any, args: list[str], user_ns: dict[str, Any] | None, usage_error: Any,
           cell_error: Any, show: Any) -> None:
    """One `%llm batch` line. `usage_error`/`cell_error` are the notebook's one-line error
    types; `show` displays an object; `user_ns` is where `-o NAME` keeps results."""
    keep: str | None = None
    if "-o" in args:
        at = args.index("-o")
        if at + 1 >= len(args) or not args[at + 1].isidentifier():
            raise usage_error(f"usage: %llm {USAGE} (NAME: a Python name)")
        keep = args[at + 1]
        del args[at:at + 2]
    action = args.pop(0).lower() if args else "list"
    if action not in ACTIONS:
        raise usage_error(f"usage: %llm {USAGE}")
    if action == "list":
        jobs = d.batches()
        if not jobs:
            raise cell_error("no batch jobs in this ledger yet: %llm batch submit PROMPTS TARGET")
        show(_jobs_table(jobs))
        return
    if action == "submit":
        _submit(d, args, user_ns, keep or "_batch", usage_error, cell_error)
        return
    if len(args) > 1:
        raise usage_error(f"usage: %llm {USAGE}")
    job = _find(d, args[0] if args else None, cell_error)
    if action == "status":
        status = job.status()
        print(f"job {job.id} ({job.name or 'unnamed'}): {status['state']}, "
              f"{status['requests']} requests in {len(status['batches'])} vendor batches")
        show(_status_table(status))
    elif action == "wait":
        job.wait()
        print(f"job {job.id}: {job.state}")
    elif action == "cancel":
        job.cancel()
        print(f"job {job.id}: cancel asked of every running batch; answers made so far "
              f"are still collected")
    else:
        df = job.results()
        if user_ns is not None:
            user_ns[keep or "_batch_results"] = df
        show(df)


def _find(d: Any, key: str | None, cell_error: Any) -> Any:
    jobs = d.batches()
    if not jobs:
        raise cell_error("no batch jobs in this ledger yet: %llm batch submit PROMPTS TARGET")
    if key is None:
        return jobs[0]
    try:
        return jobs[key]
    except KeyError:
        raise cell_error(f"no batch job {key!r} in this ledger; %llm batch lists them") from None


def _submit(d: Any, args: list[str], user_ns: dict[str, Any] | None, keep: str,
            usage_error: Any, cell_error: Any) -> None:
    max_tokens = None
    if "-m" in args:
        at = args.index("-m")
        try:
            max_tokens = int(args[at + 1])
        except (IndexError, ValueError):
            raise usage_error("%llm batch submit: -m takes a whole number of tokens") from None
        del args[at:at + 2]
    if len(args) < 2:
        raise usage_error(f"usage: %llm {USAGE}")
    name, targets = args[0], args[1:]
    ns = user_ns or {}
    if name not in ns:
        raise cell_error(f"%llm batch submit: no variable {name!r} in the notebook (it names "
                         f"the prompts: a list, a Series or a string)")
    job = d.batch(ns[name], targets, max_tokens=max_tokens)
    if user_ns is not None:
        user_ns[keep] = job
    print(f"submitted job {job.id}: {job.total} requests in {len(job.parts)} vendor batches "
          f"({', '.join(sorted({p['endpoint'] for p in job.parts}))}); kept in {keep}. "
          f"%llm batch wait, then %llm batch results")
