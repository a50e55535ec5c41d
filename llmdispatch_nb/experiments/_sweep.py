"""`sweep()`: every prompt x var row x target x repeat, run concurrently, as one DataFrame.

    df = sweep(["Capital of {country}?"], ["openai:gpt-4o-mini", "claude"],
               vars={"country": ["France", "Peru"]}, n=2, evaluators=[contains("Paris")])

How it runs. The sweep runs on the dispatcher's own event loop, so every run is an
ordinary dispatcher call: routing, retries, breakers, limits, budgets and the ledger all
apply. Runs are pulled from one queue per capped vendor (all its targets interleaved)
by as many workers as the dispatcher's concurrency cap for that vendor (or vendor:model),
so calls never queue inside the dispatcher; a target with no cap gets 8 workers, and
`concurrency` caps the whole sweep. A budget refusal stops the sweep from starting
anything new: runs in flight finish, the refused run and every run not started are
marked "not_run". So every row is "ok", "error" or "not_run", and the ledger holds
exactly the attempts that were made.

Resuming. Every run is tagged "sweep", `sweep:<id>` and `cell:<id>` (see `_grid`). With
`resume=True`, cells that already have an answer in the ledger under this sweep's tag
are not sent again; their rows come from the ledger (`resumed=True`). Deterministic
requests (temperature 0) are also answered by the dispatcher's response cache
(`cached=True`). A ledger that keeps no text (`text="hash"` or `"off"`) cannot give
answers back, so there only the cache resumes.

Costs. `cost_usd` is what the answer costs at list price, wherever it came from (a cache
hit is priced from its token counts), so targets compare fairly; `spent_usd` is what
this call of `sweep()` actually paid (0 for cached and resumed rows).
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import math
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._types import CallRecord, Response, Usage
from ..errors import (
    AllCandidatesFailedError,
    BudgetExceededError,
    ConfigurationError,
)
from ..resilience import money
from ..vendors import adapter_for
from ._evaluators import as_score, named_evaluators
from ._grid import (
    Cell,
    Params,
    build_cells,
    read_prompts,
    read_targets,
    read_vars,
    sweep_id,
    var_names,
)
from ._progress import Progress, make_progress

if TYPE_CHECKING:
    import pandas as pd

    from .._dispatcher import Dispatcher

DEFAULT_WORKERS = 8  # per target with no concurrency cap
RESUMED_AT_ONCE = 16  # resumed rows whose (maybe async) evaluators run at once
ANSWERED = ("ok", "cached")
NOT_RUN = "NotRun"


@dataclass
class _Plan:
    sid: str
    cells: list[Cell]
    evaluators: list[tuple[str, Any]]
    params: Params
    tags: tuple[str, ...]
    run_tag: str | None  # this call's own tag, for its max_cost
    vars: list[str]
    resumed: dict[str, CallRecord] = field(default_factory=dict)
    # schema= / tools= / tool_choice= as sent with every run (rows then carry parsed,
    # valid, validation_errors and tool_calls for the structured evaluators)
    send: dict[str, Any] = field(default_factory=dict)


def sweep(prompts: Any, targets: str | Sequence[str], vars: Any = None, n: int = 1,
          evaluators: Any = None, *, dispatcher: Dispatcher | None = None,
          system: str | None = None, max_tokens: int | None = None,
          temperature: float | None = None, concurrency: int | None = None,
          tags: Sequence[str] = (), progress: bool | Progress = True, resume: bool = True,
          max_cost: float | None = None, name: str | None = None, schema: Any = None,
          tools: Sequence[Any] = (), tool_choice: str | None = None,
          mode: str = "live") -> pd.DataFrame:
    """Run every prompt x var row x target x repeat; one DataFrame row per run.

    `prompts`: a string, a list or dict of strings, or a pandas Series / DataFrame
    column; with `vars` they are `{var}` templates. `vars`: a dict of lists (crossed) or
    rows (a DataFrame, a list of dicts). `targets`: what `Dispatcher.send` accepts.
    `n`: repeats per cell (repeats after the first bypass the response cache, so each is
    a fresh sample). `evaluators`: functions `f(text, row) -> bool | float`, a list or a
    dict name -> function; each becomes a score column, and `score` is their mean.
    `max_cost`: the most (US dollars) this call may spend; reaching it stops the sweep
    like any budget. `name`: a sweep id of your choosing (else one from the prompts,
    vars and parameters), for resuming a sweep whose prompts you edited. `mode="batch"`
    submits the grid to the vendors' batch engines at half price and waits for it (see
    `Dispatcher.batch`: resumable from another kernel, latency is the turnaround). `schema`,
    `tools`, `tool_choice`: sent with every run as `Dispatcher.send` sends them; the rows
    then also have parsed, valid, validation_errors and tool_calls, which `schema_valid()`,
    `field_equals()` and `tool_called()` score (runs with tools are never resumed: the
    ledger keeps their text, not their calls).

    Columns: sweep_id, cell_id, case_id, prompt_id, prompt, one per var, target, repeat,
    status ("ok" | "error" | "not_run"), text, vendor, model, latency_s, ttft_s,
    input_tokens, output_tokens, cost_usd, spent_usd, cached, resumed, attempts,
    call_id, error_type, error, one per evaluator (+ `<name>_error` where one raised), score.
    """
    d = dispatcher if dispatcher is not None else _default_dispatcher()
    if mode != "live":  # mode="batch": the vendors' batch engines, half price (llmdispatch_nb.batch)
        from ..batch._sweep import batch_sweep

        return batch_sweep(d, mode, prompts, targets, vars, n, evaluators, system=system,
                           max_tokens=max_tokens, temperature=temperature, tags=tags,
                           progress=progress, max_cost=max_cost, name=name,
                           structured=(schema, tools, tool_choice))
    plan = _prepare(d, prompts, targets, vars, n, evaluators, system, max_tokens,
                    temperature, tags, resume, name, max_cost,
                    _structured(schema, tools, tool_choice))
    rows = d.run(_execute(d, plan, concurrency, progress, max_cost))
    return _frame(rows, plan)


async def asweep(prompts: Any, targets: str | Sequence[str], vars: Any = None, n: int = 1,
                 evaluators: Any = None, *, dispatcher: Dispatcher | None = None,
                 system: str | None = None, max_tokens: int | None = None,
                 temperature: float | None = None, concurrency: int | None = None,
                 tags: Sequence[str] = (), progress: bool | Progress = True,
                 resume: bool = True, max_cost: float | None = None,
                 name: str | None = None, schema: Any = None, tools: Sequence[Any] = (),
                 tool_choice: str | None = None) -> pd.DataFrame:
    """`sweep` for async code: `df = await asweep(...)` (same arguments)."""
    d = dispatcher if dispatcher is not None else _default_dispatcher()
    plan = await asyncio.to_thread(_prepare, d, prompts, targets, vars, n, evaluators, system,
                                   max_tokens, temperature, tags, resume, name, max_cost,
                                   _structured(schema, tools, tool_choice))
    rows = await d.arun(_execute(d, plan, concurrency, progress, max_cost))
    return _frame(rows, plan)


def _default_dispatcher() -> Dispatcher:
    from .. import default

    return default()


# -- before anything is sent ---------------------------------------------------------------


def _prepare(d: Dispatcher, prompts: Any, targets: str | Sequence[str], vars: Any, n: int,
             evaluators: Any, system: str | None, max_tokens: int | None,
             temperature: float | None, tags: Sequence[str], resume: bool,
             name: str | None, max_cost: float | None,
             send: dict[str, Any] | None = None) -> _Plan:
    specs = read_prompts(prompts)
    var_rows = read_vars(vars)
    target_list = read_targets(targets)
    for t in target_list:
        d.resolver.resolve(t)  # a misspelt target or a missing key fails now, not 10,000 times
    params = Params(system, max_tokens, temperature)
    sid = name or sweep_id(specs, var_rows, params)
    if send and not name:  # the same prompts with a schema or tools are another sweep
        what = [send["schema"].json_schema if send.get("schema") else None,
                [[t.name, t.parameters] for t in send.get("tools", ())], send.get("tool_choice")]
        canonical = json.dumps(what, sort_keys=True, default=str)
        sid += "-" + hashlib.sha256(canonical.encode()).hexdigest()[:8]
    cells = build_cells(specs, var_rows, target_list, n, params)
    plan = _Plan(sid, cells, named_evaluators(evaluators), params,
                 tuple(str(t) for t in ([tags] if isinstance(tags, str) else tags)),
                 f"sweeprun:{uuid.uuid4().hex[:12]}" if max_cost is not None else None,
                 var_names(cells), send=dict(send or {}))
    if resume and not plan.send.get("tools"):
        plan.resumed = _answered_cells(d, f"sweep:{sid}", {c.cell_id for c in cells})
    return plan


def _answered_cells(d: Dispatcher, sweep_tag: str, wanted: set[str]) -> dict[str, CallRecord]:
    """The latest answer the ledger holds for each cell of this sweep (judge calls aside)."""
    ledger = d.ledger
    if getattr(ledger, "text", "full") != "full":
        return {}  # the ledger keeps no answer text to give back; the cache may still serve
    source = getattr(ledger, "records", None)
    if callable(source):
        records = source(tags=sweep_tag)
    else:
        if hasattr(ledger, "flush"):
            ledger.flush()
        records = [r for r in list(source or ()) if sweep_tag in r.tags]
    found: dict[str, CallRecord] = {}
    for r in records:  # oldest first: a later answer replaces an earlier one
        if r.status not in ANSWERED or r.response is None or "judge" in r.tags:
            continue
        for t in r.tags:
            if t.startswith("cell:") and t[5:] in wanted:
                found[t[5:]] = r
    return found


# -- running -------------------------------------------------------------------------------


class _Lane:
    """Runs that share one concurrency cap, and the number of workers that pull them."""

    def __init__(self, width: int) -> None:
        self.width = width
        self.queue: deque[Cell] = deque()


def _lanes(d: Dispatcher, cells: Sequence[Cell], concurrency: int | None) -> list[_Lane]:
    """One lane per capped vendor (or capped vendor:model), else one per target.

    A lane is exactly as wide as its cap, so the sweep never queues calls inside the
    dispatcher's limiter: a queued call already holds its budget reservation, and, more
    costly, once anyone waits there every call joins the queue and is let in one at a
    time, a few event-loop turns each; on a busy loop that left half the slots idle in the
    bench (bench/sweep_bench.py), where a quarter more workers than slots (to cover runs
    sleeping in a retry backoff) was tried. A slot idle during a backoff costs less."""
    limits = d.limiter.limits
    lanes: dict[str, _Lane] = {}
    by_target: dict[str, _Lane] = {}
    for cell in cells:
        lane = by_target.get(cell.target)
        if lane is None:
            first = d.resolver.resolve(cell.target)[0]
            key, width = f"target:{cell.target}", DEFAULT_WORKERS
            for capped in (first.vendor, first.key):
                lim = limits.get(capped)
                if lim is not None and lim.concurrent is not None:
                    key, width = capped, lim.concurrent
                    break
            if key in lanes:
                lane = lanes[key]
            else:
                lane = lanes[key] = _Lane(width if concurrency is None
                                          else min(width, concurrency))
            by_target[cell.target] = lane
        lane.queue.append(cell)
    return list(lanes.values())


async def _execute(d: Dispatcher, plan: _Plan, concurrency: int | None,
                   show: bool | Progress, max_cost: float | None) -> list[dict[str, Any]]:
    if concurrency is not None and (not isinstance(concurrency, int) or concurrency < 1):
        raise ConfigurationError(f"concurrency must be a whole number >= 1, got {concurrency!r}")
    if plan.run_tag is not None:
        d.budget.set_tag_limit(plan.run_tag, max_cost)
    rows: list[dict[str, Any] | None] = [None] * len(plan.cells)
    progress = make_progress(show, len(plan.cells), f"sweep {plan.sid}")
    gate = asyncio.Semaphore(concurrency) if concurrency is not None else None
    stop: list[str] = []  # the budget's refusal, once one came
    to_send: list[Cell] = []
    resumed: list[Cell] = []
    for cell in plan.cells:
        if cell.template_error is not None:
            rows[cell.index] = _error_row(plan, cell, *cell.template_error)
            progress.add("error")
        elif cell.cell_id in plan.resumed:
            resumed.append(cell)
        else:
            to_send.append(cell)
    at_once = asyncio.Semaphore(RESUMED_AT_ONCE)

    async def resume(cell: Cell) -> None:
        async with at_once:
            rows[cell.index] = await _resumed_row(d, plan, cell, plan.resumed[cell.cell_id])
        progress.add("ok")

    async def worker(lane: _Lane) -> None:
        while lane.queue and not stop:
            cell = lane.queue.popleft()
            if gate is None:
                row = await _run(d, plan, cell, stop)
            else:
                async with gate:
                    row = await _run(d, plan, cell, stop) if not stop else _not_run_row(plan, cell, stop)
            rows[cell.index] = row
            progress.add(row["status"], row["spent_usd"])

    try:
        await asyncio.gather(*(resume(cell) for cell in resumed))
        lanes = _lanes(d, to_send, concurrency)
        await asyncio.gather(*(worker(lane) for lane in lanes for _ in range(lane.width)))
        for lane in lanes:
            for cell in lane.queue:  # left when the budget stopped the sweep
                rows[cell.index] = _not_run_row(plan, cell, stop)
                progress.add("not_run")
    finally:
        if plan.run_tag is not None:
            d.budget.set_tag_limit(plan.run_tag, None)
        progress.close()
    assert all(r is not None for r in rows)
    return rows  # type: ignore[return-value]


def _tags(plan: _Plan, cell: Cell, *more: str) -> tuple[str, ...]:
    extra = (plan.run_tag,) if plan.run_tag is not None else ()
    return (*plan.tags, *more, f"sweep:{plan.sid}", f"cell:{cell.cell_id}", *extra)


def _budget_refusal(exc: BaseException) -> bool:
    if isinstance(exc, BudgetExceededError):
        return True
    return isinstance(exc, AllCandidatesFailedError) and bool(exc.errors) and all(
        isinstance(e, BudgetExceededError) for e in exc.errors)


async def _run(d: Dispatcher, plan: _Plan, cell: Cell, stop: list[str]) -> dict[str, Any]:
    tags = _tags(plan, cell, "sweep")
    p = plan.params
    try:
        resp = await d.asend(cell.prompt, cell.target, system=p.system, max_tokens=p.max_tokens,
                             temperature=p.temperature, tags=tags,
                             cache=None if cell.repeat == 0 else False, **plan.send)
    except Exception as exc:
        if _budget_refusal(exc):
            if not stop:
                stop.append(f"{type(exc).__name__}: {exc}")
            row = _base_row(plan, cell, "not_run")
            row.update(error_type=type(exc).__name__, error=str(exc))
            return row
        # Anything else is one failed run, kept as data; the sweep goes on.
        return _error_row(plan, cell, type(exc).__name__, str(exc))
    row = _answer_row(d, plan, cell, resp)
    await _evaluate(d, plan, cell, row)
    return row


async def _evaluate(d: Dispatcher, plan: _Plan, cell: Cell, row: dict[str, Any]) -> None:
    text = row["text"]
    if not plan.evaluators or text is None:
        return
    view = dict(row)  # evaluators see the run, not the scores before theirs
    for name, f in plan.evaluators:
        try:
            if hasattr(f, "ascore"):
                value = await f.ascore(text, view, dispatcher=d, tags=_tags(plan, cell))
            else:
                value = f(text, view)
                if inspect.isawaitable(value):
                    value = await value
            row[name] = as_score(value)
        except Exception as exc:  # an evaluator's failure is data, not the sweep's end
            row[name] = None
            row[f"{name}_error"] = f"{type(exc).__name__}: {exc}"


# -- rows ----------------------------------------------------------------------------------


def _base_row(plan: _Plan, cell: Cell, status: str) -> dict[str, Any]:
    row: dict[str, Any] = {
        "sweep_id": plan.sid, "cell_id": cell.cell_id, "case_id": cell.case_id,
        "prompt_id": cell.prompt_id,
        "prompt": cell.prompt if cell.prompt is not None else cell.template,
    }
    for k in plan.vars:
        row[k] = cell.vars.get(k)
    row.update(target=cell.target, repeat=cell.repeat, status=status, text=None, vendor=None,
               model=None, latency_s=None, ttft_s=None, input_tokens=None, output_tokens=None,
               cost_usd=None, spent_usd=0.0, cached=False, resumed=False, attempts=0,
               call_id=None, error_type=None, error=None)
    if plan.send:
        row.update(parsed=None, valid=None, validation_errors=None, tool_calls=None)
    return row


def _error_row(plan: _Plan, cell: Cell, error_type: str, message: str) -> dict[str, Any]:
    row = _base_row(plan, cell, "error")
    row.update(error_type=error_type, error=message)
    return row


def _not_run_row(plan: _Plan, cell: Cell, stop: Sequence[str]) -> dict[str, Any]:
    row = _base_row(plan, cell, "not_run")
    why = stop[0] if stop else "the sweep stopped"
    row.update(error_type=NOT_RUN, error=f"not sent: the sweep stopped when the budget refused "
                                         f"a run ({why[:300]})")
    return row


def _answer_row(d: Dispatcher, plan: _Plan, cell: Cell, resp: Response) -> dict[str, Any]:
    row = _base_row(plan, cell, "ok")
    spent = resp.cost.usd if not resp.cached else 0.0
    cost = resp.cost.usd if not resp.cached else _list_cost(d, resp.vendor, resp.model_requested,
                                                             resp.usage)
    row.update(text=resp.text, vendor=resp.vendor, model=resp.model, latency_s=resp.latency_s,
               ttft_s=resp.ttft_s, input_tokens=resp.usage.input_tokens,
               output_tokens=resp.usage.output_tokens, cost_usd=cost, spent_usd=spent,
               cached=resp.cached,
               attempts=sum(1 for a in resp.attempts if a.status not in ("skipped",)),
               call_id=resp.call_id)
    if plan.send:
        row.update(parsed=resp.parsed, valid=resp.valid,
                   validation_errors=list(resp.validation_errors),
                   tool_calls=[{"id": c.id, "name": c.name, "arguments": dict(c.arguments)}
                               for c in resp.tool_calls])
    return row


async def _resumed_row(d: Dispatcher, plan: _Plan, cell: Cell, r: CallRecord) -> dict[str, Any]:
    row = _base_row(plan, cell, "ok")
    cost = r.cost_usd
    if r.status == "cached" or r.cache_hit:
        cost = _list_cost(d, r.vendor, r.model_requested, Usage(
            input_tokens=r.input_tokens or 0, output_tokens=r.output_tokens or 0,
            cache_read_tokens=r.cache_read_tokens or 0,
            cache_write_tokens=r.cache_write_tokens or 0,
            reasoning_tokens=r.reasoning_tokens or 0))
    row.update(text=r.response, vendor=r.vendor, model=r.model_served or r.model_requested,
               latency_s=r.latency_s, ttft_s=r.ttft_s, input_tokens=r.input_tokens,
               output_tokens=r.output_tokens, cost_usd=cost, spent_usd=0.0,
               cached=r.status == "cached", resumed=True, attempts=0, call_id=r.call_id)
    if plan.send.get("schema") is not None and r.response is not None:
        from .._schema import read_answer

        parsed, valid, errors = read_answer(plan.send["schema"], r.response)
        row.update(parsed=parsed, valid=valid, validation_errors=list(errors))
    await _evaluate(d, plan, cell, row)
    return row


def _list_cost(d: Dispatcher, vendor: str, model: str, usage: Usage) -> float | None:
    """What these tokens cost at list price (a cache hit is billed $0, but a comparison of
    targets needs what the answer would cost)."""
    ep = d.endpoints.get(vendor)
    if ep is None:
        return None
    try:
        priced = adapter_for(ep.kind).pricing_model(model, ep)
        return d.prices.cost(ep.name, priced, usage, kind=ep.kind, free=not ep.priced).usd
    except Exception:  # pricing is best effort here; unknown is None, never a silent $0
        return None


# -- the DataFrame -------------------------------------------------------------------------


def _frame(rows: list[dict[str, Any]], plan: _Plan) -> pd.DataFrame:
    import pandas as pd

    scores = [name for name, _ in plan.evaluators]
    errors = [f"{n}_error" for n in scores if any(f"{n}_error" in r for r in rows)]
    extra = set(scores) | {f"{n}_error" for n in scores}
    columns = [c for c in rows[0] if c not in extra] + scores + errors
    df = pd.DataFrame.from_records(rows, columns=columns)
    for col in ("latency_s", "ttft_s", "cost_usd", "spent_usd", *scores):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    for col in ("input_tokens", "output_tokens"):
        df[col] = df[col].astype("Int64")
    for col in ("cached", "resumed"):
        df[col] = df[col].astype(bool)
    df["repeat"] = df["repeat"].astype("int64")
    df["attempts"] = df["attempts"].astype("int64")
    if scores and "score" not in scores:
        df["score"] = df[scores].mean(axis=1, skipna=True)
    df.attrs.update(sweep_id=plan.sid, scores=scores, vars=list(plan.vars),
                    spent_usd=float(df["spent_usd"].sum()) if len(df) else 0.0)
    return df


def describe(df: pd.DataFrame) -> str:
    """One line: runs by status, spend, and the sweep id (for notebooks and logs)."""
    counts = df["status"].value_counts().to_dict()
    parts = [f"{counts.get(s, 0)} {s}" for s in ("ok", "error", "not_run")]
    spent = float(df["spent_usd"].sum()) if "spent_usd" in df else math.nan
    return (f"sweep {df.attrs.get('sweep_id', '?')}: {len(df)} runs ({', '.join(parts)}); "
            f"{money(spent)} spent")


def _structured(schema: Any, tools: Sequence[Any], tool_choice: str | None) -> dict[str, Any]:
    """The schema and tools as a request holds them, checked once before any run."""
    if schema is None and not tools and tool_choice is None:
        return {}
    from .._types import Request

    probe = Request("probe", schema=schema, tools=tools, tool_choice=tool_choice)
    out: dict[str, Any] = {}
    if probe.schema is not None:
        out["schema"] = probe.schema
    if probe.tools:
        out["tools"] = probe.tools
    if probe.tool_choice is not None:
        out["tool_choice"] = probe.tool_choice
    return out
