"""Submitting work as batches: the grid (or a list of requests) becomes items, items are
split per vendor, model and per-batch limits into parts, the worst case is reserved from
the budget, the job is stored, then each part is submitted.

Every item carries what its result needs later, in another process if need be: its
custom id, endpoint and model, the vendor body as it was sent (for `retry_failed`), the
prompt and parameters the ledger keeps, and its grid cell (the sweep's row).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .._call import request_params
from .._types import Request, estimate_tokens
from ..errors import ConfigurationError
from ..routing._groups import prompt_token_bound
from ._vendor import BATCH_DISCOUNT, RUNNING, batch_vendor

if TYPE_CHECKING:
    from .._dispatcher import Dispatcher

PENDING = "pending"  # a part planned but not yet accepted by the vendor


def new_job_id() -> str:
    return "bj_" + uuid.uuid4().hex[:16]


def grid_items(d: Dispatcher, prompts: Any, targets: Any, vars: Any, n: int,
               system: str | None, max_tokens: int | None, temperature: float | None,
               tags: Sequence[str], name: str | None) -> tuple[str, list[dict[str, Any]]]:
    """A sweep's grid (the same cells and ids a live sweep makes) as batch items."""
    from ..experiments._grid import (
        Params,
        build_cells,
        read_prompts,
        read_targets,
        read_vars,
        sweep_id,
    )

    specs = read_prompts(prompts)
    var_rows = read_vars(vars)
    target_list = read_targets(targets)
    params = Params(system, max_tokens, temperature)
    sid = name or sweep_id(specs, var_rows, params)
    items: list[dict[str, Any]] = []
    seen: dict[Any, Any] = {}
    for cell in build_cells(specs, var_rows, target_list, n, params):
        cell_tags = (*tags, "sweep", f"sweep:{sid}", f"cell:{cell.cell_id}")
        req = None
        if cell.prompt is not None:
            req = Request(cell.prompt, cell.target, system=system, max_tokens=max_tokens,
                          temperature=temperature, tags=cell_tags)
        items.append(_item(d, len(items), req, cell.target, {
            "prompt_id": cell.prompt_id, "template": cell.template, "vars": dict(cell.vars),
            "repeat": cell.repeat, "prompt": cell.prompt, "cell_id": cell.cell_id,
            "case_id": cell.case_id, "template_error": cell.template_error}, seen))
    return sid, items


def request_items(d: Dispatcher, requests: Sequence[Any], targets: Any,
                  tags: Sequence[str], params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Plain requests (strings or `Request`s) x targets as batch items."""
    target_list = [targets] if isinstance(targets, str) or targets is None else list(targets)
    items: list[dict[str, Any]] = []
    seen: dict[Any, Any] = {}
    for i, r in enumerate(requests):
        for t in target_list:
            req = d.request(r, None, **params) if not isinstance(r, Request) else r
            req = req.with_target(t) if t is not None else req
            req = replace(req, tags=(*req.tags, *tags))
            items.append(_item(d, len(items), req, req.target or "", {
                "prompt_id": f"r{i}", "template": req.prompt_text, "vars": {}, "repeat": 0,
                "prompt": req.prompt_text, "cell_id": f"r{i}:{t}", "case_id": f"r{i}",
                "template_error": None}, seen))
    return items


def _item(d: Dispatcher, index: int, req: Request | None, target: str, cell: dict[str, Any],
          seen: dict[Any, Any] | None = None) -> dict[str, Any]:
    """One batch item. `seen` keeps what is the same for every request of a target (its
    candidate, its answer cap and prices), worked out once rather than once a request."""
    item: dict[str, Any] = {"cid": f"r{index:06d}", "index": index, "target": target,
                            "cell": cell, "round": 0, "body": None}
    if req is None:
        return item
    seen = {} if seen is None else seen
    key = (target, req.max_tokens, req.reasoning)
    if key not in seen:
        cand = d.resolver.resolve(target)[0]  # a misspelt target fails here, once
        worst = d.router.worst_case(req, cand)
        seen[key] = (cand, batch_vendor(cand.endpoint.kind), worst)
    cand, vendor, worst = seen[key]
    ep = cand.endpoint
    usd = None
    if worst.input_price is not None and worst.output_price is not None:
        usd = (prompt_token_bound(req, cand) * worst.input_price
               + worst.output_tokens * worst.output_price) / 1e6 * BATCH_DISCOUNT
    item.update(endpoint=ep.name, kind=ep.kind, model=cand.model,
                body=vendor.body(req, cand.model, ep), prompt=req.prompt_text,
                params=request_params(req), tags=list(req.tags), worst_usd=usd)
    return item


def plan_parts(items: Sequence[dict[str, Any]], max_per_batch: int | None = None,
               round_: int = 0, max_tokens_per_batch: int | None = None) -> list[dict[str, Any]]:
    """Items grouped per endpoint and model (a batch serves one model), each group cut by
    the vendor's request count and input size limits (or `max_per_batch`), and by
    `max_tokens_per_batch` prompt tokens (an account's enqueued-token limit, which
    depends on its tier: OpenAI and Azure count a batch's prompt tokens against it)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for it in items:
        if it.get("body") is not None:
            groups.setdefault((it["endpoint"], it["model"]), []).append(it)
    parts: list[dict[str, Any]] = []
    for (endpoint, model), group in groups.items():
        vendor = batch_vendor(group[0]["kind"])
        cap = min(vendor.max_requests, max_per_batch or vendor.max_requests)
        current: list[str] = []
        size = tokens = 0
        for it in group:
            line = vendor.line_size(it["cid"], it["body"])
            need = estimate_tokens(it.get("prompt") or "")
            if current and (len(current) >= cap or size + line > vendor.max_bytes or (
                    max_tokens_per_batch is not None and tokens + need > max_tokens_per_batch)):
                parts.append(_part(endpoint, group[0]["kind"], model, current, round_))
                current, size, tokens = [], 0, 0
            current.append(it["cid"])
            size += line
            tokens += need
        if current:
            parts.append(_part(endpoint, group[0]["kind"], model, current, round_))
    return parts


def _part(endpoint: str, kind: str, model: str, cids: list[str], round_: int) -> dict[str, Any]:
    return {"endpoint": endpoint, "kind": kind, "model": model, "custom_ids": cids,
            "round": round_, "state": PENDING, "status": PENDING, "remote_id": None,
            "submitted_at": None, "ended_at": None, "counts": {}, "collected": False,
            "error": None}


def reserve(d: Dispatcher, items: Sequence[dict[str, Any]], tags: Sequence[str],
            max_cost: float | None) -> Any:
    """Set aside the batch's worst case (every prompt plus its answer cap, at the batch
    price) before anything is sent; a batch the budget cannot hold is refused whole."""
    sent = [it for it in items if it.get("body") is not None]
    unknown = any(it.get("worst_usd") is None for it in sent)
    amount = None if unknown else sum(it["worst_usd"] for it in sent)
    return d.budget.reserve(amount, tags, max_cost, what=f"a batch of {len(sent)} requests")


async def submit_parts(d: Dispatcher, job_id: str, parts: list[dict[str, Any]],
                       items_by_cid: Mapping[str, dict[str, Any]], send_for: Any,
                       on_part: Any) -> None:
    """Submit each pending part; `on_part()` stores the job after each one is accepted."""
    for i, part in enumerate(parts):
        if part["state"] != PENDING:
            continue
        ep = d.endpoints[part["endpoint"]]
        vendor = batch_vendor(part["kind"])
        lines = [(cid, items_by_cid[cid]["body"]) for cid in part["custom_ids"]]
        try:
            fields = await vendor.submit(send_for(ep), ep, part["model"], lines,
                                         {"llmdispatch_job": job_id, "part": str(i)})
        except Exception as exc:
            part.update(state="ended", status="not_submitted", collected=False,
                        error=f"{type(exc).__name__}: {exc}"[:500], submitted_at=time.time(),
                        ended_at=time.time())
            on_part()
            continue
        part.update(fields)
        part["submitted_at"] = time.time()
        if part.get("state") not in (RUNNING, "ended"):
            part["state"] = RUNNING
        on_part()


def check_grid_args(requests_or_prompts: Any) -> None:
    if requests_or_prompts is None:
        raise ConfigurationError("batch() needs prompts (a string, a list, a Series or "
                                 "DataFrame column) or a list of Requests")
