"""The `Dispatcher`: resolve the target, try each candidate, record every attempt.

    send / asend      -> Response
    stream / astream  -> Stream / AsyncStream of events, then .response

All network work happens on the dispatcher's own loop (see `_loop.py`) over one pooled
`httpx.AsyncClient`. Latency and time to first token are measured from the moment the
request is handed to httpx.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import httpx

from . import _config
from ._loop import LoopThread
from ._sse import SSEDecoder
from ._stream import AsyncStream, Stream, StreamSink
from ._transport import map_httpx_error
from ._types import (
    Attempt,
    CallRecord,
    Cost,
    Finish,
    Message,
    ParsedReply,
    Request,
    Response,
    StreamStart,
    TextDelta,
    Usage,
    UsageUpdate,
    estimate_tokens,
    new_call_id,
    now,
)
from .errors import (
    AllCandidatesFailedError,
    ConfigurationError,
    LLMDispatchError,
    MidStreamError,
    ProtocolError,
    TransportError,
    VendorTimeoutError,
)
from .pricing import PriceBook
from .routing import Candidate, TargetResolver
from .vendors import Endpoint, adapter_for

RecordSink = Callable[[CallRecord], None]


@dataclass(frozen=True)
class CallOptions:
    """How to route one call, apart from what is sent: strategy, fallbacks, spend cap, cache."""

    strategy: Any = None  # None = the dispatcher's; "model", "cheapest", "fastest", ... or a callable
    fallbacks: tuple[str, ...] | None = None  # None = the configured fallbacks
    max_cost: float | None = None  # US dollars for this call, refused before sending if exceeded
    cache: bool | None = None  # None = the cache policy decides; False = never; True = always


_OPTION_NAMES = ("strategy", "fallbacks", "max_cost", "cache")


def _split_options(params: dict[str, Any]) -> CallOptions:
    picked = {k: params.pop(k) for k in _OPTION_NAMES if k in params}
    if picked.get("fallbacks") is not None:
        fb = picked["fallbacks"]
        picked["fallbacks"] = (fb,) if isinstance(fb, str) else tuple(fb)
    return CallOptions(**picked)


class Dispatcher:
    """Sends requests to vendors. Build one per notebook (or use `llmdispatch_nb.default()`).

    Vendors come from `endpoints`, else from the environment and `.env`; with none there
    (or `demo=True`) the emulators start on loopback and serve every vendor, labelled as
    simulated. A vendor the environment lacks while others are set is an error naming the
    variable to set, never a silent emulation.
    """

    def __init__(
        self,
        endpoints: Sequence[Endpoint] | None = None,
        *,
        demo: bool | None = None,
        env: Mapping[str, str] | None = None,
        dotenv: bool | str = True,
        default_target: str | None = None,
        aliases: Mapping[str, str] | None = None,
        timeout: httpx.Timeout | float | None = None,
        deadline_s: float = 300.0,
        client: httpx.AsyncClient | None = None,
        prices: PriceBook | None = None,
        ledger: Any = None,
        session: str | None = None,
        sim_time_scale: float = 1.0,
    ) -> None:
        environ = _config.environment(dotenv, env)
        self.sim: Any = None
        if endpoints is None:
            found = _config.endpoints_from_env(environ)
            want_demo = demo if demo is not None else (
                environ.get("LLMDISPATCH_DEMO", "").lower() in ("1", "true", "yes") or not found)
            if want_demo:
                from .sim import serve

                self.sim = serve(time_scale=sim_time_scale)
                found = _config.demo_endpoints(self.sim)
            endpoints = found
        self.endpoints: dict[str, Endpoint] = {}
        for ep in endpoints:
            self.add_endpoint(ep)
        self.resolver = TargetResolver(self.endpoints, aliases,
                                       default_target or environ.get("LLMDISPATCH_DEFAULT_TARGET"))
        self.timeout = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(
            timeout if timeout is not None else 60.0, connect=10.0)
        self.deadline_s = deadline_s
        self.prices = prices or PriceBook()
        self.session = session or new_call_id()[:12]
        self._loop = LoopThread()
        self._client = client
        self._own_client = client is None
        if ledger is None:
            from .ledger import default_ledger

            ledger = default_ledger()
        self.ledger = ledger
        self._sinks: list[RecordSink] = []
        self._closed = False

    # -- configuration ----------------------------------------------------------------

    @property
    def demo(self) -> bool:
        return self.sim is not None

    def add_endpoint(self, endpoint: Endpoint) -> None:
        adapter_for(endpoint.kind)  # fail now, not on the first call
        self.endpoints[endpoint.name] = endpoint

    def on_record(self, sink: RecordSink) -> None:
        """Call `sink(record)` for every attempt (on the dispatcher's loop; keep it quick)."""
        self._sinks.append(sink)

    @property
    def aliases(self) -> dict[str, str]:
        return self.resolver.aliases

    def _client_for_loop(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self.timeout,
                limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
            )
        return self._client

    # -- public API -------------------------------------------------------------------

    def request(self, prompt: str | Request | Sequence[Message | Mapping[str, Any]],
                target: str | None = None, **params: Any) -> Request:
        if isinstance(prompt, Request):
            if params:
                raise ConfigurationError("pass parameters inside the Request, or a prompt string")
            return prompt if target is None else prompt.with_target(target)
        return Request(prompt, target, **params)

    def send(self, prompt: Any, target: str | None = None, **params: Any) -> Response:
        """Send and wait for the whole answer (works in a notebook cell, thread or script)."""
        opts = _split_options(params)
        req = self.request(prompt, target, **params)
        return self._loop.run(self._call(req, None, opts))

    async def asend(self, prompt: Any, target: str | None = None, **params: Any) -> Response:
        opts = _split_options(params)
        req = self.request(prompt, target, **params)
        return await self._loop.arun(self._call(req, None, opts))

    def stream(self, prompt: Any, target: str | None = None, **params: Any) -> Stream:
        """Iterate text and usage events as they arrive; `.response` holds the result."""
        opts = _split_options(params)
        req = self.request(prompt, target, **params)
        s = Stream()
        s.attach(self._loop.submit(self._call(req, s.sink, opts)))
        return s

    def astream(self, prompt: Any, target: str | None = None, **params: Any) -> AsyncStream:
        opts = _split_options(params)
        req = self.request(prompt, target, **params)
        s = AsyncStream(asyncio.get_running_loop())
        s.attach(self._loop.submit(self._call(req, s.sink, opts)))
        return s

    def models(self, vendor: str) -> list[str]:
        """The models a vendor lists (asks its models endpoint)."""
        return self._loop.run(self._models(vendor))

    async def _models(self, vendor: str) -> list[str]:
        ep = self.endpoints.get(vendor)
        if ep is None:
            raise self.resolver._unknown(vendor)
        adapter = adapter_for(ep.kind)
        req = adapter.list_models_request(ep)
        if req is None:
            return list(ep.models)
        try:
            r = await self._client_for_loop().send(req)
        except httpx.HTTPError as exc:
            raise map_httpx_error(exc, ep.name) from None
        await r.aread()
        if r.status_code >= 400:
            raise adapter.map_error(r, ep)
        return adapter.parse_models(r)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._client is not None and self._own_client:
            try:
                self._loop.run(self._client.aclose())
            except Exception:
                pass
        self._loop.stop()
        if hasattr(self.ledger, "flush"):
            self.ledger.flush()
        if self.sim is not None:
            self.sim.close()

    def __enter__(self) -> Dispatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = ", demo (emulated vendors)" if self.demo else ""
        return f"Dispatcher(vendors={sorted(self.endpoints)}{mode})"

    # -- the call ---------------------------------------------------------------------

    def plan(self, request: Request) -> list[Candidate]:
        return self.resolver.resolve(request.target)

    async def _call(self, request: Request, sink: StreamSink | None,
                    opts: CallOptions = CallOptions()) -> Response:
        call_id = new_call_id()
        candidates = self.plan(request)
        deadline = time.monotonic() + self.deadline_s
        errors: list[LLMDispatchError] = []
        trail: list[Attempt] = []
        number = 0
        for index, cand in enumerate(candidates):
            number += 1
            try:
                resp = await self._attempt(call_id, number, cand, request, sink, deadline,
                                           fell_back=index > 0, retried=False)
            except LLMDispatchError as exc:
                errors.append(exc)
                trail.append(Attempt(cand.vendor, cand.model, "error", type(exc).__name__))
                if isinstance(exc, MidStreamError) or (sink is not None and sink.started):
                    raise
                continue
            trail.append(Attempt(cand.vendor, cand.model, "ok", None, resp.latency_s))
            return replace(resp, attempts=tuple(trail))
        if len(errors) == 1:
            raise errors[0]
        raise AllCandidatesFailedError(errors)

    async def _attempt(self, call_id: str, number: int, cand: Candidate, request: Request,
                       sink: StreamSink | None, deadline: float, *, fell_back: bool,
                       retried: bool) -> Response:
        ep = cand.endpoint
        adapter = adapter_for(ep.kind)
        stream = sink is not None
        http_req = adapter.build_request(request, cand.model, ep, stream=stream)
        client = self._client_for_loop()
        started_wall = now()
        t0 = time.perf_counter()
        ttft: float | None = None
        status: int | None = None
        parsed: ParsedReply | None = None
        error: LLMDispatchError | None = None
        remaining = max(0.001, deadline - time.monotonic())
        try:
            async with asyncio.timeout(remaining):
                if not stream:
                    try:
                        r = await client.send(http_req)
                        await r.aread()
                    except httpx.HTTPError as exc:
                        raise map_httpx_error(exc, ep.name, self._read_timeout()) from None
                    status = r.status_code
                    if status >= 400:
                        raise adapter.map_error(r, ep)
                    parsed = adapter.parse_reply(r, ep)
                    ttft = None
                else:
                    assert sink is not None
                    parsed, ttft, status = await self._stream_attempt(adapter, ep, http_req,
                                                                      client, sink, t0)
        except TimeoutError:
            error = VendorTimeoutError(f"no complete answer within the call deadline "
                                       f"({self.deadline_s:g} s)", vendor=ep.name)
        except LLMDispatchError as exc:
            error = exc
        latency = time.perf_counter() - t0
        if error is not None:
            self._record(CallRecord(
                call_id=call_id, attempt=number, timestamp=started_wall, vendor=ep.name,
                model_requested=cand.model, model_served=None, status="error",
                error_class=type(error).__name__, error_message=str(error)[:500],
                http_status=getattr(error, "status", None) or status,
                request_id=getattr(error, "request_id", None), session=self.session,
                route_reason=cand.reason, retried=retried, fell_back=fell_back, streamed=stream,
                latency_s=latency, ttft_s=ttft, simulated=ep.simulated, tags=request.tags,
                params=_params(request),
                usage_source=None))
            raise error
        assert parsed is not None
        usage = parsed.usage or Usage(
            input_tokens=estimate_tokens(request.prompt_text),
            output_tokens=estimate_tokens(parsed.text), source="estimated")
        cost = self._price(ep, cand.model, usage)
        resp = Response(
            text=parsed.text, finish_reason=parsed.finish_reason,
            raw_finish_reason=parsed.raw_finish_reason, usage=usage, vendor=ep.name,
            model=parsed.model or cand.model, model_requested=cand.model, latency_s=latency,
            ttft_s=ttft, request_id=parsed.request_id, cost=cost, call_id=call_id,
            simulated=ep.simulated, extra=parsed.extra)
        self._record(CallRecord(
            call_id=call_id, attempt=number, timestamp=started_wall, vendor=ep.name,
            model_requested=cand.model, model_served=resp.model, status="ok",
            http_status=status, request_id=resp.request_id, session=self.session,
            route_reason=cand.reason, retried=retried, fell_back=fell_back, streamed=stream,
            latency_s=latency, ttft_s=ttft, input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens, cache_read_tokens=usage.cache_read_tokens,
            cache_write_tokens=usage.cache_write_tokens, reasoning_tokens=usage.reasoning_tokens,
            usage_source=usage.source, cost_usd=cost.usd, price_source=cost.source,
            simulated=ep.simulated, finish_reason=resp.finish_reason, tags=request.tags,
            params=_params(request), prompt=request.prompt_text, response=resp.text))
        return resp

    async def _stream_attempt(self, adapter: Any, ep: Endpoint, http_req: httpx.Request,
                              client: httpx.AsyncClient, sink: StreamSink,
                              t0: float) -> tuple[ParsedReply, float | None, int]:
        parser = adapter.stream_parser(ep)
        decoder = SSEDecoder()
        text: list[str] = []
        usage: Usage | None = None
        finish: Finish | None = None
        model: str | None = None
        request_id: str | None = None
        ttft: float | None = None
        try:
            r = await client.send(http_req, stream=True)
        except httpx.HTTPError as exc:
            raise map_httpx_error(exc, ep.name, self._read_timeout()) from None
        try:
            if r.status_code >= 400:
                try:
                    await r.aread()
                except httpx.HTTPError as exc:
                    raise map_httpx_error(exc, ep.name, self._read_timeout()) from None
                raise adapter.map_error(r, ep)
            request_id = r.headers.get("x-request-id") or r.headers.get("request-id")

            def take(events: list[Any]) -> None:
                nonlocal usage, finish, model, request_id, ttft
                for ev in events:
                    if isinstance(ev, TextDelta):
                        if ttft is None:
                            ttft = time.perf_counter() - t0
                        text.append(ev.text)
                        sink.send(ev)
                    elif isinstance(ev, UsageUpdate):
                        usage = ev.usage
                        sink.send(ev)
                    elif isinstance(ev, Finish):
                        finish = ev
                    elif isinstance(ev, StreamStart):
                        model = ev.model or model
                        request_id = request_id or ev.request_id

            try:
                async for chunk in r.aiter_raw():
                    for sse in decoder.feed(chunk):
                        take(parser.feed(sse))
                for sse in decoder.close():
                    take(parser.feed(sse))
                take(parser.close())
            except httpx.HTTPError as exc:
                err = map_httpx_error(exc, ep.name, self._read_timeout())
                if text:
                    raise MidStreamError(f"the stream broke after {len(text)} pieces of text: {err}",
                                         vendor=ep.name, partial_text="".join(text),
                                         usage=usage) from None
                raise err from None
            except ProtocolError as err:
                if text:
                    raise MidStreamError(str(err), vendor=ep.name, partial_text="".join(text),
                                         usage=usage) from None
                raise
            except MidStreamError as err:
                err.partial_text = "".join(text)
                if not text:
                    # Nothing reached the caller: as retryable as a failed request.
                    err.retryable = True
                raise
            except TransportError:
                raise
        finally:
            await r.aclose()
        if finish is not None:
            sink.send(finish)
        reply = ParsedReply(
            text="".join(text), finish_reason=finish.reason if finish else "stop",
            raw_finish_reason=finish.raw if finish else None, usage=usage, model=model,
            request_id=request_id)
        return reply, ttft, r.status_code

    # -- helpers ----------------------------------------------------------------------

    def _read_timeout(self) -> float | None:
        return self.timeout.read

    def _price(self, ep: Endpoint, model: str, usage: Usage) -> Cost:
        adapter = adapter_for(ep.kind)
        priced_model = adapter.pricing_model(model, ep)
        return self.prices.cost(ep.name, priced_model, usage, kind=ep.kind,
                                free=not ep.priced)

    def _record(self, record: CallRecord) -> None:
        self.ledger.write(record)
        for sink in self._sinks:
            sink(record)


def _params(request: Request) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("max_tokens", "temperature", "top_p", "seed", "user"):
        v = getattr(request, name)
        if v is not None:
            out[name] = v
    if request.stop:
        out["stop"] = list(request.stop)
    return out
