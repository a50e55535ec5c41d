"""Answers served again without asking a vendor: replay packs first (keeping the recorded
pace when streamed), then the response cache (instant). A hit is recorded like any
attempt, with cost 0 and its original latency, labelled by where it came from."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from ._call import CallState, request_params
from ._types import Attempt, CallRecord, Cost, Finish, Response, TextDelta, UsageUpdate, now
from .routing import Candidate

if TYPE_CHECKING:
    from ._dispatcher import Dispatcher


async def serve_recorded(d: Dispatcher, call: CallState, cand: Candidate) -> Response | None:
    key = call.cache_key_for(cand)
    answer = None
    source = "replay"
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
    if sink is not None:
        start = time.perf_counter()
        for offset, piece in answer.chunks or ((0.0, answer.text),):
            if source == "replay":  # a replay keeps the recorded pace; a cache hit is instant
                delay = offset - (time.perf_counter() - start)
                if delay > 0:
                    await asyncio.sleep(delay)
            sink.send(TextDelta(piece))
        sink.send(UsageUpdate(answer.usage))
        sink.send(Finish(answer.finish_reason, answer.raw_finish_reason))
    call.number += 1
    call.trail.append(Attempt(cand.vendor, cand.model, "cached", source, answer.latency_s))
    resp = Response(
        text=answer.text, finish_reason=answer.finish_reason,
        raw_finish_reason=answer.raw_finish_reason, usage=answer.usage, vendor=cand.vendor,
        model=answer.model_served or cand.model, model_requested=cand.model,
        latency_s=answer.latency_s or 0.0, ttft_s=answer.ttft_s,
        cost=Cost(0.0, source), call_id=call.call_id, cached=True,
        simulated=cand.endpoint.simulated, attempts=tuple(call.trail))
    u = answer.usage
    d.record(CallRecord(
        call_id=call.call_id, attempt=call.number, timestamp=now(), vendor=cand.vendor,
        model_requested=cand.model, model_served=resp.model, status="cached",
        session=d.session, route_reason=f"{source} hit", streamed=sink is not None,
        latency_s=answer.latency_s, ttft_s=answer.ttft_s, input_tokens=u.input_tokens,
        output_tokens=u.output_tokens, cache_read_tokens=u.cache_read_tokens,
        cache_write_tokens=u.cache_write_tokens, reasoning_tokens=u.reasoning_tokens,
        usage_source=u.source, cost_usd=0.0, price_source=source, cache_hit=True,
        simulated=cand.endpoint.simulated, finish_reason=answer.finish_reason,
        tags=call.request.tags, params=request_params(call.request),
        prompt=call.request.prompt_text, response=answer.text, cache_key=key))
    return resp
