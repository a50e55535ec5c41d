"""What the resilience end-to-end tests (tests/test_resilience_*.py) share: the four
emulators on loopback, endpoints for them, a dispatcher with an in-memory ledger and no
cache, the emulators' own request timestamps, and a count of requests in flight taken
at the emulator itself.

Every behaviour is driven through faults the emulators inject; nothing of ours is mocked.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import httpx

from llmdispatch_nb import Dispatcher, Endpoint, Secret
from llmdispatch_nb._config import AZURE_DEFAULT_API_VERSION
from llmdispatch_nb.ledger import MemoryLedger
from llmdispatch_nb.resilience import CircuitBreaker
from llmdispatch_nb.sim import PROFILES, SimServer, serve
from llmdispatch_nb.sim._server import Emulator
from llmdispatch_nb.sim.openai import OpenAIEmulator
from tests.conftest import CANARY_KEY

VENDORS = ("openai", "anthropic", "google", "azure")
MINI = "openai:gpt-4o-mini"
HAIKU = "anthropic:claude-haiku-4-5"
FLASH = "google:gemini-2.5-flash"
AZURE_MINI = "azure:gpt-4o-mini"
# A model on each vendor, by the vendor's endpoint name.
MODEL = {"openai": MINI, "anthropic": HAIKU, "google": FLASH, "azure": AZURE_MINI}
# The emulator that serves each endpoint name (Gemini's endpoint is "google" too).
EMULATOR = {"openai": "openai", "anthropic": "anthropic", "google": "google", "azure": "azure"}


def start(time_scale: float = 0.0) -> SimServer:
    return serve(VENDORS, time_scale=time_scale)


def fresh(sim: SimServer) -> None:
    """Forget faults and logged requests; back to instant answers."""
    for emu in sim.emulators.values():
        emu.reset()
        emu.time_scale = 0.0
        inner = getattr(emu.app, "inner", None)
        if inner is not None:  # an InFlight left on by a failed test
            emu.app = inner


def endpoints(sim: SimServer, *, google_key: bool = True) -> list[Endpoint]:
    key = Secret(CANARY_KEY)
    out = [Endpoint(name, kind, sim.base_url(name), key=key, simulated=True)
           for name, kind in (("openai", "openai"), ("anthropic", "anthropic"))
           if name in sim.emulators]
    if "google" in sim.emulators:
        out.append(Endpoint("google", "gemini", sim.base_url("google"),
                            key=key if google_key else None, simulated=True))
    if "azure" in sim.emulators:
        models = tuple(PROFILES["azure"])
        out.append(Endpoint("azure", "azure", sim.base_url("azure"), key=key, auth="api-key",
                            api_version=AZURE_DEFAULT_API_VERSION, route="deployments",
                            deployments={m: m for m in models}, models=models, simulated=True))
    return out


def dispatcher(sim: SimServer, *, google_key: bool = True, **kw: Any) -> Dispatcher:
    """A dispatcher on the emulators: in-memory ledger, no cache, short timeouts, and a
    breaker that only opens after 50 failures in a row (tests of the breaker bring their
    own), so a test of retries or fallbacks never waits out a cool-down it did not ask for."""
    kw.setdefault("breaker", CircuitBreaker(threshold=1.0, min_calls=50, window=50))
    kw.setdefault("ledger", MemoryLedger())
    kw.setdefault("cache", False)
    kw.setdefault("timeout", httpx.Timeout(3.0, connect=2.0))
    d = Dispatcher(endpoints(sim, google_key=google_key), dotenv=False, **kw)
    # Load the price and context-window tables now: the first plan reads them from
    # genai-prices, and that must not eat into a short call deadline under test.
    for target in MODEL.values():
        if target.partition(":")[0] in d.endpoints:
            d.router.estimate_cost(d.request("warm up"), d.plan(d.request("warm up", target)).candidates[0])
    return d


def arrivals(sim: SimServer, vendor: str) -> list[float]:
    """Wall-clock times at which the emulator received each generation request."""
    return [r.at for r in sim.emulators[EMULATOR[vendor]].requests.chat()]


def gaps(times: Sequence[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


def counts(sim: SimServer) -> dict[str, int]:
    return {v: sim.emulators[v].count for v in sim.emulators}


def records(d: Dispatcher) -> list[Any]:
    return d.session_records()


def sent(recs: Sequence[Any]) -> list[Any]:
    """The records of attempts that reached a vendor (not refused, not our queue's timeout)."""
    return [r for r in recs if r.status not in ("refused", "cached")
            and r.error_class != "LimitWaitTimeoutError"]


class InFlight:
    """Wraps an emulator's ASGI app to count the requests it is serving at once.

    A request is in flight from the moment the emulator starts on it until its response
    (a streamed one included) has been sent in full.
    """

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self.inner = emulator.app
        self.now = 0
        self.peak = 0
        self._lock = threading.Lock()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.inner(scope, receive, send)
            return
        with self._lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        try:
            await self.inner(scope, receive, send)
        finally:
            with self._lock:
                self.now -= 1

    def __enter__(self) -> InFlight:
        self.emulator.app = self  # type: ignore[assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        self.emulator.app = self.inner


class OddOpenAI(OpenAIEmulator):
    """OpenAI's emulator plus what its fault kinds cannot say: another client-error status
    in place of the "400" fault (OpenAI documents 403 for an unsupported region and 422
    for an unprocessable request), and `retry-after` as an HTTP date on a "429"."""

    def __init__(self, **kw: Any) -> None:
        self.status_for_400: int | None = None
        self.http_date = False
        super().__init__(**kw)

    def status_fault(self, request: Any, fault: Any, chat: Any) -> Any:
        if fault.kind == "400" and self.status_for_400 is not None:
            return self.error(request, self.status_for_400,
                              f"simulated {self.status_for_400} for this request",
                              code=f"status_{self.status_for_400}")
        resp = super().status_fault(request, fault, chat)
        if fault.kind == "429" and self.http_date and resp is not None:
            import email.utils
            import time

            wait = fault.retry_after if fault.retry_after is not None else 1.0
            resp.headers["retry-after"] = email.utils.formatdate(time.time() + wait, usegmt=True)
        return resp


def serve_odd() -> Iterator[SimServer]:
    with SimServer({"openai": OddOpenAI(time_scale=0)}).start() as sim:
        yield sim
