"""A finished batch's outcomes become ledger attempts, each exactly once.

Every request of a job is one call (`call_id` = job id + custom id); the n-th time it is
sent (`retry_failed`) is its attempt n. Before writing, the ledger is asked which of the
job's attempts it already holds, and only the missing ones are written, so a kernel that
died after writing some rows (or all of them, before marking the part collected) and a
second kernel collecting the same job never write a row twice.

A row says it came from a batch (`route_reason` "batch <vendor> <batch id>", tag
"batch"), costs the batch price (list price x BATCH_DISCOUNT, price_source "... batch
50%"), and its latency is the batch's turnaround (submitted to ended), which stats and
charts keep apart from live latency (see `is_batch`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import httpx

from .._types import CallRecord, Usage, estimate_tokens
from ..vendors import adapter_for
from ._vendor import BATCH_DISCOUNT, BatchRequestError, Outcome

if TYPE_CHECKING:
    from .._dispatcher import Dispatcher

ROUTE_PREFIX = "batch"


def is_batch(record: Any) -> bool:
    """An attempt answered by a vendor's batch engine (its latency is a turnaround)."""
    reason = getattr(record, "route_reason", None)
    return isinstance(reason, str) and reason.startswith(ROUTE_PREFIX + " ")


def call_id(job_id: str, cid: str) -> str:
    return f"{job_id}-{cid}"


def recorded(d: Dispatcher, job_id: str) -> dict[tuple[str, int], CallRecord]:
    """The job's attempts the ledger holds, by (call id, attempt)."""
    from ..ledger import Ledger
    from ..ledger._batches import job_records

    ledger = d.ledger
    if isinstance(ledger, Ledger):
        return {(r.call_id, r.attempt): r for r in job_records(ledger, job_id)}
    if hasattr(ledger, "flush"):
        ledger.flush()
    tag = f"batch:{job_id}"
    if callable(getattr(ledger, "records", None)):
        found = ledger.records(tags=tag)
    else:
        found = [r for r in getattr(ledger, "records", []) if tag in r.tags]
    return {(r.call_id, r.attempt): r for r in found}


def records_for(d: Dispatcher, job_id: str, session: str | None, part: Mapping[str, Any],
                outcomes: Mapping[str, Outcome], items: Mapping[str, dict[str, Any]],
                have: Mapping[tuple[str, int], CallRecord]) -> list[CallRecord]:
    """The part's attempts not yet in the ledger."""
    ep = d.endpoints.get(part["endpoint"])
    out: list[CallRecord] = []
    submitted = part.get("submitted_at") or 0.0
    # The turnaround by the vendor's own clock (created to ended), not by when we looked.
    began, ended = part.get("created_at") or submitted, part.get("ended_at")
    turnaround = max(0.0, ended - began) if ended and began else None
    reason = f"{ROUTE_PREFIX} {part['kind']} {part.get('remote_id') or 'not submitted'}"
    attempt = int(part.get("round", 0)) + 1
    dummy = httpx.Request("POST", ep.base_url if ep is not None else "http://batch.invalid")
    for cid in part["custom_ids"]:
        key = (call_id(job_id, cid), attempt)
        if key in have:
            continue
        item = items[cid]
        outcome = outcomes.get(cid) or Outcome(
            "failed", message=part.get("error") or "the batch returned no result for this request")
        base = {"call_id": key[0], "attempt": attempt, "timestamp": submitted,
                "vendor": part["endpoint"], "model_requested": part["model"],
                "session": session, "route_reason": reason, "latency_s": turnaround,
                "simulated": bool(ep is not None and ep.simulated),
                "tags": (*item.get("tags", ()), "batch", f"batch:{job_id}"),
                "params": item.get("params") or {}, "prompt": item.get("prompt"),
                "retried": attempt > 1}
        out.append(_record(d, ep, part, outcome, base, dummy))
    return out


def _record(d: Dispatcher, ep: Any, part: Mapping[str, Any], o: Outcome,
            base: dict[str, Any], dummy: httpx.Request) -> CallRecord:
    if o.kind == "ok" and ep is not None:
        adapter = adapter_for(ep.kind)
        try:
            # The live adapter reads the answer, as it reads a live one (one request object
            # for the part: building one per answer was a fifth of collecting).
            parsed = adapter.parse_reply(_answer(o.status or 200, o.body, dummy), ep)
        except Exception as exc:  # the vendor's answer did not read: this row's error
            return CallRecord(**base, model_served=None, status="error",
                              error_class=type(exc).__name__, error_message=str(exc)[:500],
                              http_status=o.status, request_id=o.request_id)
        usage = parsed.usage or Usage(input_tokens=estimate_tokens(base["prompt"] or ""),
                                      output_tokens=estimate_tokens(parsed.text),
                                      source="estimated")
        cost = d._price(ep, part["model"], usage)
        return CallRecord(
            **base, model_served=parsed.model, status="ok", http_status=o.status,
            request_id=parsed.request_id or o.request_id,
            input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cache_read_tokens, cache_write_tokens=usage.cache_write_tokens,
            reasoning_tokens=usage.reasoning_tokens, usage_source=usage.source,
            cost_usd=None if cost.usd is None else cost.usd * BATCH_DISCOUNT,
            price_source=f"{cost.source}, batch {int(BATCH_DISCOUNT * 100)}%",
            finish_reason=parsed.finish_reason, response=parsed.text)
    err: Exception
    if o.kind == "error" and o.status and ep is not None and isinstance(o.body, dict):
        err = adapter_for(ep.kind).map_error(_answer(o.status, o.body, dummy), ep)
    elif o.kind == "error":
        err = BatchRequestError(o.message or "the request failed in the batch", outcome="error",
                                code=o.code)
    else:
        what = {"expired": "the batch's window ran out before this request ran",
                "cancelled": "the batch was cancelled before this request ran",
                "failed": "the batch failed before this request ran"}.get(o.kind, o.kind)
        err = BatchRequestError(f"{what}" + (f" ({o.message})" if o.message else "")
                                + "; job.retry_failed() sends it again", outcome=o.kind,
                                code=o.code)
    return CallRecord(**base, model_served=None, status="error", error_class=type(err).__name__,
                      error_message=str(err)[:500], http_status=o.status,
                      request_id=o.request_id)


_JSON = httpx.Headers({"content-type": "application/json"})


def _answer(status: int, body: Any, request: httpx.Request) -> httpx.Response:
    """One request's answer from a batch as the whole response a live call would read.

    Its body is set as already read (what `Response.read()` leaves): building it from
    bytes runs httpx's stream and decoder machinery, a third of collecting 20,000."""
    response = httpx.Response(status, headers=_JSON, request=request)
    response._content = json.dumps(body).encode()
    return response


def latest(have: Mapping[tuple[str, int], CallRecord]) -> dict[str, CallRecord]:
    """Each call's newest attempt."""
    best: dict[str, CallRecord] = {}
    for (cid, _attempt), r in sorted(have.items(), key=lambda kv: kv[0][1]):
        best[cid] = r
    return best


def failed_cids(job_id: str, items: Sequence[dict[str, Any]],
                have: Mapping[tuple[str, int], CallRecord]) -> list[str]:
    """Custom ids whose newest attempt failed (what `retry_failed` sends again)."""
    newest = latest(have)
    out = []
    for it in items:
        r = newest.get(call_id(job_id, it["cid"]))
        if it.get("body") is not None and r is not None and r.status != "ok":
            out.append(it["cid"])
    return out
