"""What the vendor adapter tests (tests/test_openai.py, test_azure.py, test_compat.py,
test_gemini.py, test_anthropic.py) share: calling a dispatcher streamed or plain with the
module's own prompt and target, taking a module's emulator fresh for each test, a float
comparison, and the faults as OpenAI's wire reports them (OpenAI, Azure and the compat
servers), with the checks every adapter on that wire must pass.

Every fault is injected by the emulators; nothing of ours is mocked. pytest does not
rewrite the assertions of this module (it is no test module), so each one that can fail
on a vendor's answer says what it saw.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from llmdispatch_nb import Dispatcher
from llmdispatch_nb._types import Response
from llmdispatch_nb.errors import (
    AuthenticationError,
    BadRequestError,
    ConnectError,
    ContentFilterError,
    ContextLengthError,
    LLMDispatchError,
    MidStreamError,
    OverloadedError,
    ProtocolError,
    QuotaExhaustedError,
    RateLimitError,
    ServerError,
    TransportError,
    VendorError,
    VendorTimeoutError,
)
from llmdispatch_nb.sim import Generation, SimServer
from llmdispatch_nb.sim._server import Emulator

E = TypeVar("E", bound=Emulator)


class Calls:
    """A module's two ways to call its vendor, with its own prompt and target as defaults:
    `run_stream(d)` streams to the end and returns the response and every event;
    `call(d, stream)` streams or sends, and returns the response."""

    def __init__(self, prompt: str, target: str) -> None:
        self.prompt = prompt
        self.target = target

    def run_stream(self, d: Dispatcher, prompt: str | None = None, target: str | None = None,
                   **kw: Any) -> tuple[Response, list[Any]]:
        s = d.stream(self.prompt if prompt is None else prompt,
                     self.target if target is None else target, **kw)
        events = list(s)
        assert s.response is not None
        return s.response, events

    def call(self, d: Dispatcher, stream: bool, prompt: str | None = None,
             target: str | None = None, **kw: Any) -> Response:
        if stream:
            return self.run_stream(d, prompt, target, **kw)[0]
        return d.send(self.prompt if prompt is None else prompt,
                      self.target if target is None else target, **kw)


def emulator(sim: SimServer, name: str, cls: type[E]) -> E:
    """The emulator serving `name` on `sim`, checked to be a `cls`."""
    e = sim.emulators[name]
    assert isinstance(e, cls)
    return e


def reset_around(e: E) -> Iterator[E]:
    """A fixture's body: the emulator with no faults and no logged requests, and reset again
    after the test so none of its faults outlives it."""
    e.reset()
    yield e
    e.reset()


def close(a: float | None, b: float | None) -> bool:
    # math.isclose, not pytest.approx: approx peeks at numpy, which the ledger's writer
    # thread may be importing at that moment (a partially initialised module).
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


# -- faults on OpenAI's wire ---------------------------------------------------------------

# kind -> (class when plain, class when streamed, HTTP status, retry_after, retryable)
FaultRow = tuple[type[LLMDispatchError] | None, type[LLMDispatchError] | None,
                 int | None, float | None, bool]

# What each fault comes out as from OpenAI, from Azure, and from a compat (local) server:
# all three speak OpenAI's wire and their adapters read it alike.
OPENAI_WIRE_FAULTS: dict[str, FaultRow] = {
    "429": (RateLimitError, RateLimitError, 429, 1.0, True),
    "429-ms": (RateLimitError, RateLimitError, 429, 1.5, True),
    "429-long": (RateLimitError, RateLimitError, 429, 3600.0, True),
    "429-no-retry": (RateLimitError, RateLimitError, 429, 1.0, False),
    "quota": (QuotaExhaustedError, QuotaExhaustedError, 429, None, False),
    "408": (ServerError, ServerError, 408, None, True),
    "409": (ServerError, ServerError, 409, None, True),
    "500": (ServerError, ServerError, 500, None, True),
    "503": (OverloadedError, OverloadedError, 503, None, True),  # llama.cpp: unavailable_error
    "529": (OverloadedError, OverloadedError, 503, None, True),  # OpenAI has no 529
    "401": (AuthenticationError, AuthenticationError, 401, None, False),
    "400": (BadRequestError, BadRequestError, 400, None, False),
    "context-length": (ContextLengthError, ContextLengthError, 400, None, False),
    "content-filter": (ContentFilterError, ContentFilterError, 400, None, False),
    "content-filter-output": (None, None, None, None, False),  # a reply, cut, not an error
    "blocked": (ContentFilterError, ContentFilterError, 400, None, False),
    "hang": (VendorTimeoutError, VendorTimeoutError, None, None, True),
    "reset": (ConnectError, ConnectError, None, None, True),
    # A plain call has no stream to break: the emulator answers 500 / cuts the body.
    "midstream-error": (ServerError, MidStreamError, 500, None, True),
    "midstream-disconnect": (ConnectError, MidStreamError, None, None, True),
    "malformed-json": (ProtocolError, ProtocolError, None, None, True),
}


def check_openai_wire_fault(kind: str, stream: bool, disp: Dispatcher, emu: Emulator,
                            call: Callable[[Dispatcher, bool], Response], gen: Generation,
                            vendor: str) -> Response | VendorError | TransportError:
    """Script one fault of `kind`, make one call, plain or streamed, and check it against
    its row of OPENAI_WIRE_FAULTS. A filtered output is a reply cut short of `gen`, the
    answer in full; any other fault is one error of the row's class from `vendor`, after
    one request (nothing retried inside): broken mid-stream, it keeps the first three
    tokens and is not retryable; otherwise it has the row's status, retry_after and
    retryability. Returns the reply or the error, for the vendor's own checks."""
    plain_cls, stream_cls, status, retry_after, retryable = OPENAI_WIRE_FAULTS[kind]
    cls = stream_cls if stream else plain_cls
    emu.faults.script(kind)
    if cls is None:
        r = call(disp, stream)
        assert r.finish_reason == "content_filter", f"{kind}: finished {r.finish_reason!r}"
        assert r.text and gen.text.startswith(r.text) and r.text != gen.text, f"{kind}: {r.text!r}"
        return r
    with pytest.raises(LLMDispatchError) as info:
        call(disp, stream)
    err = info.value
    assert type(err) is cls, f"{kind}: {type(err).__name__}: {err}"
    assert getattr(err, "vendor", None) == vendor, f"{kind}: {err!r}"
    sent = len(emu.requests.chat())
    assert sent == 1, f"{kind}: {sent} requests"  # one fault, one request: nothing retried inside
    if isinstance(err, MidStreamError):
        assert err.partial_text == "".join(gen.tokens[:3]), f"{kind}: {err.partial_text!r}"
        assert not err.retryable, f"{kind}: {err!r} is retryable"
        return err
    assert isinstance(err, VendorError | TransportError)
    assert err.retryable is retryable, f"{kind}: {err!r} retryable is {err.retryable}"
    assert err.status == status, f"{kind}: status {err.status}, not {status}"
    assert close(err.retry_after, retry_after), \
        f"{kind}: retry_after {err.retry_after}, not {retry_after}"
    return err
