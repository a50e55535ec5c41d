"""The compat adapter (Ollama, vLLM, llama.cpp, LM Studio) against the OpenAI emulator playing
a local server, over loopback, with and without a key; and its tolerance of the local
servers' looser wire, read from their literal shapes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from llmdispatch_nb import Dispatcher
from llmdispatch_nb._sse import iter_sse
from llmdispatch_nb._types import (
    Cost,
    Finish,
    Request,
    StreamStart,
    TextDelta,
    Usage,
    UsageUpdate,
    estimate_tokens,
)
from llmdispatch_nb.errors import (
    AuthenticationError,
    BadRequestError,
    ContextLengthError,
    MidStreamError,
    OverloadedError,
    ProtocolError,
    ServerError,
    VendorError,
)
from llmdispatch_nb.resilience import RetryPolicy
from llmdispatch_nb.sim import FAULT_KINDS, SimServer, generate
from llmdispatch_nb.sim.openai import OpenAIEmulator
from llmdispatch_nb.vendors import Endpoint, Secret, adapter_for

from ._vendor_support import (
    OPENAI_WIRE_FAULTS,
    Calls,
    check_openai_wire_fault,
    emulator,
    reset_around,
)
from .conftest import CANARY_KEY, assert_no_canary

MODEL = "llama3.2"
TARGET = f"ollama:{MODEL}"
PROMPT = "Explain what a local model server does, in one paragraph."


def local_server(**kw: Any) -> SimServer:
    return SimServer({"local": OpenAIEmulator(local=True, time_scale=0, **kw)}).start()


def endpoint(sim: SimServer, key: str | None = None, name: str = "ollama",
             vendor: str = "local", priced: bool = False) -> Endpoint:
    return Endpoint(name, "compat", sim.base_url(vendor), key=Secret(key) if key else None,
                    priced=priced, simulated=True)


def dispatcher(sim: SimServer, key: str | None = None, name: str = "ollama",
               **kw: Any) -> Dispatcher:
    # One exchange per call: these tests map each fault; retries are tested on their own.
    kw.setdefault("retry", RetryPolicy.none())
    return Dispatcher([endpoint(sim, key, name)], dotenv=False, **kw)


@pytest.fixture(scope="module")
def local_sim() -> Iterator[SimServer]:
    with local_server() as sim:
        yield sim


@pytest.fixture
def emu(local_sim: SimServer) -> Iterator[OpenAIEmulator]:
    e = emulator(local_sim, "local", OpenAIEmulator)
    assert e.local
    yield from reset_around(e)


# Function-scoped, so one test's tripped circuit breaker never reaches the next.
@pytest.fixture
def d(local_sim: SimServer) -> Iterator[Dispatcher]:
    with dispatcher(local_sim) as disp:
        yield disp


@pytest.fixture
def quick(local_sim: SimServer) -> Iterator[Dispatcher]:
    with dispatcher(local_sim, timeout=httpx.Timeout(1.0, connect=1.0)) as disp:
        yield disp


def expected(prompt: str = PROMPT, model: str = MODEL, **kw: Any) -> Any:
    return generate(prompt, model, vendor="compat", **kw)


calls = Calls(PROMPT, TARGET)
run_stream, call = calls.run_stream, calls.call


# -- happy paths -------------------------------------------------------------------------


def test_send_without_a_key_is_free(d: Dispatcher, emu: OpenAIEmulator) -> None:
    gen = expected()
    r = d.send(PROMPT, TARGET)
    assert r.text == gen.text and r.finish_reason == "stop"
    assert r.model == MODEL and r.vendor == "ollama"
    assert r.usage == Usage(input_tokens=gen.input_tokens, output_tokens=len(gen.tokens))
    assert r.cost == Cost(0.0, "free")
    assert r.extra["id"].startswith("chatcmpl-")


def test_stream_with_the_role_in_every_delta(d: Dispatcher, emu: OpenAIEmulator) -> None:
    gen = expected()
    r, events = run_stream(d)
    assert [e.text for e in events if isinstance(e, TextDelta)] == list(gen.tokens)
    assert [e.usage for e in events if isinstance(e, UsageUpdate)] == [
        Usage(input_tokens=gen.input_tokens, output_tokens=len(gen.tokens))]
    assert isinstance(events[-1], Finish) and events[-1].reason == "stop"
    assert r.text == gen.text and r.model == MODEL and r.cost == Cost(0.0, "free")
    assert r.ttft_s is not None and r.ttft_s <= r.latency_s


def test_a_server_without_stream_usage_gets_an_estimate(d: Dispatcher,
                                                        emu: OpenAIEmulator) -> None:
    emu.include_usage_supported = False  # the server ignores stream_options
    r, events = run_stream(d)
    assert not any(isinstance(e, UsageUpdate) for e in events)
    assert r.text == expected().text and r.finish_reason == "stop"
    assert r.usage == Usage(input_tokens=estimate_tokens(PROMPT),
                            output_tokens=estimate_tokens(r.text), source="estimated")


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_max_tokens_is_sent_and_honoured(d: Dispatcher, emu: OpenAIEmulator, stream: bool) -> None:
    r = call(d, stream, max_tokens=5)
    assert r.finish_reason == "length" and r.text == expected(max_tokens=5).text


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_thinking_is_not_text(d: Dispatcher, emu: OpenAIEmulator, stream: bool) -> None:
    r = call(d, stream, target="ollama:qwen3:8b")
    assert r.text == expected(model="qwen3:8b").text
    if not stream:
        assert "simulated" in r.extra["reasoning"]


def test_the_request_has_no_auth_header_and_sends_max_tokens() -> None:
    ep = Endpoint("ollama", "compat", "http://localhost:11434/v1")
    req = adapter_for("compat").build_request(Request("hi", max_tokens=12), MODEL, ep, stream=True)
    assert "authorization" not in req.headers and str(req.url).endswith("/v1/chat/completions")
    body = json.loads(req.content)
    assert body["max_tokens"] == 12 and "max_completion_tokens" not in body
    assert body["stream_options"] == {"include_usage": True}
    keyed = Endpoint("vllm", "compat", "http://localhost:8000/v1", key=Secret(CANARY_KEY))
    req = adapter_for("compat").build_request(Request("hi"), MODEL, keyed, stream=False)
    assert req.headers["authorization"] == f"Bearer {CANARY_KEY}"


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_server_started_with_a_key(stream: bool, log_text: pytest.LogCaptureFixture) -> None:
    with local_server(api_key=CANARY_KEY) as sim:
        with dispatcher(sim, key=CANARY_KEY, name="vllm") as disp:
            assert call(disp, stream, target=f"vllm:{MODEL}").text == expected().text
        for key in (None, "the-wrong-key-0123456"):
            with dispatcher(sim, key=key, name="vllm") as disp, \
                    pytest.raises(AuthenticationError) as info:
                call(disp, stream, target=f"vllm:{MODEL}")
            err = info.value
            assert err.status == 401 and err.code == "401" and err.error_type == "authentication_error"
            assert_no_canary(str(err), repr(err), err.body_excerpt)
    assert_no_canary(log_text.text)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_against_an_openai_shaped_server_with_a_key(openai_sim: SimServer, stream: bool) -> None:
    openai_sim.emulators["openai"].reset()
    ep = endpoint(openai_sim, key=CANARY_KEY, name="gateway", vendor="openai", priced=True)
    with Dispatcher([ep], dotenv=False, retry=RetryPolicy.none()) as disp:
        r = call(disp, stream, target="gateway:gpt-4o-mini", max_tokens=8)
        assert r.finish_reason == "length" and r.model == "gpt-4o-mini-2024-07-18"
        assert r.usage.output_tokens == 8 and r.usage.source == "reported"
        assert r.cost == Cost(None, "unknown")  # a priced compat endpoint with no price known
        # It sends max_tokens, which OpenAI's reasoning models refuse: the 400 comes through.
        with pytest.raises(BadRequestError) as info:
            call(disp, stream, target="gateway:o4-mini", max_tokens=8)
    assert info.value.code == "unsupported_parameter"


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_an_unpulled_model_says_so(d: Dispatcher, emu: OpenAIEmulator, stream: bool) -> None:
    with pytest.raises(BadRequestError) as info:
        call(d, stream, target="ollama:mistral")
    err = info.value
    assert err.status == 404 and err.error_type == "not_found_error"
    assert 'model "mistral" not found' in str(err) and "ollama pull" in str(err)


def test_models(d: Dispatcher, emu: OpenAIEmulator) -> None:
    assert set(d.models("ollama")) == {"llama3.2", "qwen3:8b"}


def test_the_local_wire(local_sim: SimServer, emu: OpenAIEmulator) -> None:
    url = f"{local_sim.base_url('local')}/chat/completions"
    # Unknown fields (Ollama's keep_alive) are ignored, and no key is needed.
    r = httpx.post(url, json={"model": MODEL, "keep_alive": "5m", "stream": True,
                              "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200 and "x-ratelimit-limit-requests" not in r.headers
    chunks = [json.loads(e.data) for e in iter_sse([r.content]) if e.data != "[DONE]"]
    assert all(c["choices"][0]["delta"]["role"] == "assistant" for c in chunks)
    assert all("usage" not in c and "obfuscation" not in c for c in chunks)


# -- faults ------------------------------------------------------------------------------


def test_the_fault_table_covers_every_kind() -> None:
    assert set(OPENAI_WIRE_FAULTS) == set(FAULT_KINDS)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_fault(kind: str, stream: bool, d: Dispatcher, quick: Dispatcher,
               emu: OpenAIEmulator) -> None:
    check_openai_wire_fault(kind, stream, quick if kind == "hang" else d, emu, call, expected(),
                            "ollama")


# -- the looser wire, from the servers' literal shapes ------------------------------------


def parse(raw: bytes) -> list[Any]:
    parser = adapter_for("compat").stream_parser(Endpoint("ollama", "compat", "http://x/v1"))
    return [ev for sse in iter_sse([raw]) for ev in parser.feed(sse)] + parser.close()


def frames(*chunks: Any) -> bytes:
    return b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks)


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"id": "chatcmpl-9", "object": "chat.completion.chunk", "model": MODEL,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}


def test_a_stream_that_ends_after_its_finish_without_done() -> None:
    raw = frames(chunk({"role": "assistant", "content": "Hel"}),
                 chunk({"role": "assistant", "content": "lo", "reasoning_content": ""}),
                 chunk({"role": "assistant", "content": ""}, "stop",
                       timings={"predicted_n": 2, "cache_n": 0}))
    assert parse(raw) == [StreamStart(MODEL, "chatcmpl-9"), TextDelta("Hel"), TextDelta("lo"),
                          Finish("stop", "stop")]


def test_a_stream_cut_before_its_finish_is_a_protocol_error() -> None:
    raw = frames(chunk({"role": "assistant", "content": "Hel"}))
    with pytest.raises(ProtocolError):
        parse(raw)


def test_reasoning_deltas_are_not_text() -> None:
    raw = frames(chunk({"role": "assistant", "content": "", "reasoning": "Hmm"}),
                 chunk({"role": "assistant", "content": "", "reasoning_content": "so"}),
                 chunk({"content": "Yes"}), chunk({}, "length")) + b"data: [DONE]\n\n"
    assert [e for e in parse(raw) if isinstance(e, TextDelta)] == [TextDelta("Yes")]


def test_llama_cpp_error_lines_mid_stream() -> None:
    raw = frames(chunk({"content": "Par"})) + \
        b'error: {"code":500,"message":"slot unavailable","type":"server_error"}\n\n'
    with pytest.raises(MidStreamError) as info:
        parse(raw)
    assert info.value.partial_text == "Par" and info.value.code == "500"
    assert info.value.error_type == "server_error"


def fail(status: int, content: bytes) -> VendorError:
    response = httpx.Response(status, content=content,
                              request=httpx.Request("POST", "http://localhost:8000/v1/chat/completions"))
    return adapter_for("compat").map_error(response, Endpoint("vllm", "compat", "http://localhost:8000/v1"))


@pytest.mark.parametrize(("status", "body", "cls", "code", "words"), [
    # vLLM, older builds: a flat body with an int code.
    (400, {"object": "error", "message": "This model's maximum context length is 4096 tokens. "
           "However, you requested 5000 tokens.", "type": "BadRequestError", "param": None,
           "code": 400}, ContextLengthError, "400", "maximum context length"),
    # vLLM, newer builds.
    (404, {"error": {"message": "The model `x` does not exist.", "type": "NotFoundError",
                     "param": None, "code": 404}}, BadRequestError, "404", "does not exist"),
    # llama.cpp's typed errors.
    (503, {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}},
     OverloadedError, "503", "Loading model"),
    (400, {"error": {"code": 400, "message": "the request exceeds the available context size, "
                     "try increasing it", "type": "exceed_context_size_error",
                     "n_prompt_tokens": 9000, "n_ctx": 4096}}, ContextLengthError, "400",
     "context size"),
    (501, {"error": {"code": 501, "message": "This server does not support embeddings.",
                     "type": "not_supported_error"}}, ServerError, "501", "embeddings"),
    # Ollama: the OpenAI layer's shape with a null code, and the native string shape.
    (400, {"error": {"message": "invalid message format", "type": "invalid_request_error",
                     "param": None, "code": None}}, BadRequestError, None, "invalid message"),
    (404, {"error": "model 'mistral' not found"}, BadRequestError, None, "ollama pull"),
    (401, {"error": "Unauthorized"}, AuthenticationError, None, "Unauthorized"),
])
def test_error_bodies_are_read_by_status(status: int, body: dict[str, Any],
                                         cls: type[VendorError], code: str | None,
                                         words: str) -> None:
    err = fail(status, json.dumps(body).encode())
    assert type(err) is cls and err.status == status and err.code == code
    assert words in str(err)


def test_a_non_json_error_keeps_its_text() -> None:
    err = fail(502, b"Bad Gateway: upstream llama-server is not running")
    assert type(err) is ServerError and "upstream llama-server" in str(err)


def test_reasoning_and_timings_land_in_extra() -> None:
    body = {"id": "chatcmpl-1", "object": "chat.completion", "model": "qwen3",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "Four.",
                                     "reasoning_content": "2+2 is 4"}}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14},
            "timings": {"prompt_n": 5, "predicted_n": 9, "cache_n": 0}}
    response = httpx.Response(200, json=body, request=httpx.Request("POST", "http://x/v1"))
    parsed = adapter_for("compat").parse_reply(response, Endpoint("llama", "compat", "http://x/v1"))
    assert parsed.text == "Four." and parsed.extra["reasoning"] == "2+2 is 4"
    assert parsed.extra["timings"]["predicted_n"] == 9
    assert parsed.usage == Usage(input_tokens=5, output_tokens=9)
