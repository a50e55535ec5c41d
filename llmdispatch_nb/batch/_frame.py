"""A batch job's results as the DataFrame a live sweep gives, built from the ledger.

The ledger is the one source: rows come from the job's newest attempt per request, so
the frame is the same in the kernel that submitted the job and in one that resumed it.
Cells whose vendor batch has not ended are 'pending' rows; evaluators run on answers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._collect import call_id

if TYPE_CHECKING:
    import pandas as pd

    from ._job import BatchJob

PENDING_ROW = "pending"


def job_frame(job: BatchJob, evaluators: Any) -> pd.DataFrame:
    from ..experiments._evaluators import named_evaluators
    from ..experiments._grid import Cell, Params
    from ..experiments._sweep import _base_row, _evaluate, _frame, _Plan

    items = job.items
    newest = job.newest_records()
    first = next((it for it in items if it.get("params") is not None), None)
    p = (first or {}).get("params") or {}
    params = Params(p.get("system"), p.get("max_tokens"), p.get("temperature"))
    cells = [Cell(it["index"], c["prompt_id"], c["template"], c["vars"], it["target"],
                  c["repeat"], c["prompt"], tuple(c["template_error"]) if c["template_error"]
                  else None, c["cell_id"], c["case_id"])
             for it in items for c in [it["cell"]]]
    var_names: dict[str, None] = {}
    for c in cells:
        for k in c.vars:
            var_names.setdefault(k, None)
    plan = _Plan(job.name or job.id, cells, named_evaluators(evaluators), params, (), None,
                 list(var_names))
    d = job.dispatcher
    rows: list[dict[str, Any]] = []
    for it, cell in zip(items, cells, strict=True):
        r = newest.get(call_id(job.id, it["cid"]))
        if cell.template_error is not None:
            row = _base_row(plan, cell, "error")
            row.update(error_type=cell.template_error[0], error=cell.template_error[1])
        elif r is None:
            row = _base_row(plan, cell, "error")
            row.update(status=PENDING_ROW, error_type="Pending",
                       error="its vendor batch has not ended (job.wait() collects it)")
        elif r.status == "ok":
            row = _base_row(plan, cell, "ok")
            row.update(text=r.response, vendor=r.vendor, model=r.model_served or r.model_requested,
                       latency_s=r.latency_s, input_tokens=r.input_tokens,
                       output_tokens=r.output_tokens, cost_usd=r.cost_usd,
                       spent_usd=r.cost_usd or 0.0, attempts=r.attempt, call_id=r.call_id)
        else:
            row = _base_row(plan, cell, "error")
            row.update(vendor=r.vendor, model=r.model_requested, latency_s=r.latency_s,
                       attempts=r.attempt, call_id=r.call_id, error_type=r.error_class,
                       error=r.error_message)
        rows.append(row)

    async def evaluate() -> None:
        for cell, row in zip(cells, rows, strict=True):
            if row["status"] == "ok":
                await _evaluate(d, plan, cell, row)

    if plan.evaluators:
        d.run(evaluate())
    df = _frame(rows, plan)
    df.attrs.update(batch_job=job.id, mode="batch")
    return df


def cost_table(job: BatchJob) -> pd.DataFrame:
    """Per vendor and model: answers, tokens, what they cost at the batch price and what
    the same tokens cost live (list price), and what the batch saved."""
    import pandas as pd

    from .._types import Usage

    d = job.dispatcher
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for r in job.newest_records().values():
        if r.status != "ok":
            continue
        row = rows.setdefault((r.vendor, r.model_requested), {
            "vendor": r.vendor, "model": r.model_requested, "answers": 0, "input_tokens": 0,
            "output_tokens": 0, "batch_usd": 0.0, "live_usd": 0.0})
        row["answers"] += 1
        row["input_tokens"] += r.input_tokens or 0
        row["output_tokens"] += r.output_tokens or 0
        row["batch_usd"] += r.cost_usd or 0.0
        ep = d.endpoints.get(r.vendor)
        live = None if ep is None else d._price(ep, r.model_requested, Usage(
            input_tokens=r.input_tokens or 0, output_tokens=r.output_tokens or 0,
            cache_read_tokens=r.cache_read_tokens or 0,
            cache_write_tokens=r.cache_write_tokens or 0)).usd
        row["live_usd"] += live or 0.0
    df = pd.DataFrame(list(rows.values()), columns=[
        "vendor", "model", "answers", "input_tokens", "output_tokens", "batch_usd", "live_usd"])
    df["saved_usd"] = df["live_usd"] - df["batch_usd"]
    return df
