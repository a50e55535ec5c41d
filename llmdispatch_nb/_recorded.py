"""Answers served again without asking a vendor: replay packs first (keeping the recorded
pace when streamed, within the call's deadline), then the response cache (instant). A hit
is recorded like any attempt, with cost 0, its own latency (what this call waited), the
original call's latency in `original_latency_s`, and labelled by where it came from."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from ._call import CallState, request_params
from ._types import Attempt, CallRecord, Cost, Finish, Response, TextDelta, UsageUpdate, now
from .routing import Candidate

if TYPE_CHECKING:
    from ._dispatcher import Dispatcher

# A replay keeps the recorded pace, but no single gap waits longer than this: a pack is a
# shared file, and a recorded stall (or a crafted offset) must not hold a cell for minutes.
REPLAY_GAP_CAP_S = 5.0
# A replay delivers what is left at once this close to the call's deadline.
_DEADLINE_MARGIN_S = 0.05


async def serve_recorded(d: Dispatcher, call: CallState, cand: Candidate) -> Response | None:
    key = call.cache_key_for(cand)
    answer = None
    source = "replay"
    start = time.perf_counter()
    started_wall = now()
    for pack in d.replay_packs:
        answer = pack.get(key)
        if answer is not None:
            break
    if answer is None and d.cache_allows(call):
        assert d.cache is not None
        answer = await asyncio.to_thread(d.cache.get, key)
        source = "cache"
    if answer is None:
        return None
    sink = call.sink
    ttft = None
    if sink is not None:
        paced = time.perf_counter()
        skipped = 0.0  # recorded time left out by the caps
        for offset, piece in answer.chunks or ((0.0, answer.text),):
            if source == "replay":  # a replay keeps the recorded pace; a cache hit is instant
                skipped += await _wait_for_offset(call, paced + skipped, offset)
            if ttft is None:
                ttft = time.perf_counter() - start
            sink.send(TextDelta(piece))
        sink.send(UsageUpdate(answer.usage))
        sink.send(Finish(answer.finish_reason, answer.raw_finish_reason))
    latency = time.perf_counter() - start
    call.number += 1
    # "ok": the trail's vocabulary is ok / error / skipped / refused, and everything that
    # reads it (the footer's "retried", "fell back") takes any other status for a failure.
    # That this answer came from the cache or a pack is `Response.cached` and the record.
    call.trail.append(Attempt(cand.vendor, cand.model, "ok", None, latency))
    resp = Response(
        text=answer.text, finish_reason=answer.finish_reason,
        raw_finish_reason=answer.raw_finish_reason, usage=answer.usage, vendor=cand.vendor,
        model=answer.model_served or cand.model, model_requested=cand.model,
        latency_s=latency, ttft_s=ttft,
        cost=Cost(0.0, source), call_id=call.call_id, cached=True,
        simulated=cand.endpoint.simulated, attempts=tuple(call.trail))
    u = answer.usage
    d.record(CallRecord(
        call_id=call.call_id, attempt=call.number, timestamp=started_wall, vendor=cand.vendor,
        model_requested=cand.model, model_served=resp.model, status="cached",
        session=d.session, route_reason=f"{source} hit", streamed=sink is not None,
        latency_s=latency, ttft_s=ttft, input_tokens=u.input_tokens,
        output_tokens=u.output_tokens, cache_read_tokens=u.cache_read_tokens,
        cache_write_tokens=u.cache_write_tokens, reasoning_tokens=u.reasoning_tokens,
        usage_source=u.source, cost_usd=0.0, price_source=source, cache_hit=True,
        simulated=cand.endpoint.simulated, finish_reason=answer.finish_reason,
        tags=call.request.tags, params=request_params(call.request),
        prompt=call.request.prompt_text, response=answer.text, cache_key=key,
        original_latency_s=answer.latency_s))
    return resp


async def _wait_for_offset(call: CallState, paced: float, offset: float) -> float:
    """Sleep until `offset` seconds after `paced`, but never one gap longer than
    REPLAY_GAP_CAP_S nor past the call's deadline (the rest then comes at once); returns
    the recorded time the caps left out, which later offsets skip too."""
    try:
        due = float(offset) - (time.perf_counter() - paced)
    except (TypeError, ValueError):
        return 0.0
    left = call.deadline - time.monotonic() - _DEADLINE_MARGIN_S
    delay = min(due, REPLAY_GAP_CAP_S, left)
    if not delay > 0:  # also for NaN
        return 0.0
    await asyncio.sleep(delay)
    return due - delay if due < float("inf") else 0.0
