"""The OpenAI adapter against the OpenAI emulator, over loopback, and the emulator against
OpenAI's own SDK (openai-python)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from llmdispatch_nb import Dispatcher
from llmdispatch_nb._sse import iter_sse
from llmdispatch_nb._types import Finish, Response, TextDelta, Usage, UsageUpdate
from llmdispatch_nb.errors import AuthenticationError, MidStreamError, ServerError, VendorError
from llmdispatch_nb.resilience import RetryPolicy
from llmdispatch_nb.sim import FAULT_KINDS, Fault, SimServer, generate, serve
from llmdispatch_nb.sim._openai_wire import go_duration, mask_key
from llmdispatch_nb.sim.openai import OpenAIEmulator
from llmdispatch_nb.vendors import Endpoint, Secret

from ._vendor_support import (
    OPENAI_WIRE_FAULTS,
    Calls,
    check_openai_wire_fault,
    close,
    emulator,
    reset_around,
)
from .conftest import CANARY_KEY, assert_no_canary

MODEL = "gpt-4o-mini"
SERVED = "gpt-4o-mini-2024-07-18"
TARGET = f"openai:{MODEL}"
PROMPT = "Explain how chat completion streaming works, in one paragraph."
HI = [{"role": "user", "content": "hi"}]


def endpoint(sim: SimServer, key: str = CANARY_KEY) -> Endpoint:
    return Endpoint("openai", "openai", sim.base_url("openai"), key=Secret(key), simulated=True)


def dispatcher(sim: SimServer, key: str = CANARY_KEY, **kw: Any) -> Dispatcher:
    # One exchange per call: these tests map each fault; retries are tested on their own.
    kw.setdefault("retry", RetryPolicy.none())
    return Dispatcher([endpoint(sim, key)], dotenv=False, **kw)


@pytest.fixture
def emu(openai_sim: SimServer) -> Iterator[OpenAIEmulator]:
    yield from reset_around(emulator(openai_sim, "openai", OpenAIEmulator))


# Function-scoped, so one test's tripped circuit breaker never reaches the next.
@pytest.fixture
def d(openai_sim: SimServer) -> Iterator[Dispatcher]:
    with dispatcher(openai_sim) as disp:
        yield disp


@pytest.fixture
def quick(openai_sim: SimServer) -> Iterator[Dispatcher]:
    with dispatcher(openai_sim, timeout=httpx.Timeout(1.0, connect=1.0)) as disp:
        yield disp


def expected(prompt: str = PROMPT, model: str = MODEL, **kw: Any) -> Any:
    return generate(prompt, model, vendor="openai", **kw)


calls = Calls(PROMPT, TARGET)
run_stream, call = calls.run_stream, calls.call


def gpt_4o_mini_cost(u: Usage) -> float:
    # List price, $ per million tokens: 0.15 input, 0.075 cached input, 0.60 output.
    return ((u.input_tokens - u.cache_read_tokens) * 0.15 + u.cache_read_tokens * 0.075
            + u.output_tokens * 0.60) / 1e6


# -- happy paths -------------------------------------------------------------------------


def test_send_reads_text_usage_finish_model_and_cost(d: Dispatcher, emu: OpenAIEmulator) -> None:
    gen = expected()
    r = d.send(PROMPT, TARGET)
    assert r.text == gen.text
    assert r.finish_reason == "stop" and r.raw_finish_reason == "stop"
    assert r.model == SERVED and r.model_requested == MODEL and r.vendor == "openai"
    assert r.usage == Usage(input_tokens=gen.input_tokens, output_tokens=len(gen.tokens))
    assert r.request_id is not None and re.fullmatch(r"req_[0-9a-f]{32}", r.request_id)
    assert r.extra["id"].startswith("chatcmpl-")
    assert r.ttft_s is None and r.simulated
    assert r.cost.source == "genai-prices"
    assert close(r.cost.usd, gpt_4o_mini_cost(r.usage))
    (seen,) = emu.requests.chat()
    assert seen.path == "/v1/chat/completions" and not seen.stream and seen.model == MODEL


def test_stream_reads_deltas_usage_and_finish(d: Dispatcher, emu: OpenAIEmulator) -> None:
    gen = expected()
    r, events = run_stream(d)
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert deltas == list(gen.tokens) and r.text == gen.text
    usages = [e.usage for e in events if isinstance(e, UsageUpdate)]
    assert usages == [Usage(input_tokens=gen.input_tokens, output_tokens=len(gen.tokens))]
    assert r.usage == usages[0] and r.usage.source == "reported"
    assert isinstance(events[-1], Finish) and events[-1].reason == "stop"
    assert r.model == SERVED and r.request_id and r.request_id.startswith("req_")
    assert r.ttft_s is not None and 0 <= r.ttft_s <= r.latency_s
    assert close(r.cost.usd, gpt_4o_mini_cost(r.usage))
    (seen,) = emu.requests.chat()
    assert seen.stream


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_repeated_long_prompt_reads_cached_tokens(d: Dispatcher, emu: OpenAIEmulator,
                                                    stream: bool) -> None:
    long = "Summarise these notes. " + "A note about caching prompts. " * 200
    first = call(d, stream, long)
    second = call(d, stream, long)
    assert first.usage.input_tokens >= 1024 and first.usage.cache_read_tokens == 0
    assert second.usage.cache_read_tokens == second.usage.input_tokens // 128 * 128
    assert second.text == first.text
    assert close(second.cost.usd, gpt_4o_mini_cost(second.usage))
    assert second.cost.usd is not None and first.cost.usd is not None
    assert second.cost.usd < first.cost.usd


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_reasoning_tokens_bill_as_output(d: Dispatcher, emu: OpenAIEmulator, stream: bool) -> None:
    gen = expected(model="o4-mini")
    r = call(d, stream, target="openai:o4-mini")
    assert r.text == gen.text and r.model == "o4-mini-2025-04-16"
    assert r.usage.reasoning_tokens > 0
    assert r.usage.output_tokens == len(gen.tokens) + r.usage.reasoning_tokens


def test_reasoning_can_eat_the_whole_budget(d: Dispatcher, emu: OpenAIEmulator) -> None:
    r = d.send(PROMPT, "openai:o4-mini", max_tokens=40)
    assert r.finish_reason == "length" and r.text == ""
    assert r.usage.output_tokens == r.usage.reasoning_tokens == 40


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_max_tokens_finishes_with_length(d: Dispatcher, emu: OpenAIEmulator, stream: bool) -> None:
    r = call(d, stream, max_tokens=7)
    assert r.finish_reason == "length" and r.raw_finish_reason == "length"
    assert r.text == expected(max_tokens=7).text and r.usage.output_tokens == 7


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_stop_sequence_cuts_the_answer(d: Dispatcher, emu: OpenAIEmulator, stream: bool) -> None:
    full = expected().text
    stop = full.split()[6]
    r = call(d, stream, stop=[stop])
    assert r.finish_reason == "stop" and r.text == full[: full.index(stop)]


def test_asend_and_astream(d: Dispatcher, emu: OpenAIEmulator) -> None:
    async def both() -> tuple[Response, Response]:
        r = await d.asend(PROMPT, TARGET)
        s = d.astream(PROMPT, TARGET)
        return r, await s.result()

    plain, streamed = asyncio.run(both())
    assert plain.text == streamed.text == expected().text
    assert plain.usage == streamed.usage


def test_models_lists_and_gets(d: Dispatcher, openai_sim: SimServer, emu: OpenAIEmulator) -> None:
    ids = d.models("openai")
    assert {MODEL, SERVED, "gpt-4o", "o4-mini", "gpt-5", "gpt-5.5"} <= set(ids)
    assert not {"llama3.2", "qwen3:8b"} & set(ids)  # local models are the local server's
    base = openai_sim.base_url("openai")
    auth = {"Authorization": f"Bearer {CANARY_KEY}"}
    card = httpx.get(f"{base}/models/gpt-4o", headers=auth).json()
    assert card == {"id": "gpt-4o", "object": "model", "created": 1_722_814_719,
                    "owned_by": "system"}
    r = httpx.get(f"{base}/models/gpt-9", headers=auth)
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    assert emu.count == 0  # listings are not generation requests


# -- the emulator's wire, read raw -------------------------------------------------------


def raw_post(sim: SimServer, body: dict[str, Any], key: str | None = CANARY_KEY) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{sim.base_url('openai')}/chat/completions", json=body, headers=headers)


def test_headers_are_openais(openai_sim: SimServer, emu: OpenAIEmulator) -> None:
    first = raw_post(openai_sim, {"model": MODEL, "messages": HI})
    second = raw_post(openai_sim, {"model": MODEL, "messages": HI})
    h = second.headers
    assert re.fullmatch(r"req_[0-9a-f]{32}", h["x-request-id"])
    assert h["x-request-id"] != first.headers["x-request-id"]
    assert h["openai-version"] == "2020-10-01" and h["openai-processing-ms"].isdigit()
    assert int(h["x-ratelimit-remaining-requests"]) == int(first.headers["x-ratelimit-remaining-requests"]) - 1
    assert int(h["x-ratelimit-remaining-tokens"]) < int(h["x-ratelimit-limit-tokens"])
    go = re.compile(r"0s|\d+ms|(\d+h)?(\d+m)?\d+(\.\d+)?s")
    assert go.fullmatch(h["x-ratelimit-reset-requests"]) and go.fullmatch(h["x-ratelimit-reset-tokens"])


def test_plain_body_is_exactly_the_reference_shape(openai_sim: SimServer,
                                                   emu: OpenAIEmulator) -> None:
    body = raw_post(openai_sim, {"model": MODEL, "messages": HI, "max_tokens": 3}).json()
    assert set(body) == {"id", "object", "created", "model", "choices", "usage",
                         "service_tier", "system_fingerprint"}
    assert body["object"] == "chat.completion" and body["model"] == SERVED
    assert body["system_fingerprint"].startswith("fp_")
    (choice,) = body["choices"]
    assert choice["message"] == {"role": "assistant", "content": expected("hi", max_tokens=3).text,
                                 "refusal": None}
    assert choice["finish_reason"] == "length" and choice["logprobs"] is None
    assert body["usage"] == {
        "prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0,
                                      "rejected_prediction_tokens": 0}}


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_both_max_token_fields_are_accepted(openai_sim: SimServer, emu: OpenAIEmulator,
                                            field: str) -> None:
    body = raw_post(openai_sim, {"model": MODEL, "messages": HI, field: 4}).json()
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 4


@pytest.mark.parametrize("include_usage", [True, False], ids=["usage", "no-usage"])
def test_stream_framing(openai_sim: SimServer, emu: OpenAIEmulator, include_usage: bool) -> None:
    body: dict[str, Any] = {"model": MODEL, "messages": HI, "stream": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    r = raw_post(openai_sim, body)
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.content.endswith(b"data: [DONE]\n\n")
    events = iter_sse([r.content])
    assert all(e.event == "" and not e.stray for e in events)  # data-only
    assert events[-1].data == "[DONE]"
    chunks = [json.loads(e.data) for e in events[:-1]]
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"].startswith("chatcmpl-")
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == SERVED for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    gen = expected("hi")
    if include_usage:
        *chunks, last = chunks
        assert last["choices"] == [] and last["usage"]["completion_tokens"] == len(gen.tokens)
        assert all(c["usage"] is None for c in chunks)
    else:
        assert not any("usage" in c for c in chunks)
    finish = chunks[-1]["choices"][0]
    assert finish["delta"] == {} and finish["finish_reason"] == "stop"
    texts = [c["choices"][0]["delta"]["content"] for c in chunks[1:-1]]
    assert texts == list(gen.tokens)
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])


M = HI
BAD_REQUESTS = [
    ({"messages": M}, 400, None, "you must provide a model parameter"),
    ({"model": MODEL}, 400, "missing_required_parameter", "Missing required parameter: 'messages'."),
    ({"model": MODEL, "messages": []}, 400, "empty_array", "empty array"),
    ({"model": MODEL, "messages": M, "temprature": 0.5}, 400, None,
     "Unrecognized request argument supplied: temprature"),
    ({"model": MODEL, "messages": M, "stream_options": {"include_usage": True}}, 400, None,
     "only allowed when 'stream' is enabled"),
    ({"model": "gpt-9", "messages": M}, 404, "model_not_found", "`gpt-9` does not exist"),
    ({"model": "o4-mini", "messages": M, "max_tokens": 5}, 400, "unsupported_parameter",
     "Use 'max_completion_tokens' instead"),
    ({"model": "o4-mini", "messages": M, "temperature": 0.2}, 400, "unsupported_value",
     "Only the default (1) value is supported"),
    ({"model": MODEL, "messages": M, "stop": list("abcde")}, 400, "array_above_max_length",
     "array too long"),
    ({"model": MODEL, "messages": [{"role": "robot", "content": "x"}]}, 400, "invalid_value",
     "Supported values are"),
    ({"model": MODEL, "messages": M, "max_completion_tokens": 0}, 400, "integer_below_min_value",
     "Expected a value >= 1"),
]


@pytest.mark.parametrize(("body", "status", "code", "words"), BAD_REQUESTS)
def test_invalid_requests_are_refused(openai_sim: SimServer, emu: OpenAIEmulator,
                                      body: dict[str, Any], status: int, code: str | None,
                                      words: str) -> None:
    r = raw_post(openai_sim, body)
    assert r.status_code == status
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "invalid_request_error" and err["code"] == code
    assert words in err["message"]


def test_a_prompt_beyond_the_context_window(openai_sim: SimServer, emu: OpenAIEmulator) -> None:
    r = raw_post(openai_sim, {"model": "gpt-4o",
                              "messages": [{"role": "user", "content": "word " * 110_000}]})
    err = r.json()["error"]
    assert r.status_code == 400 and err["code"] == "context_length_exceeded"
    assert err["message"].startswith("This model's maximum context length is 128000 tokens.")


def test_unknown_paths_are_invalid_urls(openai_sim: SimServer, emu: OpenAIEmulator) -> None:
    r = httpx.get(f"{openai_sim.base_url('openai')}/chat/completions")
    assert r.status_code == 404
    assert r.json()["error"]["message"] == "Invalid URL (GET /v1/chat/completions)"


def test_a_missing_key_is_refused(openai_sim: SimServer, emu: OpenAIEmulator) -> None:
    r = raw_post(openai_sim, {"model": MODEL, "messages": HI}, key=None)
    err = r.json()["error"]
    assert r.status_code == 401 and err["message"].startswith("You didn't provide an API key")
    assert err["type"] == "invalid_request_error"
    assert emu.requests.chat()[0].fault is None


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (0.02, "20ms"), (1, "1s"), (1.574, "1.574s"), (90.5, "1m30.5s"), (360, "6m0s"),
    (3600, "1h0m0s")])
def test_go_durations(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


def test_a_wrong_key_is_echoed_masked() -> None:
    assert mask_key(CANARY_KEY) == "sk-...leak"
    assert mask_key("short") == "****"


# -- faults ------------------------------------------------------------------------------


def test_the_fault_table_covers_every_kind() -> None:
    assert set(OPENAI_WIRE_FAULTS) == set(FAULT_KINDS)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_fault(kind: str, stream: bool, d: Dispatcher, quick: Dispatcher,
               emu: OpenAIEmulator) -> None:
    out = check_openai_wire_fault(kind, stream, quick if kind == "hang" else d, emu, call,
                                  expected(), "openai")
    if isinstance(out, Response):
        assert out.raw_finish_reason == "content_filter"
        return
    assert_no_canary(str(out), repr(out), getattr(out, "body_excerpt", ""))
    if out.status is not None and not isinstance(out, MidStreamError):
        assert out.request_id and out.request_id.startswith("req_")


def test_rate_limit_message_and_headers(openai_sim: SimServer, emu: OpenAIEmulator) -> None:
    emu.faults.script(Fault("429-ms", retry_after=0.02))
    r = raw_post(openai_sim, {"model": MODEL, "messages": HI})
    assert r.headers["retry-after-ms"] == "20" and r.headers["retry-after"] == "1"
    assert r.headers["x-ratelimit-remaining-tokens"] == "0"
    err = r.json()["error"]
    assert err["code"] == "rate_limit_exceeded" and err["type"] == "tokens"
    assert "Please try again in 20ms." in err["message"]


@pytest.mark.parametrize(("fault", "wait"), [
    (Fault("429", retry_after=0.25), 0.25),
    (Fault("429-ms", retry_after=0.02), 0.02),  # retry-after-ms wins over retry-after: 1
    (Fault("503", retry_after=7), 7.0),
])
def test_retry_after_is_read(d: Dispatcher, emu: OpenAIEmulator, fault: Fault, wait: float) -> None:
    emu.faults.script(fault)
    with pytest.raises(VendorError) as info:
        d.send(PROMPT, TARGET)
    assert close(info.value.retry_after, wait)


def test_a_midstream_error_keeps_the_partial_text_and_code(d: Dispatcher,
                                                           emu: OpenAIEmulator) -> None:
    emu.faults.script(Fault("midstream-error", after_tokens=5))
    with pytest.raises(MidStreamError) as info:
        run_stream(d)
    assert info.value.partial_text == "".join(expected().tokens[:5])
    assert info.value.error_type == "server_error"


def test_a_midstream_error_before_any_text_is_retryable(d: Dispatcher,
                                                        emu: OpenAIEmulator) -> None:
    emu.faults.script(Fault("midstream-error", after_tokens=0))
    with pytest.raises(MidStreamError) as info:
        run_stream(d)
    assert info.value.partial_text == "" and info.value.retryable


def test_faults_can_target_one_model(d: Dispatcher, emu: OpenAIEmulator) -> None:
    emu.faults.script("500", model="gpt-4o")
    assert d.send(PROMPT, TARGET).text == expected().text
    with pytest.raises(ServerError):
        d.send(PROMPT, "openai:gpt-4o")


def test_a_wrong_key_never_leaks(log_text: pytest.LogCaptureFixture) -> None:
    records: list[object] = []
    with serve(["openai"], time_scale=0, api_key="sk-the-only-right-key-0001") as sim, \
            dispatcher(sim) as disp:
        disp.on_record(records.append)
        for stream in (False, True):
            with pytest.raises(AuthenticationError) as info:
                call(disp, stream)
            err = info.value
            assert err.status == 401 and err.code == "invalid_api_key"
            assert "Incorrect API key provided: sk-...leak." in str(err)
            assert_no_canary(str(err), repr(err), err.body_excerpt, err.__dict__)
        assert_no_canary(repr(disp), repr(disp.endpoints))
    assert len(records) == 2
    assert_no_canary(log_text.text, *records)


# -- the official SDK --------------------------------------------------------------------

openai_sdk = pytest.importorskip("openai")


@pytest.fixture(scope="module")
def client(openai_sim: SimServer) -> Iterator[Any]:
    c = openai_sdk.OpenAI(api_key=CANARY_KEY, base_url=openai_sim.base_url("openai"),
                          max_retries=0)
    yield c
    c.close()


def test_sdk_create(client: Any, emu: OpenAIEmulator) -> None:
    r = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": PROMPT}],
                                       max_completion_tokens=500)
    gen = expected()
    assert r.choices[0].message.content == gen.text and r.choices[0].finish_reason == "stop"
    assert r.model == SERVED and r.id.startswith("chatcmpl-")
    assert r.usage.prompt_tokens == gen.input_tokens
    assert r.usage.completion_tokens == len(gen.tokens)
    assert r.usage.prompt_tokens_details.cached_tokens == 0
    assert r._request_id.startswith("req_")


def test_sdk_stream_with_usage(client: Any, emu: OpenAIEmulator) -> None:
    chunks = list(client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": PROMPT}], stream=True,
        stream_options={"include_usage": True}))
    gen = expected()
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == gen.text
    *body, last = chunks
    assert last.choices == [] and last.usage.completion_tokens == len(gen.tokens)
    assert all(c.usage is None for c in body)
    assert body[-1].choices[0].finish_reason == "stop"


def test_sdk_models(client: Any, emu: OpenAIEmulator) -> None:
    ids = [m.id for m in client.models.list()]
    assert MODEL in ids and SERVED in ids
    assert client.models.retrieve("o4-mini").owned_by == "system"


@pytest.mark.parametrize(("kind", "cls", "status", "code"), [
    ("429", "RateLimitError", 429, "rate_limit_exceeded"),
    ("quota", "RateLimitError", 429, "insufficient_quota"),
    ("401", "AuthenticationError", 401, "invalid_api_key"),
    ("context-length", "BadRequestError", 400, "context_length_exceeded"),
    ("500", "InternalServerError", 500, None),
    ("503", "InternalServerError", 503, None),
])
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_sdk_errors(client: Any, emu: OpenAIEmulator, kind: str, cls: str, status: int,
                    code: str | None, stream: bool) -> None:
    emu.faults.script(kind)
    with pytest.raises(getattr(openai_sdk, cls)) as info:
        r = client.chat.completions.create(model=MODEL, messages=HI, stream=stream)
        if stream:
            list(r)
    assert info.value.status_code == status and info.value.code == code
    assert_no_canary(str(info.value))
    if kind == "429":
        assert info.value.response.headers["retry-after"] == "1"


def test_sdk_reads_the_midstream_error(client: Any, emu: OpenAIEmulator) -> None:
    emu.faults.script("midstream-error")
    seen: list[str] = []
    with pytest.raises(openai_sdk.APIError) as info:
        for chunk in client.chat.completions.create(model=MODEL, messages=HI, stream=True):
            seen.append(chunk.choices[0].delta.content or "")
    assert "The server had an error" in info.value.message
    assert "".join(seen) == "".join(expected("hi").tokens[:3])


def test_sdk_wrong_key() -> None:
    with serve(["openai"], time_scale=0, api_key="sk-the-only-right-key-0001") as sim:
        c = openai_sdk.OpenAI(api_key=CANARY_KEY, base_url=sim.base_url("openai"), max_retries=0)
        try:
            with pytest.raises(openai_sdk.AuthenticationError) as info:
                c.chat.completions.create(model=MODEL, messages=HI)
        finally:
            c.close()
    assert info.value.status_code == 401 and "sk-...leak" in info.value.message
    assert_no_canary(str(info.value), repr(info.value.body))
