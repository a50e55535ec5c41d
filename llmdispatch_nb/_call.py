"""The state of one call as it moves through candidates and attempts, and the per-call
routing options (`CallOptions`) that travel with it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._stream import StreamSink
from ._types import Attempt, Request, Waiting
from .errors import LLMDispatchError
from .routing import Candidate


@dataclass(frozen=True)
class CallOptions:
    """How to route one call, apart from what is sent: strategy, fallbacks, spend cap, cache."""

    strategy: Any = None  # None = the dispatcher's; "model", "cheapest", "fastest", ... or a callable
    fallbacks: tuple[str, ...] | None = None  # None = the configured fallbacks
    max_cost: float | None = None  # US dollars for this call, refused before sending if exceeded
    cache: bool | None = None  # None = the cache policy decides; False = never; True = always
    # Told of every wait of about 2 s or more (Retry-After, breaker, limiter), as a stream
    # is; on the loop the call runs on, so keep it quick. For `send`, where no stream is.
    on_wait: Callable[[Waiting], None] | None = None


_OPTION_NAMES = ("strategy", "fallbacks", "max_cost", "cache", "on_wait")


NO_OPTIONS = CallOptions()


def split_options(params: dict[str, Any]) -> CallOptions:
    picked = {k: params.pop(k) for k in _OPTION_NAMES if k in params}
    if picked.get("fallbacks") is not None:
        fb = picked["fallbacks"]
        picked["fallbacks"] = (fb,) if isinstance(fb, str) else tuple(fb)
    return CallOptions(**picked)



class CallState:
    """The state of one call across its attempts."""

    __slots__ = ("_keys", "call_id", "deadline", "errors", "held", "last_chunks", "number",
                 "number_recorded", "opts", "request", "sink", "trail")

    def __init__(self, call_id: str, request: Request, sink: StreamSink | None,
                 opts: CallOptions, deadline: float) -> None:
        self.call_id = call_id
        self.request = request
        self.sink = sink
        self.opts = opts
        self.deadline = deadline
        self.errors: list[LLMDispatchError] = []
        # Failures on the candidate being tried that a retry may still recover; the
        # breaker judges them with the candidate's outcome (resilience/breaker.py).
        self.held: list[LLMDispatchError] = []
        self.trail: list[Attempt] = []
        self.number = 0  # attempts started
        self.number_recorded = 0  # attempts written to the ledger
        self.last_chunks: list[tuple[float, str]] = []
        self._keys: dict[str, str] = {}

    def take_held(self) -> list[LLMDispatchError]:
        held, self.held = self.held, []
        return held

    def cache_key_for(self, cand: Candidate) -> str:
        if self.request.tools:
            return ""  # a cached answer keeps text, not tool calls: never served again
        key = self._keys.get(cand.key)
        if key is None:
            from .ledger._cache import key_for

            key = self._keys[cand.key] = key_for(cand.vendor, cand.model, self.request)
        return key


def request_params(request: Request) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("max_tokens", "temperature", "top_p", "seed", "user", "reasoning"):
        v = getattr(request, name)
        if v is not None:
            out[name] = v
    if request.stop:
        out["stop"] = list(request.stop)
    if request.schema is not None:  # names only: the ledger shows what was asked, briefly
        out["schema"] = request.schema.name
    if request.tools:
        out["tools"] = [t.name for t in request.tools]
    if request.tool_choice is not None:
        out["tool_choice"] = request.tool_choice
    if request.attachments:  # kind, type, size and hash of each image or file: no bytes
        from ._attachments import ledger_view

        out["attachments"] = ledger_view(request.attachments)
    return out
