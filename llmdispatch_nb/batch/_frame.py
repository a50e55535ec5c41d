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
