"""The Anthropic adapter against the Anthropic emulator, over loopback, and the emulator
against Anthropic's own SDK (`anthropic`)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest

from llmdispatch_nb import Dispatcher
from llmdispatch_nb._sse import SSEEvent, iter_sse
from llmdispatch_nb._types import Finish, Request, Response, TextDelta, UsageUpdate
from llmdispatch_nb.errors import (
    AuthenticationError,
    BadRequestError,
    ConnectError,
    ContextLengthError,
    LLMDispatchError,
    MidStreamError,
    OverloadedError,
    ProtocolError,
    QuotaExhaustedError,
    RateLimitError,
    RequestValidationError,
    ServerError,
    VendorError,
    VendorTimeoutError,
)
from llmdispatch_nb.ledger import MemoryLedger
from llmdispatch_nb.resilience import CircuitBreaker, RetryPolicy
from llmdispatch_nb.sim import FAULT_KINDS, Fault, SimServer, generate, serve
from llmdispatch_nb.sim._core import count_tokens
from llmdispatch_nb.sim.anthropic import AnthropicEmulator
from llmdispatch_nb.vendors import Endpoint, Secret, adapter_for, register
from llmdispatch_nb.vendors.anthropic import AnthropicAdapter, AnthropicStream

from ._vendor_support import Calls, emulator, reset_around
from .conftest import CANARY_KEY, assert_no_canary

MODEL = "claude-haiku-4-5"
SERVED = "claude-haiku-4-5-20251001"
TARGET = f"anthropic:{MODEL}"
PROMPT = "Explain the Anthropic stream framing in one paragraph."


def endpoint(sim: SimServer, key: str = CANARY_KEY, **kw: Any) -> Endpoint:
    return Endpoint("anthropic", kw.pop("kind", "anthropic"), sim.base_url("anthropic"),
                    key=Secret(key), simulated=True, **kw)


def dispatcher(sim: SimServer, key: str = CANARY_KEY, **kw: Any) -> Dispatcher:
    ep_kw = {k: kw.pop(k) for k in ("auth", "api_version", "kind") if k in kw}
    # One exchange per call: these tests map each fault; retries are tested on their own.
    kw.setdefault("retry", RetryPolicy.none())
    # A breaker that never trips: a 429 with a long Retry-After would otherwise open it for an
    # hour and every later test in the module would meet CircuitOpenError.
    kw.setdefault("breaker", CircuitBreaker(threshold=1.0, min_calls=1000, window=1000,
                                            long_retry_after_s=1e9))
    kw.setdefault("ledger", MemoryLedger())
    return Dispatcher([endpoint(sim, key, **ep_kw)], dotenv=False, **kw)


@pytest.fixture
def emu(anthropic_sim: SimServer) -> Iterator[AnthropicEmulator]:
    yield from reset_around(emulator(anthropic_sim, "anthropic", AnthropicEmulator))


@pytest.fixture(scope="module")
def d(anthropic_sim: SimServer) -> Iterator[Dispatcher]:
    # A 1 s timeout so the hang fault ends quickly; nothing else comes near it at time_scale=0.
    with dispatcher(anthropic_sim, timeout=httpx.Timeout(1.0, connect=1.0)) as disp:
        yield disp


def expected_text(prompt: str = PROMPT, model: str = MODEL, **kw: Any) -> str:
    return generate(prompt, model, vendor="anthropic", **kw).text


def expected_input_tokens(prompt: str = PROMPT, system: str | None = None) -> int:
    # The emulator counts each block as "role:text\n" plus the 3-token assistant turn.
    text = (f"system:{system}\n" if system else "") + f"user:{prompt}\n"
    return count_tokens(text) + 3


# Only run_stream: this module's `call` (below) is its own, and returns the error as well.
run_stream = Calls(PROMPT, TARGET).run_stream


def raw(sim: SimServer, method: str, path: str, *, key: str | None = CANARY_KEY,
        version: str | None = "2023-06-01", bearer: bool = False, **kw: Any) -> httpx.Response:
    headers: dict[str, str] = {}
    if key is not None:
        headers.update({"Authorization": f"Bearer {key}"} if bearer else {"x-api-key": key})
    if version is not None:
        headers["anthropic-version"] = version
    return httpx.request(method, sim.base_url("anthropic") + path, headers=headers, timeout=10, **kw)


def ask(**over: Any) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 64, "messages": [{"role": "user", "content": PROMPT}],
            **over}


# -- happy paths -------------------------------------------------------------------------


def test_plain_call(d: Dispatcher, emu: AnthropicEmulator) -> None:
    r = d.send(PROMPT, TARGET)
    assert r.text == expected_text()
    assert (r.finish_reason, r.raw_finish_reason) == ("stop", "end_turn")
    assert r.model == SERVED and r.model_requested == MODEL and r.vendor == "anthropic"
    assert r.usage.input_tokens == expected_input_tokens()
    assert r.usage.output_tokens == len(generate(PROMPT, MODEL, vendor="anthropic").tokens)
    assert (r.usage.cache_read_tokens, r.usage.cache_write_tokens) == (0, 0)
    assert r.usage.source == "reported"
    assert r.request_id is not None and r.request_id.startswith("req_")
    assert r.extra["id"].startswith("msg_")
    assert r.cost.usd is not None and r.cost.usd > 0 and r.cost.source == "genai-prices"
    assert r.ttft_s is None and r.simulated
    assert emu.count == 1 and emu.requests.items[0].stream is False


def test_max_tokens_is_length(d: Dispatcher) -> None:
    r = d.send(PROMPT, TARGET, max_tokens=7)
    assert (r.finish_reason, r.raw_finish_reason) == ("length", "max_tokens")
    assert r.usage.output_tokens == 7
    assert r.text == expected_text(max_tokens=7)


def test_stop_sequence(d: Dispatcher) -> None:
    r = d.send(PROMPT, TARGET, stop=["You asked"])
    assert (r.finish_reason, r.raw_finish_reason) == ("stop", "stop_sequence")
    assert r.text == "[simulated claude-haiku-4-5] "
    assert r.extra["stop_sequence"] == "You asked"


def test_streamed_call(d: Dispatcher, emu: AnthropicEmulator) -> None:
    r, events = run_stream(d, system="Answer briefly.")
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert "".join(deltas) == r.text == expected_text("Answer briefly.\n" + PROMPT)
    assert len(deltas) == r.usage.output_tokens
    usages = [e.usage for e in events if isinstance(e, UsageUpdate)]
    # message_start reports the input (and a token of output); message_delta the final output.
    assert usages[0].output_tokens == 1 and usages[-1] == r.usage
    assert r.usage.input_tokens == expected_input_tokens(system="Answer briefly.")
    assert isinstance(events[-1], Finish) and events[-1].raw == "end_turn"
    assert r.finish_reason == "stop" and r.model == SERVED
    assert r.request_id is not None and r.request_id.startswith("req_")
    assert r.ttft_s is not None and r.ttft_s <= r.latency_s
    assert r.cost.usd is not None and r.cost.usd > 0
    assert emu.count == 1 and emu.requests.items[0].stream is True


def test_every_profile_is_served_and_priced(d: Dispatcher, emu: AnthropicEmulator) -> None:
    for key, profile in emu.profiles.items():
        r = d.send("hi", f"anthropic:{key}", max_tokens=5)
        assert r.model == profile.served
        assert r.cost.usd is not None, f"{key} has no price"


def test_asend(d: Dispatcher) -> None:
    r = asyncio.run(d.asend(PROMPT, "anthropic:claude-sonnet-4-5", max_tokens=5))
    assert r.model == "claude-sonnet-4-5-20250929" and r.usage.output_tokens == 5


# The emulator lists the newest models (undated ids since 4.6) first, as the API does.
NEWEST = ["claude-opus-4-7", "claude-sonnet-4-6", "claude-opus-4-6", "claude-opus-4-5-20251101"]


def test_models_through_the_dispatcher(d: Dispatcher) -> None:
    assert d.models("anthropic") == [*NEWEST, "claude-haiku-4-5-20251001",
                                     "claude-sonnet-4-5-20250929", "claude-opus-4-1-20250805"]


@pytest.mark.parametrize("auth", ["default", "bearer"])
def test_key_required_emulator(auth: str) -> None:
    with serve(["anthropic"], time_scale=0, api_key="sk-the-right-key-123456") as sim:
        with dispatcher(sim, "sk-the-right-key-123456", auth=auth) as ok:
            assert ok.send("hi", TARGET, max_tokens=3).usage.output_tokens == 3
        with dispatcher(sim, auth=auth) as wrong, pytest.raises(AuthenticationError) as info:
            wrong.send("hi", TARGET)
    exc = info.value
    assert exc.status == 401 and exc.error_type == "authentication_error" and not exc.retryable
    assert exc.request_id is not None and exc.request_id.startswith("req_")
    assert_no_canary(str(exc), repr(exc), exc.body_excerpt)


# -- prompt caching fills the cache fields ------------------------------------------------

LONG_SYSTEM = "You answer questions about this long reference text. " * 100  # ~1350 tokens


@pytest.fixture(scope="module")
def cached(anthropic_sim: SimServer) -> Iterator[Dispatcher]:
    register("anthropic-cache-system", AnthropicAdapter(prompt_cache="system"))
    with dispatcher(anthropic_sim, kind="anthropic-cache-system") as disp:
        yield disp


def test_system_prompt_cache_write_then_read(cached: Dispatcher, emu: AnthropicEmulator) -> None:
    target = "anthropic:claude-sonnet-4-5"
    first = cached.send("First question?", target, system=LONG_SYSTEM, max_tokens=5)
    second, _ = run_stream(cached, "Second question?", target, system=LONG_SYSTEM, max_tokens=5)
    system_tokens = count_tokens(f"system:{LONG_SYSTEM}\n")
    assert (first.usage.cache_write_tokens, first.usage.cache_read_tokens) == (system_tokens, 0)
    assert (second.usage.cache_write_tokens, second.usage.cache_read_tokens) == (0, system_tokens)
    # input_tokens is the whole prompt either way: cache reads and writes are inside it.
    assert first.usage.input_tokens == expected_input_tokens("First question?", LONG_SYSTEM)
    assert second.usage.input_tokens == expected_input_tokens("Second question?", LONG_SYSTEM)
    assert first.cost.usd is not None and second.cost.usd is not None
    assert second.cost.usd < first.cost.usd  # reads bill at a tenth of the input price


def test_below_the_model_minimum_nothing_is_cached(cached: Dispatcher, emu: AnthropicEmulator) -> None:
    # Haiku 4.5 caches only prefixes of 4096 tokens or more.
    for _ in range(2):
        r = cached.send("Question?", TARGET, system=LONG_SYSTEM, max_tokens=3)
        assert (r.usage.cache_write_tokens, r.usage.cache_read_tokens) == (0, 0)


def test_automatic_cache_breakpoint(anthropic_sim: SimServer, emu: AnthropicEmulator) -> None:
    register("anthropic-cache-auto", AnthropicAdapter(prompt_cache="auto"))
    body = AnthropicAdapter(prompt_cache="auto").body(Request("q"), MODEL, stream=False)
    assert body["cache_control"] == {"type": "ephemeral"}
    with dispatcher(anthropic_sim, kind="anthropic-cache-auto") as disp:
        prompt = LONG_SYSTEM + " Question?"
        a = disp.send(prompt, "anthropic:claude-opus-4-1", max_tokens=3)
        b = disp.send(prompt, "anthropic:claude-opus-4-1", max_tokens=3)
    assert a.usage.cache_write_tokens == b.usage.cache_read_tokens == count_tokens(f"user:{prompt}\n")
    assert a.usage.input_tokens == b.usage.input_tokens == expected_input_tokens(prompt)


# -- faults: one scripted fault, one typed error -----------------------------------------

# kind -> (outcome for a plain call, outcome for a streamed call). An outcome is
# (error class, HTTP status, retry_after, retryable), or "refusal" for Anthropic's
# 200-with-stop_reason-refusal answer to content filtering.
Outcome = Any
FAULTS: dict[str, tuple[Outcome, Outcome]] = {
    "429": ((RateLimitError, 429, 2.0, True),) * 2,
    "429-ms": ((RateLimitError, 429, 0.25, True),) * 2,
    "429-long": ((RateLimitError, 429, 3600.0, True),) * 2,
    "429-no-retry": ((RateLimitError, 429, 2.0, False),) * 2,
    "quota": ((QuotaExhaustedError, 429, None, False),) * 2,
    "408": ((ServerError, 408, None, True),) * 2,
    "409": ((ServerError, 409, None, True),) * 2,
    "500": ((ServerError, 500, None, True),) * 2,
    "503": ((OverloadedError, 503, None, True),) * 2,
    "529": ((OverloadedError, 529, None, True),) * 2,
    "401": ((AuthenticationError, 401, None, False),) * 2,
    "400": ((BadRequestError, 400, None, False),) * 2,
    "context-length": ((ContextLengthError, 400, None, False),) * 2,
    "content-filter": ("refusal", "refusal"),
    "content-filter-output": ("refusal", "refusal"),
    "blocked": ("refusal", "refusal"),
    "hang": ((VendorTimeoutError, None, None, True),) * 2,
    "reset": ((ConnectError, None, None, True),) * 2,
    # A plain call cannot fail after 200: the emulator answers 529 instead.
    "midstream-error": ((OverloadedError, 529, None, True), (MidStreamError, None, None, False)),
    # A plain call's body is cut: the reset reads as a connection error.
    "midstream-disconnect": ((ConnectError, None, None, True), (MidStreamError, None, None, False)),
    "malformed-json": ((ProtocolError, None, None, True),) * 2,
}
SCRIPTED = {"429-ms": Fault("429-ms", retry_after=0.25)}


def test_every_fault_kind_has_a_row() -> None:
    assert set(FAULTS) == set(FAULT_KINDS)


def call(d: Dispatcher, streamed: bool) -> tuple[Response | None, LLMDispatchError | None, str]:
    streamed_text = ""
    try:
        if streamed:
            s = d.stream(PROMPT, TARGET)
            try:
                for ev in s:
                    if isinstance(ev, TextDelta):
                        streamed_text += ev.text
            finally:
                s.close()
            return s.response, None, streamed_text
        return d.send(PROMPT, TARGET), None, ""
    except LLMDispatchError as exc:
        return None, exc, streamed_text


@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("kind", list(FAULTS))
def test_fault(d: Dispatcher, emu: AnthropicEmulator, kind: str, streamed: bool) -> None:
    emu.faults.script(SCRIPTED.get(kind, kind))
    response, exc, streamed_text = call(d, streamed)
    outcome = FAULTS[kind][streamed]
    if outcome == "refusal":
        assert exc is None and response is not None
        assert (response.finish_reason, response.raw_finish_reason) == ("content_filter", "refusal")
        after = Fault(kind).after_tokens if kind == "content-filter-output" else 0
        assert response.text == "".join(generate(PROMPT, MODEL, vendor="anthropic").tokens[:after])
        assert response.usage.output_tokens == after
    else:
        cls, status, retry_after, retryable = outcome
        assert response is None and exc is not None, "the fault did not raise"
        assert type(exc) is cls, f"{kind}: got {type(exc).__name__}: {exc}"
        assert exc.status == status
        assert exc.retry_after == retry_after
        assert exc.retryable is retryable
        if isinstance(exc, VendorError):
            assert exc.vendor == "anthropic"
            if status is not None:
                assert exc.request_id is not None and exc.request_id.startswith("req_")
            assert_no_canary(exc.body_excerpt)
        if isinstance(exc, MidStreamError):
            assert exc.partial_text == streamed_text == "".join(
                generate(PROMPT, MODEL, vendor="anthropic").tokens[: Fault(kind).after_tokens])
        assert_no_canary(str(exc), repr(exc))
    # The next call is answered normally: the fault was used up, the connection pool is fine.
    assert d.send("again", TARGET, max_tokens=2).usage.output_tokens == 2


def test_midstream_error_carries_the_vendor_error_type(d: Dispatcher, emu: AnthropicEmulator) -> None:
    emu.faults.script(Fault("midstream-error", after_tokens=5))
    with pytest.raises(MidStreamError) as info:
        run_stream(d)
    exc = info.value
    assert exc.error_type == "overloaded_error" and "Overloaded" in str(exc)
    assert exc.partial_text == "".join(generate(PROMPT, MODEL, vendor="anthropic").tokens[:5])


def test_error_event_before_any_text_is_retryable(d: Dispatcher, emu: AnthropicEmulator) -> None:
    emu.faults.script(Fault("midstream-error", after_tokens=0))
    with pytest.raises(MidStreamError) as info:
        run_stream(d)
    assert info.value.partial_text == "" and info.value.retryable


def test_529_retry_after_is_read(d: Dispatcher, emu: AnthropicEmulator) -> None:
    emu.faults.script(Fault("529", retry_after=7))
    with pytest.raises(OverloadedError) as info:
        d.send(PROMPT, TARGET)
    assert info.value.retry_after == 7.0 and info.value.error_type == "overloaded_error"


def test_quota_carries_the_error_code(d: Dispatcher, emu: AnthropicEmulator) -> None:
    emu.faults.script("quota")
    with pytest.raises(QuotaExhaustedError) as info:
        d.send(PROMPT, TARGET)
    assert info.value.code == "enforced_spend_limit_reached"


def test_canary_never_leaks(d: Dispatcher, emu: AnthropicEmulator,
                            log_text: pytest.LogCaptureFixture) -> None:
    errors: list[LLMDispatchError] = []
    for kind in ("401", "429", "context-length", "midstream-error", "reset", "malformed-json"):
        emu.faults.script(kind)
        _, exc, _ = call(d, streamed=kind != "context-length")
        assert exc is not None
        errors.append(exc)
    ok = d.send(PROMPT, TARGET)
    records = d.ledger.records
    assert_no_canary(*(str(e) for e in errors), *(repr(e) for e in errors),
                     *(getattr(e, "body_excerpt", "") for e in errors), repr(ok), repr(d),
                     repr(d.endpoints["anthropic"]), *(repr(r) for r in records), log_text.text)


# -- what the adapter sends ----------------------------------------------------------------


def build(request: Request, ep: Endpoint, *, stream: bool = False) -> tuple[httpx.Request, dict[str, Any]]:
    req = AnthropicAdapter().build_request(request, MODEL, ep, stream=stream)
    return req, json.loads(req.content)


def test_request_shape() -> None:
    ep = Endpoint("anthropic", "anthropic", "https://api.anthropic.com", key=Secret(CANARY_KEY))
    req, body = build(Request([{"role": "system", "content": "Be terse."},
                               {"role": "user", "content": "hi"},
                               {"role": "assistant", "content": "Hello"},
                               {"role": "user", "content": "again"}],
                              temperature=0.5, stop=["\n\n"], user="u-42", seed=7), ep, stream=True)
    assert str(req.url) == "https://api.anthropic.com/v1/messages"
    assert req.headers["x-api-key"] == CANARY_KEY and "authorization" not in req.headers
    assert req.headers["anthropic-version"] == "2023-06-01"
    assert body == {
        "model": MODEL, "max_tokens": 4096, "system": "Be terse.",
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello"},
                     {"role": "user", "content": "again"}],
        "temperature": 0.5, "stop_sequences": ["\n\n"], "metadata": {"user_id": "u-42"},
        "stream": True,
    }  # no seed: Anthropic has none


def test_request_auth_version_and_base_url() -> None:
    ep = Endpoint("anthropic", "anthropic", "https://proxy.example/v1/", key=Secret(CANARY_KEY),
                  auth="bearer", api_version="2026-10-21", headers={"anthropic-beta": "x"})
    req, body = build(Request("hi", max_tokens=10, top_p=0.9), ep)
    assert str(req.url) == "https://proxy.example/v1/messages"
    assert req.headers["authorization"] == f"Bearer {CANARY_KEY}" and "x-api-key" not in req.headers
    assert req.headers["anthropic-version"] == "2026-10-21"
    assert req.headers["anthropic-beta"] == "x"
    assert body["max_tokens"] == 10 and body["top_p"] == 0.9 and "system" not in body


@pytest.mark.parametrize("temperature", [1.01, 2])
def test_temperature_above_one_is_refused(d: Dispatcher, emu: AnthropicEmulator,
                                          temperature: float) -> None:
    with pytest.raises(RequestValidationError, match=r"Anthropic, which accepts 0 to 1"):
        d.send(PROMPT, TARGET, temperature=temperature)
    assert emu.count == 0  # refused before any byte left
    assert d.send(PROMPT, TARGET, temperature=1, max_tokens=2).usage.output_tokens == 2


def test_adapter_is_registered() -> None:
    adapter = adapter_for("anthropic")
    assert isinstance(adapter, AnthropicAdapter)
    assert adapter.key_variables == ("ANTHROPIC_API_KEY",) and adapter.price_provider == "anthropic"
    with pytest.raises(ValueError, match="prompt_cache"):
        AnthropicAdapter(prompt_cache="always")  # type: ignore[arg-type]


# -- the stream parser on events the emulator does not send --------------------------------


def feed(parser: AnthropicStream, name: str, data: dict[str, Any]) -> list[Any]:
    return parser.feed(SSEEvent(name, json.dumps({"type": name, **data})))


def test_stream_parser_merges_usage_and_skips_what_is_not_text() -> None:
    p = AnthropicStream("anthropic")
    feed(p, "message_start", {"message": {"id": "msg_1", "model": SERVED, "usage": {
        "input_tokens": 10, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 1000,
        "output_tokens": 1}}})
    assert feed(p, "ping", {}) == []
    # Tool input is not text: it comes as tool-call pieces (tests/test_tools.py).
    assert [e.kind for e in feed(p, "content_block_start", {"index": 0, "content_block": {
        "type": "tool_use", "id": "t", "name": "f", "input": {}}})] == ["tool_call_delta"]
    assert [e.kind for e in feed(p, "content_block_delta", {"index": 0, "delta": {
        "type": "input_json_delta", "partial_json": "{\"a\""}})] == ["tool_call_delta"]
    assert feed(p, "content_block_delta", {"index": 1, "delta": {
        "type": "thinking_delta", "thinking": "hmm"}}) == []
    assert feed(p, "content_block_delta", {"index": 2, "delta": {
        "type": "text_delta", "text": "Hi"}}) == [TextDelta("Hi")]
    assert p.feed(SSEEvent("some_future_event", "not even json")) == []
    out = feed(p, "message_delta", {"delta": {"stop_reason": "tool_use"}, "usage": {
        "output_tokens": 42, "cache_read_input_tokens": None}})
    assert out[0] == Finish("tool_calls", "tool_use")
    usage = out[1].usage
    assert (usage.input_tokens, usage.output_tokens) == (1110, 42)
    assert (usage.cache_read_tokens, usage.cache_write_tokens) == (1000, 100)
    with pytest.raises(ProtocolError):
        p.close()  # no message_stop yet: the stream was cut short
    feed(p, "message_stop", {})
    assert p.close() == []


@pytest.mark.parametrize(("raw_reason", "finish"), [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"),
    ("model_context_window_exceeded", "length"), ("tool_use", "tool_calls"),
    ("refusal", "content_filter"), ("pause_turn", "other"), ("something_new", "other")])
def test_stop_reasons(raw_reason: str, finish: str) -> None:
    p = AnthropicStream("anthropic")
    assert feed(p, "message_delta", {"delta": {"stop_reason": raw_reason}, "usage": {
        "output_tokens": 1}})[0] == Finish(finish, raw_reason)  # type: ignore[arg-type]


def test_error_event_of_another_type() -> None:
    p = AnthropicStream("anthropic")
    feed(p, "content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "ab"}})
    with pytest.raises(MidStreamError) as info:
        feed(p, "error", {"error": {"type": "api_error", "message": "Internal server error"}})
    assert info.value.error_type == "api_error" and info.value.partial_text == "ab"


@pytest.mark.parametrize(("status", "error", "cls"), [
    (400, {"type": "invalid_request_error",
           "message": "Your credit balance is too low to access the Anthropic API."},
     QuotaExhaustedError),
    (429, {"type": "rate_limit_error", "message": "You have exceeded your spend limit."},
     QuotaExhaustedError),
    (402, {"type": "billing_error", "message": "Billing problem"}, QuotaExhaustedError),
    (400, {"type": "invalid_request_error", "message": "input length and `max_tokens` exceed "
           "context limit: 198000 + 4096 > 200000, decrease input length or `max_tokens` and try "
           "again"}, ContextLengthError),
    (404, {"type": "not_found_error", "message": "model: claude-x"}, BadRequestError),
    (413, {"type": "request_too_large", "message": "Request exceeds the maximum size"},
     BadRequestError),
    (403, {"type": "permission_error", "message": "no"}, AuthenticationError),
    (504, {"type": "timeout_error", "message": "timed out"}, ServerError),
])
def test_error_mapping(status: int, error: dict[str, str], cls: type[VendorError]) -> None:
    ep = Endpoint("anthropic", "anthropic", "https://api.anthropic.com")
    body = {"type": "error", "error": error, "request_id": "req_body"}
    exc = AnthropicAdapter().map_error(httpx.Response(status, json=body), ep)
    assert type(exc) is cls and exc.status == status and exc.request_id == "req_body"
    assert exc.error_type == error["type"]


# -- the emulator, on the wire ---------------------------------------------------------------


def test_sse_framing(anthropic_sim: SimServer, emu: AnthropicEmulator) -> None:
    r = raw(anthropic_sim, "POST", "/v1/messages", json=ask(stream=True))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["request-id"].startswith("req_")
    assert b"[DONE]" not in r.content
    frames = r.content.split(b"\n\n")
    assert frames[-1] == b"" and all(f.startswith(b"event: ") for f in frames[:-1])
    events = iter_sse([r.content])
    for ev in events:
        assert json.loads(ev.data)["type"] == ev.event
    names = [ev.event for ev in events]
    deltas = names.count("content_block_delta")
    assert names == (["message_start", "content_block_start", "ping"]
                     + ["content_block_delta"] * deltas
                     + ["content_block_stop", "message_delta", "message_stop"])
    start = json.loads(events[0].data)["message"]
    assert start["model"] == SERVED and start["content"] == [] and start["stop_reason"] is None
    assert start["usage"]["output_tokens"] == 1
    final = json.loads(events[-2].data)
    assert final["usage"] == {"output_tokens": deltas} and deltas == 64
    assert final["delta"] == {"stop_reason": "max_tokens", "stop_sequence": None}


def test_plain_body_shape(anthropic_sim: SimServer) -> None:
    r = raw(anthropic_sim, "POST", "/v1/messages", json=ask(model=SERVED), bearer=True,
            version="2026-10-21")
    body = r.json()
    assert r.status_code == 200 and body["type"] == "message" and body["role"] == "assistant"
    assert body["model"] == SERVED and body["content"][0]["type"] == "text"
    assert set(body["usage"]) >= {"input_tokens", "output_tokens", "cache_creation_input_tokens",
                                  "cache_read_input_tokens", "service_tier"}


@pytest.mark.parametrize(("change", "status", "etype", "needle"), [
    ({"key": None}, 401, "authentication_error", "x-api-key"),
    ({"key": ""}, 401, "authentication_error", "x-api-key"),
    ({"version": None}, 400, "invalid_request_error", "anthropic-version"),
    ({"version": "latest"}, 400, "invalid_request_error", "anthropic-version"),
    ({"body": ask(max_tokens=None)}, 400, "invalid_request_error", "max_tokens: Field required"),
    ({"body": ask(max_tokens=0)}, 400, "invalid_request_error", "max_tokens"),
    ({"body": ask(max_tokens=100_000)}, 400, "invalid_request_error", "maximum allowed"),
    ({"body": ask(messages=[])}, 400, "invalid_request_error", "at least 1 item"),
    ({"body": ask(messages=[{"role": "system", "content": "x"}])}, 400,
     "invalid_request_error", "'user' or 'assistant'"),
    ({"body": ask(messages=[{"role": "user", "content": ""}])}, 400,
     "invalid_request_error", "non-empty content"),
    ({"body": ask(temperature=1.5)}, 400, "invalid_request_error", "temperature"),
    ({"body": ask(temperature=0.5, top_p=0.9)}, 400, "invalid_request_error", "top_p"),
    ({"body": ask(model="claude-nonexistent")}, 404, "not_found_error", "claude-nonexistent"),
    ({"body": ask(messages=[{"role": "user", "content": "x" * 800_020}])}, 400,
     "invalid_request_error", "prompt is too long: 200010 tokens > 200000 maximum"),
    ({"body": ask(max_tokens=64_000, messages=[{"role": "user", "content": "x" * 600_000}])},
     400, "invalid_request_error", "exceed context limit: 150005 + 64000 > 200000"),
    ({"path": "/v1/complete"}, 404, "not_found_error", "/v1/complete"),
])
def test_refusals(anthropic_sim: SimServer, emu: AnthropicEmulator, change: dict[str, Any],
                  status: int, etype: str, needle: str) -> None:
    body = change.get("body", ask())
    if body.get("max_tokens") is None:
        body.pop("max_tokens", None)
    kw = {k: change[k] for k in ("key", "version") if k in change}
    r = raw(anthropic_sim, "POST", change.get("path", "/v1/messages"), json=body, **kw)
    assert r.status_code == status
    data = r.json()
    assert data["type"] == "error" and data["error"]["type"] == etype
    assert needle in data["error"]["message"]
    assert data["request_id"] == r.headers["request-id"]


def test_count_tokens_matches_usage(anthropic_sim: SimServer, d: Dispatcher) -> None:
    r = raw(anthropic_sim, "POST", "/v1/messages/count_tokens",
            json={"model": MODEL, "messages": [{"role": "user", "content": PROMPT}]})
    assert r.status_code == 200
    assert r.json() == {"input_tokens": d.send(PROMPT, TARGET, max_tokens=1).usage.input_tokens}


def test_models_paging(anthropic_sim: SimServer) -> None:
    def page(**params: Any) -> dict[str, Any]:
        r = raw(anthropic_sim, "GET", "/v1/models", params=params)
        assert r.status_code == 200, r.text
        return r.json()

    everything = page()
    ids = [m["id"] for m in everything["data"]]
    assert ids == [*NEWEST, SERVED, "claude-sonnet-4-5-20250929", "claude-opus-4-1-20250805"]
    assert (everything["has_more"], everything["first_id"], everything["last_id"]) == (
        False, ids[0], ids[-1])
    first = page(limit=2)
    assert [m["id"] for m in first["data"]] == ids[:2] and first["has_more"]
    rest = page(limit=2, after_id=first["last_id"])
    assert [m["id"] for m in rest["data"]] == ids[2:4] and rest["has_more"]
    last = page(limit=5, after_id=ids[3])
    assert [m["id"] for m in last["data"]] == ids[4:] and not last["has_more"]
    back = page(limit=1, before_id=ids[2])
    assert [m["id"] for m in back["data"]] == ids[1:2] and back["has_more"]
    model = everything["data"][len(NEWEST)]
    assert model["type"] == "model" and model["display_name"] == "Claude Haiku 4.5"
    assert model["created_at"] == "2025-10-01T00:00:00Z" and model["max_input_tokens"] == 200_000
    for name in (MODEL, SERVED):
        assert raw(anthropic_sim, "GET", f"/v1/models/{name}").json() == model
    missing = raw(anthropic_sim, "GET", "/v1/models/claude-2")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"
    assert raw(anthropic_sim, "GET", "/v1/models", params={"limit": 0}).status_code == 400


# -- the emulator against the official SDK -----------------------------------------------------


@pytest.fixture
def sdk(anthropic_sim: SimServer) -> Iterator[anthropic.Anthropic]:
    client = anthropic.Anthropic(api_key=CANARY_KEY, base_url=anthropic_sim.base_url("anthropic"),
                                 max_retries=0)
    yield client
    client.close()


def test_sdk_create(sdk: anthropic.Anthropic, emu: AnthropicEmulator) -> None:
    m = sdk.messages.create(model=MODEL, max_tokens=1024, system="Be brief.",
                            messages=[{"role": "user", "content": PROMPT}])
    assert m.model == SERVED and m.stop_reason == "end_turn" and m.role == "assistant"
    assert m.content[0].type == "text" and m.content[0].text == expected_text("Be brief.\n" + PROMPT)
    assert m.usage.input_tokens == expected_input_tokens(system="Be brief.")
    assert m.usage.output_tokens == len(generate("Be brief.\n" + PROMPT, MODEL, vendor="anthropic").tokens)
    assert m._request_id is not None and m._request_id.startswith("req_")


def test_sdk_stream(sdk: anthropic.Anthropic, emu: AnthropicEmulator) -> None:
    with sdk.messages.stream(model=MODEL, max_tokens=1024,
                             messages=[{"role": "user", "content": PROMPT}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == expected_text() == final.content[0].text  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn" and final.model == SERVED
    assert final.usage.input_tokens == expected_input_tokens()
    assert final.usage.output_tokens == len(generate(PROMPT, MODEL, vendor="anthropic").tokens)


def test_sdk_prompt_cache_fields(sdk: anthropic.Anthropic, emu: AnthropicEmulator) -> None:
    system: Any = [{"type": "text", "text": LONG_SYSTEM, "cache_control": {"type": "ephemeral",
                                                                           "ttl": "1h"}}]
    usages = []
    for _ in range(2):
        m = sdk.messages.create(model="claude-opus-4-1", max_tokens=3, system=system,
                                messages=[{"role": "user", "content": "q"}])
        usages.append(m.usage)
    tokens = count_tokens(f"system:{LONG_SYSTEM}\n")
    assert usages[0].cache_creation_input_tokens == tokens
    assert usages[0].cache_creation is not None
    assert usages[0].cache_creation.ephemeral_1h_input_tokens == tokens
    assert usages[1].cache_read_input_tokens == tokens and usages[1].cache_creation_input_tokens == 0


def test_sdk_models_paging(sdk: anthropic.Anthropic, emu: AnthropicEmulator) -> None:
    ids = [m.id for m in sdk.models.list(limit=1)]
    assert ids == [*NEWEST, SERVED, "claude-sonnet-4-5-20250929", "claude-opus-4-1-20250805"]
    assert len(emu.requests) == len(ids)  # one page each, following last_id
    assert sdk.models.retrieve(MODEL).display_name == "Claude Haiku 4.5"


def test_sdk_count_tokens(sdk: anthropic.Anthropic) -> None:
    n = sdk.messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": PROMPT}])
    assert n.input_tokens == expected_input_tokens()


def test_sdk_errors(sdk: anthropic.Anthropic, emu: AnthropicEmulator) -> None:
    messages: Any = [{"role": "user", "content": PROMPT}]
    emu.faults.script("429")
    with pytest.raises(anthropic.RateLimitError) as rl:
        sdk.messages.create(model=MODEL, max_tokens=10, messages=messages)
    assert rl.value.response.headers["retry-after"] == "2" and rl.value.type == "rate_limit_error"
    emu.faults.script("quota")
    with pytest.raises(anthropic.RateLimitError) as quota:
        sdk.messages.create(model=MODEL, max_tokens=10, messages=messages)
    assert quota.value.error_code == "enforced_spend_limit_reached"
    emu.faults.script("529")
    with pytest.raises(anthropic.OverloadedError) as over:
        sdk.messages.create(model=MODEL, max_tokens=10, messages=messages)
    assert over.value.status_code == 529 and over.value.type == "overloaded_error"
    emu.faults.script("context-length")
    with pytest.raises(anthropic.BadRequestError, match="prompt is too long"):
        sdk.messages.create(model=MODEL, max_tokens=10, messages=messages)
    emu.faults.script("midstream-error")
    with (pytest.raises(anthropic.APIStatusError) as mid,
          sdk.messages.stream(model=MODEL, max_tokens=100, messages=messages) as stream):
        for _ in stream.text_stream:
            pass
    assert mid.value.status_code == 200 and mid.value.type == "overloaded_error"
    assert mid.value.request_id is not None and mid.value.request_id.startswith("req_")
    with pytest.raises(anthropic.NotFoundError):
        sdk.messages.create(model="claude-nonexistent", max_tokens=10, messages=messages)


def test_sdk_retries_honour_retry_after_ms(anthropic_sim: SimServer, emu: AnthropicEmulator) -> None:
    client = anthropic.Anthropic(api_key=CANARY_KEY, base_url=anthropic_sim.base_url("anthropic"),
                                 max_retries=2)
    try:
        emu.faults.script(Fault("429-ms", retry_after=0.01), "409")
        m = client.messages.create(model=MODEL, max_tokens=3,
                                   messages=[{"role": "user", "content": "hi"}])
    finally:
        client.close()
    assert m.usage.output_tokens == 3
    assert [(r.fault, r.retry_count) for r in emu.requests.chat()] == [
        ("429-ms", "0"), ("409", "1"), (None, "2")]


def test_sdk_wrong_key() -> None:
    with serve(["anthropic"], time_scale=0, api_key="sk-the-right-key-123456") as sim:
        client = anthropic.Anthropic(api_key=CANARY_KEY, base_url=sim.base_url("anthropic"),
                                     max_retries=0)
        try:
            with pytest.raises(anthropic.AuthenticationError) as info:
                client.messages.create(model=MODEL, max_tokens=3,
                                       messages=[{"role": "user", "content": "hi"}])
        finally:
            client.close()
    assert info.value.type == "authentication_error"
    assert_no_canary(str(info.value))
