"""One attempt on one candidate: what it may spend, the exchange, what the ledger keeps.

`reserve_attempt` holds the most the attempt can bill in the budget (fitting an unset
`max_tokens` to the room left, with a warning); `send_attempt` builds the vendor's request, sends it (plain or streamed) within the call's
deadline, makes the `Response` from the parsed reply (priced; `.parsed`/`.valid` when a
schema was asked) and writes its `CallRecord`; `failure_record` is the record of an attempt
that ended in an error, a refusal or a cancel. They live apart from the `Dispatcher` so its
module holds the call flow (candidates, retries, fallbacks) and this one the single
exchange. The dispatcher passes what they need (budget, router, client, prices, its record
writer and session) as arguments, so this module never imports it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import httpx

from ._attempt import Exchange, send_plain, send_stream
from ._call import CallState, request_params
from ._structured import finish_response, schema_stream
from ._types import CallRecord, Cost, Request, Response, Usage, estimate_tokens, now
from .errors import BudgetExceededError, LLMDispatchError, VendorTimeoutError
from .routing import Candidate
from .vendors import Endpoint, adapter_for

if TYPE_CHECKING:
    from .resilience import Budget
    from .resilience.budget import Reservation
    from .routing import Router

RecordWriter = Callable[[CallRecord], None]
Pricer = Callable[[Endpoint, str, Usage], Cost]
_log = logging.getLogger("llmdispatch_nb")


def reserve_attempt(budget: Budget, router: Router, request: Request, cand: Candidate,
                    max_cost: float | None) -> tuple[Reservation, Request]:
    """Reserve the most `cand` can bill for `request`; the reservation and the request to
    send: with no `max_tokens` set, one fitted to the budget's room (said in a warning).
    Raises `BudgetExceededError` with nothing reserved."""
    worst = router.worst_case(request, cand)  # what the vendor can bill at most
    reservation = budget.reserve_worst(
        worst.prompt_usd, worst.usd_per_output_token, worst.output_tokens,
        request.tags, max_cost, fit=request.max_tokens is None, what=cand.key)
    fitted = reservation.output_tokens
    if fitted is None or fitted >= worst.output_tokens:
        return reservation, request
    sent = router.fit_to(request, cand, fitted)
    if sent is None:  # the adapter's own room (thinking) leaves no answer
        reservation.release()
        raise BudgetExceededError(
            f"refused before sending: the budget has room for {fitted} answer "
            f"tokens of {cand.key}, less than the room its request keeps for "
            f"thinking", budget=budget.limit_usd,
            estimate=worst.usd, advice="Raise the budget or pick a cheaper model")
    if sent is not request:
        _log.warning("%s: sent with max_tokens=%d (the most the budget has room for) "
                     "instead of %s %d; Budget(policy='refuse') refuses such a call "
                     "instead", cand.key, sent.max_tokens,
                     "the cap of" if worst.capped else "the model's output cap",
                     worst.output_tokens)
    return reservation, sent


def failure_record(call: CallState, cand: Candidate, err: LLMDispatchError,
                   ex: Exchange | None, *, session: str, fell_back: bool, retried: bool,
                   status: str, started_wall: float | None = None) -> CallRecord:
    """The record of an attempt that gave no answer (`status`: error, refused, cancelled);
    marks the call's current attempt number as recorded."""
    ep = cand.endpoint
    call.number_recorded = call.number
    latency = time.perf_counter() - ex.t0 if ex is not None else None
    partial = getattr(err, "partial_text", None)
    return CallRecord(
        call_id=call.call_id, attempt=call.number,
        timestamp=started_wall if started_wall is not None else now(), vendor=ep.name,
        model_requested=cand.model, model_served=None, status=status,
        error_class=type(err).__name__, error_message=str(err)[:500],
        http_status=getattr(err, "status", None) or (ex.status if ex else None),
        request_id=getattr(err, "request_id", None), session=session,
        route_reason=cand.reason, retried=retried, fell_back=fell_back,
        streamed=call.sink is not None, latency_s=latency, ttft_s=ex.ttft if ex else None,
        simulated=ep.simulated, tags=call.request.tags, params=request_params(call.request),
        prompt=call.request.prompt_text, response=partial or None)


async def send_attempt(call: CallState, cand: Candidate, *,
                       client: Callable[[], httpx.AsyncClient], read_timeout: float | None,
                       deadline_s: float, price: Pricer, record: RecordWriter, session: str,
                       fell_back: bool, retried: bool) -> Response:
    """Send `call.request` to `cand` once; the answer, or its typed error (recorded)."""
    ep = cand.endpoint
    adapter = adapter_for(ep.kind)
    request, sink = call.request, call.sink

    def failed(err: LLMDispatchError, ex: Exchange | None, status: str,
               started_wall: float | None = None) -> None:
        record(failure_record(call, cand, err, ex, session=session, fell_back=fell_back,
                              retried=retried, status=status, started_wall=started_wall))

    try:
        http_req = adapter.build_request(request, cand.model, ep, stream=sink is not None)
    except LLMDispatchError as exc:  # the adapter refused it before sending: recorded
        failed(exc, None, "refused")
        raise
    http_client = client()
    started_wall = now()
    ex = Exchange(time.perf_counter())
    try:
        async with asyncio.timeout(max(0.001, call.deadline - time.monotonic())):
            if sink is None:
                await send_plain(http_client, adapter, ep, http_req, ex, read_timeout)
            else:
                await send_stream(http_client, adapter, ep, http_req, ex,
                                  schema_stream(request, sink), read_timeout)
    except TimeoutError:
        late = VendorTimeoutError(f"no complete answer within the call deadline "
                                  f"({deadline_s:g} s)", vendor=ep.name)
        failed(late, ex, "error", started_wall)
        raise late from None
    except LLMDispatchError as exc:
        failed(exc, ex, "error", started_wall)
        raise
    except asyncio.CancelledError:
        failed(LLMDispatchError("cancelled by the caller"), ex, "cancelled", started_wall)
        raise
    latency = time.perf_counter() - ex.t0
    parsed = ex.reply
    assert parsed is not None
    usage = parsed.usage or Usage(
        input_tokens=estimate_tokens(request.prompt_text),
        output_tokens=estimate_tokens(parsed.text), source="estimated")
    cost = price(ep, cand.model, usage)
    resp = Response(
        text=parsed.text, finish_reason=parsed.finish_reason,
        raw_finish_reason=parsed.raw_finish_reason, usage=usage, vendor=ep.name,
        model=parsed.model or cand.model, model_requested=cand.model, latency_s=latency,
        ttft_s=ex.ttft, request_id=parsed.request_id, cost=cost, call_id=call.call_id,
        simulated=ep.simulated, extra=parsed.extra, tool_calls=parsed.tool_calls)
    resp = finish_response(resp, request)  # .parsed / .valid when a schema was asked
    call.last_chunks = ex.chunks
    call.number_recorded = call.number
    record(CallRecord(
        call_id=call.call_id, attempt=call.number, timestamp=started_wall, vendor=ep.name,
        model_requested=cand.model, model_served=resp.model, status="ok",
        http_status=ex.status, request_id=resp.request_id, session=session,
        route_reason=cand.reason, retried=retried, fell_back=fell_back,
        streamed=sink is not None, latency_s=latency, ttft_s=ex.ttft,
        input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
        cache_read_tokens=usage.cache_read_tokens, cache_write_tokens=usage.cache_write_tokens,
        reasoning_tokens=usage.reasoning_tokens, usage_source=usage.source,
        cost_usd=cost.usd, price_source=cost.source, simulated=ep.simulated,
        finish_reason=resp.finish_reason, tags=request.tags, params=request_params(request),
        prompt=request.prompt_text, response=resp.text, cache_key=call.cache_key_for(cand),
        chunks=tuple(ex.chunks), schema_valid=resp.valid))
    return resp
