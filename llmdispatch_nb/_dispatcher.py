"""The `Dispatcher`: resolve the target, try each candidate, record every attempt.

    send / asend      -> Response
    stream / astream  -> Stream / AsyncStream of events, then .response

Sync calls run on the dispatcher's own loop thread (see `_loop.py`); async calls run on
the caller's loop, each loop with its own pooled `httpx.AsyncClient` (`_clients.py`).
Breaker, limiter, budget and ledger are shared by all of them (thread-safe). Latency and
time to first token are measured from the moment the request is handed to httpx.
This module is the call flow (candidates, retries, waits, fallbacks); one attempt's budget
reservation, send and records are `_one_attempt.py`, the ledger reads and batch jobs `_dispatcher_ledger.py`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import replace
from typing import Any, TypeVar

import httpx

from . import _config
from ._arguments import check_call, checked_options
from ._attempt import Exchange
from ._call import NO_OPTIONS, CallOptions, CallState
from ._clients import LoopClients, new_client
from ._dispatcher_ledger import LedgerViews
from ._loop import LoopThread
from ._one_attempt import failure_record, reserve_attempt, send_attempt
from ._recorded import serve_recorded
from ._stream import AsyncStream, Stream, StreamSink
from ._structured import finish_response
from ._transport import map_httpx_error
from ._types import (
    Attempt,
    CallRecord,
    Cost,
    Message,
    Request,
    Response,
    Usage,
    new_call_id,
)
from ._waits import Cause, LimitNotice, breaker_reason, pause, retry_reason
from .errors import (
    AllCandidatesFailedError,
    BudgetExceededError,
    CircuitOpenError,
    ConfigurationError,
    ContextLengthError,
    LLMDispatchError,
    MidStreamError,
    RequestValidationError,
    VendorTimeoutError,
)
from .pricing import PriceBook
from .resilience import (
    Budget,
    CircuitBreaker,
    Limit,
    LimitWaitTimeoutError,
    RateLimiter,
    RetryPolicy,
)
from .routing import (
    Candidate,
    LatencyTracker,
    Plan,
    Router,
    Rule,
    StrategyFn,
    TargetResolver,
    estimated_input_tokens,
)
from .vendors import Endpoint, adapter_for

RecordSink = Callable[[CallRecord], None]
_log = logging.getLogger("llmdispatch_nb")
T = TypeVar("T")

# Less time than this left before the call's deadline: start no new attempt. One started
# anyway could not answer in time; it would only race the deadline and blame the vendor.
_MIN_ATTEMPT_S = 0.01


class Dispatcher(LedgerViews):
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
        sim_time_scale: float | None = None,
        retry: RetryPolicy | None = None,
        breaker: CircuitBreaker | None = None,
        limits: RateLimiter | Mapping[str, Limit] | None = None,
        budget: Budget | float | None = None,
        strategy: str | StrategyFn = "model",
        fallbacks: Mapping[str, Sequence[str]] | None = None,
        default_fallbacks: Sequence[str] = (),
        groups: Mapping[str, Sequence[str]] | None = None,
        rules: Sequence[Rule] = (),
        cache: Any = None,
        replay: str | Sequence[str] | None = None,
        wait_for_breaker: bool = True,
    ) -> None:
        environ = _config.environment(dotenv, env)
        self.dotenv_path = environ.dotenv_path  # the .env read, if any (%llm vendors says)
        self._allow_insecure_http = _config.allows_insecure_http(environ)
        self.sim: Any = None
        if endpoints is None:
            found = _config.endpoints_from_env(environ)
            want_demo = demo if demo is not None else (
                environ.get("LLMDISPATCH_DEMO", "").lower() in ("1", "true", "yes") or not found)
            if want_demo:
                from .sim import serve

                self.sim = serve(time_scale=_config.sim_time_scale(sim_time_scale, environ))
                found = _config.demo_endpoints(self.sim, environ)
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
        # Read the price table in the background now rather than on the loop at the first
        # call, where its 0.4 s would stall every call in flight and eat the first deadline.
        threading.Thread(target=self.prices.warm, name="llmdispatch-prices", daemon=True,
                         args=([(ep.kind if ep.kind == "azure" else ep.name, m)
                                for ep in self.endpoints.values() for m in ep.models[:8]],)).start()
        self.session = session or new_call_id()[:12]
        self._loop = LoopThread()
        self._client = client  # the caller's own client: used on our loop only
        self._clients = LoopClients(self._new_client)
        if ledger is None or isinstance(ledger, str):
            # A postgresql:// URL (here or in $LLMDISPATCH_LEDGER) is a team's ledger.
            from .ledger._postgres import configured_ledger, open_ledger

            ledger = configured_ledger() if ledger is None else open_ledger(ledger)
        self.ledger = ledger
        self.retry = retry if retry is not None else RetryPolicy()
        self.breaker = breaker if breaker is not None else CircuitBreaker()
        self.limiter = limits if isinstance(limits, RateLimiter) else RateLimiter(limits)
        self.budget = budget if isinstance(budget, Budget) else Budget(limit_usd=budget)
        self.router = Router(self.resolver, strategy, fallbacks, default_fallbacks, groups, rules,
                             self.prices, LatencyTracker())
        self.wait_for_breaker = wait_for_breaker
        if cache is None or cache is True:
            # On by default where there is a database to keep it in (the SQLite ledger).
            from .ledger import Ledger, ResponseCache

            cache = ResponseCache(ledger) if isinstance(ledger, Ledger) else None
        self.cache = cache or None
        self.replay_packs: list[Any] = []
        for path in [replay] if isinstance(replay, str) else list(replay or ()):
            self.load_replay(path)
        self._sinks: list[RecordSink] = []
        self._failed_sinks: set[int] = set()  # ids of sinks whose exception was logged
        self._tasks: set[asyncio.Task[Response]] = set()
        self._closed = False

    # -- configuration ----------------------------------------------------------------

    @property
    def demo(self) -> bool:
        return self.sim is not None

    def add_endpoint(self, endpoint: Endpoint) -> None:
        adapter_for(endpoint.kind)  # fail now, not on the first call
        _config.check_endpoint(endpoint, allow_http=self._allow_insecure_http)
        self.endpoints[endpoint.name] = endpoint

    def on_record(self, sink: RecordSink) -> None:
        """Call `sink(record)` for every attempt, on the loop the call runs on (the
        caller's own for `asend`/`astream`, the dispatcher's for sync calls); keep it quick."""
        self._sinks.append(sink)

    @property
    def aliases(self) -> dict[str, str]:
        return self.resolver.aliases

    def _new_client(self) -> httpx.AsyncClient:
        return new_client(self.timeout)

    def _client_for_loop(self) -> httpx.AsyncClient:
        return self._client if self._client is not None else self._clients.get()

    def _runs_here(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Whether an async call runs on the caller's loop `loop` rather than ours: yes,
        unless the caller gave us their own client (its connections live on our loop)."""
        return self._client is None and loop is not self._loop.running_loop

    # -- public API -------------------------------------------------------------------

    def request(self, prompt: str | Request | Sequence[Message | Mapping[str, Any]],
                target: str | None = None, **params: Any) -> Request:
        check_call(prompt, target, params)  # one clear error for a None prompt, system=123...
        if isinstance(prompt, Request):
            if params:
                raise ConfigurationError("pass parameters inside the Request, or a prompt string")
            return prompt if target is None else prompt.with_target(target)
        return Request(prompt, target, **params)

    def send(self, prompt: Any, target: str | None = None, **params: Any) -> Response:
        """Send and wait for the whole answer (works in a notebook cell, thread or script).
        `on_wait=fn` is called with a `Waiting` for each wait of 2 s or more (Retry-After,
        a circuit to half-open, a client-side limit) and its end."""
        opts = checked_options(params)
        req = self.request(prompt, target, **params)
        return self._loop.run(self._call(req, None, opts))

    def submit(self, prompt: Any, target: str | None = None,
               **params: Any) -> concurrent.futures.Future[Response]:
        """`send` without waiting: the call starts at once; `.result()` waits for the
        answer, `.cancel()` cancels the call (from any thread; recorded as cancelled)."""
        opts = checked_options(params)
        req = self.request(prompt, target, **params)
        return self._loop.submit(self._call(req, None, opts))

    async def asend(self, prompt: Any, target: str | None = None, **params: Any) -> Response:
        opts = checked_options(params)
        req = self.request(prompt, target, **params)
        if self._runs_here(asyncio.get_running_loop()):
            await self._clients.adopt()
            return await self._call(req, None, opts)
        return await self._loop.arun(self._call(req, None, opts))

    def stream(self, prompt: Any, target: str | None = None, **params: Any) -> Stream:
        """Iterate text and usage events as they arrive (and `Waiting` events while the
        call waits 2 s or more before an attempt); `.response` holds the result."""
        opts = checked_options(params)
        req = self.request(prompt, target, **params)
        s = Stream()
        s.attach(self._loop.submit(self._call(req, s.sink, opts)))
        return s

    def astream(self, prompt: Any, target: str | None = None, **params: Any) -> AsyncStream:
        opts = checked_options(params)
        req = self.request(prompt, target, **params)
        loop = asyncio.get_running_loop()
        if self._runs_here(loop):
            s = AsyncStream(loop, same_loop=True)
            task = loop.create_task(self._call_here(req, s.sink, opts))
            self._tasks.add(task)  # a task nobody holds may be collected mid-call
            task.add_done_callback(self._tasks.discard)
            s.attach(task)
            return s
        s = AsyncStream(loop)
        s.attach(self._loop.submit(self._call(req, s.sink, opts)))
        return s

    async def _call_here(self, req: Request, sink: StreamSink, opts: CallOptions) -> Response:
        await self._clients.adopt()
        return await self._call(req, sink, opts)

    def run_tools(self, prompt: Any, target: str | None = None, *, tools: Sequence[Any],
                  max_rounds: int = 5, **params: Any) -> Any:
        """Send with `tools`, run the calls the model makes with your functions, send the
        results back, until it answers in text or `max_rounds` calls were made; returns a
        `ToolRun` (`.response` the last answer, `.rounds`, `.calls`, `.cost_usd`). Every
        round is its own call in the ledger (see `_run_tools.py`)."""
        from ._run_tools import arun_tools

        return self._loop.run(arun_tools(self, prompt, target, tools, max_rounds, params))

    async def arun_tools(self, prompt: Any, target: str | None = None, *, tools: Sequence[Any],
                         max_rounds: int = 5, **params: Any) -> Any:
        from ._run_tools import arun_tools

        return await arun_tools(self, prompt, target, tools, max_rounds, params)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine (an `async def` of `asend`/`astream` calls, say a gather) on the
        dispatcher's own loop and wait for its result: from a notebook cell (where
        `asyncio.run` refuses), a thread or a script. Ctrl-C cancels it."""
        return self._loop.run(coro)

    async def arun(self, coro: Coroutine[Any, Any, T]) -> T:
        """`run` for async code: awaits `coro` run on the dispatcher's loop."""
        return await self._loop.arun(coro)

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
        self._loop.cancel_all()  # calls still running from other threads end, recorded
        self._clients.close_others(self._loop.running_loop)
        if self._loop.running_loop is not None:
            try:
                self._loop.run(self._clients.aclose_here())
            except Exception:
                pass
        self._loop.stop()
        if hasattr(self.ledger, "flush"):
            self.ledger.flush()
        if self.sim is not None:
            self.sim.close()

    async def aclose(self) -> None:
        """`close()` for async code: also waits for this loop's connections to close."""
        await self._clients.aclose_here()
        await asyncio.to_thread(self.close)

    async def __aenter__(self) -> Dispatcher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __enter__(self) -> Dispatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = ", demo (emulated vendors)" if self.demo else ""
        return f"Dispatcher(vendors={sorted(self.endpoints)}{mode})"

    # -- the call ---------------------------------------------------------------------

    def plan(self, request: Request, *, stream: bool = False, strategy: Any = None,
             fallbacks: Sequence[str] | None = None) -> Plan:
        """The candidates this request would try, in order, and those skipped (with why)."""
        plan = self.router.plan(request, stream=stream, strategy=strategy, fallbacks=fallbacks)
        plan.raise_if_empty()
        return plan

    async def _call(self, request: Request, sink: StreamSink | None,
                    opts: CallOptions = NO_OPTIONS) -> Response:
        call = CallState(new_call_id(), request, sink, opts, time.monotonic() + self.deadline_s)
        plan = self.router.plan(request, stream=sink is not None, strategy=opts.strategy,
                                fallbacks=opts.fallbacks)
        try:
            plan.raise_if_empty()
        except RequestValidationError as exc:
            # Every candidate skipped (a capability or a window they lack): refused before
            # sending, the call still gets one record, as a budget refusal does.
            if plan.skipped:
                call.number += 1
                self._record_failure(call, plan.skipped[0][0], exc, None, False, False, "refused")
            raise
        call.trail.extend(Attempt(c.vendor, c.model, "skipped", why) for c, why in plan.skipped)
        hit = await self._serve_recorded(call, plan.candidates[0])
        if hit is not None:
            return finish_response(hit, request)
        pending = list(plan.candidates)
        first_key = pending[0].key
        waited_for_breaker = False
        breaker_skipped: list[Candidate] = []
        while True:
            breaker_skipped = []
            i = 0
            while i < len(pending):
                cand = pending[i]
                i += 1
                outcome = await self._try_candidate(call, cand, fell_back=cand.key != first_key)
                call.request = request  # undo a budget-fitted max_tokens for the next one
                if call.held:  # left with failures no retry recovered: they count
                    self.breaker.abandon(cand.key, call.take_held())
                if isinstance(outcome, Response):
                    return outcome
                if outcome == "deadline":
                    break  # no time left for this candidate, nor for any after it
                if outcome == "breaker":
                    breaker_skipped.append(cand)
                elif outcome == "context":
                    known = len(plan.skipped)
                    pending = pending[:i] + self.router.context_fallback(plan, cand)
                    # Those now left out (windows no larger than the one that refused)
                    # belong in the trail with their reason, like the skips made up front.
                    call.trail.extend(Attempt(c.vendor, c.model, "skipped", why)
                                      for c, why in plan.skipped[known:])
            # Every candidate failed or was open. Wait for the soonest breaker to half-open
            # (once, within the deadline) rather than fail without trying.
            if breaker_skipped and self.wait_for_breaker and not waited_for_breaker:
                key, wait = self.breaker.soonest([c.key for c in breaker_skipped])
                if time.monotonic() + wait + _MIN_ATTEMPT_S < call.deadline:
                    waited_for_breaker = True
                    soonest = next(c for c in breaker_skipped if c.key == key)
                    await self._pause(call, soonest, wait, "breaker",
                                      breaker_reason(self.breaker, key), soonest.key != first_key)
                    pending = breaker_skipped
                    continue
            break
        if not call.errors:
            # Nothing was sent. The call still gets one record, so the ledger and stats
            # count it (as budget refusals are counted), then its typed error.
            first = plan.candidates[0]
            if breaker_skipped:
                key, wait = self.breaker.soonest([c.key for c in plan.candidates])
                err: LLMDispatchError = CircuitOpenError(
                    f"every candidate's circuit is open or probing "
                    f"({', '.join(c.key for c in plan.candidates)}); soonest: {key}, "
                    f"{self.breaker.refusal(key)}. Wait, or add a fallback on another "
                    f"vendor", reopens_in=wait)
            else:
                err = VendorTimeoutError(f"the call deadline ({self.deadline_s:g} s) passed "
                                         f"before any attempt could start; nothing was sent",
                                         vendor=first.vendor)
            call.number += 1
            self._record_failure(call, first, err, None, False, False, "refused")
            raise err
        tried = {(a.vendor, a.model) for a in call.trail if a.status in ("error", "refused")}
        if len(tried) <= 1:
            raise call.errors[-1]  # one candidate (maybe retried): its own typed error says most
        raise AllCandidatesFailedError(call.errors)

    async def _try_candidate(self, call: CallState, cand: Candidate, *,
                             fell_back: bool) -> Response | str:
        """Attempts on one candidate, with retries. Returns the response, or why it gave up:
        "breaker" (open), "refused" (budget), "context" (prompt too long), "failed"."""
        retries = 0
        request, opts = call.request, call.opts
        while True:
            call.request = request  # as asked: a cap fitted to the budget is per attempt
            if call.deadline - time.monotonic() < _MIN_ATTEMPT_S:
                call.trail.append(Attempt(cand.vendor, cand.model, "skipped",
                                          "the call deadline passed"))
                return "deadline"
            if not self.breaker.allow(cand.key):
                call.trail.append(Attempt(cand.vendor, cand.model, "skipped",
                                          self.breaker.refusal(cand.key)))
                return "breaker"
            try:
                reservation, call.request = reserve_attempt(self.budget, self.router, request,
                                                            cand, opts.max_cost)
            except BudgetExceededError as exc:
                self.breaker.release(cand.key)
                call.number += 1
                self._record_failure(call, cand, exc, None, fell_back, retries > 0, "refused")
                call.errors.append(exc)
                call.trail.append(Attempt(cand.vendor, cand.model, "refused", str(exc)))
                return "refused"
            call.number += 1
            tokens = estimated_input_tokens(request) + self.router.max_output_tokens(request)
            try:
                try:
                    async with self.limiter.slot((cand.vendor, cand.key), tokens, call.deadline,
                                                 LimitNotice(call, cand.key)) as lease:
                        if call.deadline - time.monotonic() < _MIN_ATTEMPT_S:
                            # The slot came free just as the deadline passed: sending now
                            # would only race the deadline and blame the vendor for it.
                            raise LimitWaitTimeoutError(
                                f"the call deadline ({self.deadline_s:g} s) passed while waiting "
                                f"for a client-side limit slot on {cand.key}; nothing was sent. "
                                f"Raise the limit or the deadline", vendor=cand.vendor)
                        resp = await self._attempt(call, cand, fell_back=fell_back,
                                                   retried=retries > 0)
                        lease.settle(resp.usage.total_tokens)
                except VendorTimeoutError as exc:
                    if call.number_recorded < call.number:  # timed out waiting for the limiter
                        self._record_failure(call, cand, exc, None, fell_back, retries > 0, "error")
                    raise
            except asyncio.CancelledError:
                reservation.release()
                self.breaker.release(cand.key)
                if call.number_recorded < call.number:  # cancelled waiting for the limiter
                    self._record_failure(call, cand, LLMDispatchError(
                        "cancelled by the caller while waiting for a client-side limit slot"),
                        None, fell_back, retries > 0, "cancelled")
                raise
            except Exception as exc:
                if not isinstance(exc, LLMDispatchError):
                    # Not ours (a warning made an error by the user's filter, a bug): nothing
                    # was billed; hand back the reservation and the probe, then let it out.
                    reservation.release()
                    self.breaker.release(cand.key)
                    raise
                if isinstance(exc, MidStreamError) and exc.usage is not None:
                    reservation.settle(self._price(cand.endpoint, cand.model, exc.usage).usd)
                else:
                    reservation.release()  # vendors do not bill a request that failed
                streamed = call.sink is not None and call.sink.started
                left = call.deadline - time.monotonic() - _MIN_ATTEMPT_S
                delay = None if streamed or isinstance(exc, ContextLengthError) else \
                    self.retry.delay(retries, exc, remaining_s=left)
                if delay is not None and delay >= left:
                    # A wait that would use up the deadline leaves no time to try again;
                    # the next candidate gets the time instead.
                    delay = None
                if isinstance(exc, LimitWaitTimeoutError):
                    # Nothing reached the vendor: no news about its health. Hand back a
                    # half-open probe rather than let our own queue close the circuit.
                    self.breaker.release(cand.key)
                elif delay is not None:
                    self.breaker.hold(cand.key, exc)  # the retry's outcome decides
                    call.held.append(exc)
                else:
                    self.breaker.record(cand.key, False, exc, held=call.take_held())
                call.errors.append(exc)
                call.trail.append(Attempt(cand.vendor, cand.model, "error", type(exc).__name__))
                if streamed:
                    raise  # text reached the caller: no retry, no fallback
                if isinstance(exc, ContextLengthError):
                    return "context"
                if delay is None:
                    return "failed"
                retries += 1
                await self._pause(call, cand, delay, "retry", retry_reason(exc),
                                  fell_back)
                continue
            reservation.settle(resp.cost.usd)
            self.breaker.record(cand.key, True, held=call.take_held())
            self.router.tracker.observe(cand.key, resp.latency_s, resp.ttft_s)
            call.trail.append(Attempt(cand.vendor, cand.model, "ok", None, resp.latency_s))
            if call.cache_key_for(cand) and self.cache is not None and self.cache_allows(call):
                await asyncio.to_thread(self.cache.put, call.cache_key_for(cand), resp,
                                        call.last_chunks or None)
            return replace(resp, attempts=tuple(call.trail))

    async def _pause(self, call: CallState, cand: Candidate, seconds: float, cause: Cause,
                     reason: str, fell_back: bool) -> None:
        """Wait before the next attempt, shown when long (`_waits.py`). A call cancelled
        meanwhile records the attempt it was waiting to make as cancelled."""
        try:
            await pause(call, seconds, cause, cand.key, reason)
        except asyncio.CancelledError:
            call.number += 1
            self._record_failure(call, cand, LLMDispatchError(
                f"cancelled by the caller while waiting {seconds:.1f} s for {cand.key}: "
                f"{reason}"), None, fell_back, cause == "retry", "cancelled")
            raise

    async def _attempt(self, call: CallState, cand: Candidate, *, fell_back: bool,
                       retried: bool) -> Response:
        return await send_attempt(
            call, cand, client=self._client_for_loop, read_timeout=self.timeout.read,
            deadline_s=self.deadline_s, price=self._price, record=self.record,
            session=self.session, fell_back=fell_back, retried=retried)

    def _record_failure(self, call: CallState, cand: Candidate, err: LLMDispatchError,
                        ex: Exchange | None, fell_back: bool, retried: bool, status: str,
                        started_wall: float | None = None) -> None:
        self.record(failure_record(call, cand, err, ex, session=self.session,
                                   fell_back=fell_back, retried=retried, status=status,
                                   started_wall=started_wall))

    # -- answers served again: the response cache and replay packs --------------------

    def cache_allows(self, call: CallState) -> bool:
        if call.opts.cache is False or self.cache is None:
            return False
        return call.opts.cache is True or self.cache.cacheable(call.request)

    async def _serve_recorded(self, call: CallState, cand: Candidate) -> Response | None:
        return await serve_recorded(self, call, cand)

    # -- helpers ----------------------------------------------------------------------

    def _price(self, ep: Endpoint, model: str, usage: Usage) -> Cost:
        adapter = adapter_for(ep.kind)
        priced_model = adapter.pricing_model(model, ep)
        return self.prices.cost(ep.name, priced_model, usage, kind=ep.kind,
                                free=not ep.priced)

    def record(self, record: CallRecord) -> None:
        self.ledger.write(record)
        for sink in self._sinks:
            try:
                sink(record)
            except Exception:  # someone else's code: it must not break the call it watches
                if id(sink) not in self._failed_sinks:
                    self._failed_sinks.add(id(sink))
                    _log.exception("the on_record sink %r raised; the call goes on (logged "
                                   "once per sink)", sink)

