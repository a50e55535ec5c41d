"""The Gemini adapter against the Gemini emulator, over loopback, and the emulator against
Google's own SDK (google-genai)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import httpx
import pytest

from llmdispatch_nb import Dispatcher
from llmdispatch_nb._sse import SSEDecoder
from llmdispatch_nb._types import Finish, Request, StreamStart, TextDelta, UsageUpdate
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
    VendorError,
    VendorTimeoutError,
)
from llmdispatch_nb.ledger import MemoryLedger
from llmdispatch_nb.resilience import CircuitBreaker, RetryPolicy
from llmdispatch_nb.sim import FAULT_KINDS, PROFILES, Fault, SimServer, generate, serve
from llmdispatch_nb.sim.gemini import GeminiEmulator
from llmdispatch_nb.vendors import Endpoint, Secret, adapter_for
from llmdispatch_nb.vendors.gemini import GeminiAdapter, GeminiStream, parse_duration

from ._vendor_support import Calls, FaultRow, emulator, reset_around
from .conftest import CANARY_KEY, assert_no_canary

MODEL = "gemini-2.5-flash"
TARGET = f"google:{MODEL}"
PROMPT = "Explain the Gemini stream framing in one paragraph."


def endpoint(sim: SimServer, key: str = CANARY_KEY, **kw: object) -> Endpoint:
    return Endpoint("google", "gemini", sim.base_url("google"), key=Secret(key), simulated=True,
                    **kw)  # type: ignore[arg-type]


def dispatcher(sim: SimServer, key: str = CANARY_KEY, **kw: object) -> Dispatcher:
    # One exchange per call and a breaker that never opens: these tests map each fault, so
    # one fault is one failed call. Records stay in memory (module fixtures are built before
    # the per-test home directory exists) and no answer comes from a cache.
    kw.setdefault("retry", RetryPolicy.none())
    kw.setdefault("breaker", CircuitBreaker(threshold=1.0, min_calls=1000, window=1000,
                                            long_retry_after_s=1e9))
    kw.setdefault("ledger", MemoryLedger())
    kw.setdefault("cache", False)
    return Dispatcher([endpoint(sim, key)], dotenv=False, **kw)  # type: ignore[arg-type]


@pytest.fixture
def emu(gemini_sim: SimServer) -> Iterator[GeminiEmulator]:
    yield from reset_around(emulator(gemini_sim, "google", GeminiEmulator))


@pytest.fixture(scope="module")
def d(gemini_sim: SimServer) -> Iterator[Dispatcher]:
    with dispatcher(gemini_sim) as disp:
        yield disp


def expected(prompt: str = PROMPT, model: str = MODEL, **kw: object):  # type: ignore[no-untyped-def]
    return generate(prompt, model, vendor="google", **kw)  # type: ignore[arg-type]


calls = Calls(PROMPT, TARGET)
run_stream, call = calls.run_stream, calls.call


# -- happy paths -------------------------------------------------------------------------


def test_send_reads_text_usage_finish_model_and_cost(d: Dispatcher, emu: GeminiEmulator) -> None:
    gen = expected()
    r = d.send(PROMPT, TARGET)
    assert r.text == gen.text
    assert r.finish_reason == "stop" and r.raw_finish_reason == "STOP"
    assert r.model == MODEL and r.vendor == "google" and r.simulated
    assert r.usage.source == "reported"
    assert r.usage.input_tokens == gen.input_tokens
    # 2.5 models think; thinking bills as output, so it is inside output_tokens.
    assert r.usage.reasoning_tokens > 0
    assert r.usage.output_tokens == len(gen.tokens) + r.usage.reasoning_tokens
    assert r.cost.usd is not None and r.cost.usd > 0 and r.cost.source == "genai-prices"
    assert r.ttft_s is None
    assert r.extra["response_id"]
    assert [x.path for x in emu.requests.chat()] == [f"/v1beta/models/{MODEL}:generateContent"]


def test_stream_reads_deltas_running_usage_and_finish(d: Dispatcher, emu: GeminiEmulator) -> None:
    gen = expected()
    r, events = run_stream(d)
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    usages = [e.usage for e in events if isinstance(e, UsageUpdate)]
    assert len(deltas) > 2 and "".join(deltas) == gen.text == r.text
    # The first chunk has no candidatesTokenCount: that must not zero what comes later,
    # and the running totals only grow.
    outs = [u.output_tokens for u in usages]
    assert outs == sorted(outs)
    assert r.usage == usages[-1]
    assert r.usage.input_tokens == gen.input_tokens
    assert r.usage.output_tokens == len(gen.tokens) + r.usage.reasoning_tokens
    assert isinstance(events[-1], Finish) and events[-1].reason == "stop"
    assert r.finish_reason == "stop" and r.model == MODEL
    assert r.ttft_s is not None and r.ttft_s <= r.latency_s
    assert r.cost.usd is not None and r.cost.usd > 0
    (seen,) = emu.requests.chat()
    assert seen.stream and seen.path == f"/v1beta/models/{MODEL}:streamGenerateContent"


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_max_tokens_is_length(d: Dispatcher, emu: GeminiEmulator, stream: bool) -> None:
    # Thinking off: max_tokens is then the whole cap sent (with thinking, the cap sent is
    # max_tokens + the thinking budget; tests/test_model_rules.py).
    r = call(d, stream, max_tokens=5, reasoning="none")
    assert r.finish_reason == "length" and r.raw_finish_reason == "MAX_TOKENS"
    assert r.text == expected(max_tokens=5).text


def test_models_prefix_is_accepted(d: Dispatcher, emu: GeminiEmulator) -> None:
    r = d.send(PROMPT, f"google:models/{MODEL}")
    assert r.text == expected().text
    assert emu.requests.chat()[0].path == f"/v1beta/models/{MODEL}:generateContent"


def test_asend(d: Dispatcher, emu: GeminiEmulator) -> None:
    r = asyncio.run(d.asend(PROMPT, "gemini:gemini-2.0-flash"))
    assert r.model == "gemini-2.0-flash" and r.usage.reasoning_tokens == 0
    assert r.text == expected(model="gemini-2.0-flash").text


def test_request_body_is_camel_case_with_model_role() -> None:
    adapter = GeminiAdapter()
    ep = Endpoint("google", "gemini", "https://generativelanguage.googleapis.com",
                  key=Secret(CANARY_KEY))
    req = Request([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                   {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Again"}],
                  max_tokens=40, temperature=0.3, top_p=0.9, stop=["END"], seed=7)
    plain = adapter.build_request(req, "models/gemini-2.5-pro", ep, stream=False)
    stream = adapter.build_request(req, "gemini-2.5-pro", ep, stream=True)
    base = "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-pro"
    assert str(plain.url) == f"{base}:generateContent"
    assert str(stream.url) == f"{base}:streamGenerateContent?alt=sse"
    assert plain.headers["x-goog-api-key"] == CANARY_KEY
    assert "authorization" not in plain.headers
    assert CANARY_KEY not in str(plain.url) + str(stream.url)
    body = json.loads(plain.content)
    assert body == {
        "contents": [{"role": "user", "parts": [{"text": "Hi"}]},
                     {"role": "model", "parts": [{"text": "Hello"}]},
                     {"role": "user", "parts": [{"text": "Again"}]}],
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        # max_tokens is the answer's: the cap sent adds the thinking it is pinned to.
        "generationConfig": {"maxOutputTokens": 40 + 1024, "temperature": 0.3, "topP": 0.9,
                             "stopSequences": ["END"], "seed": 7,
                             "thinkingConfig": {"thinkingBudget": 1024}},
    }
    v1 = Endpoint("google", "gemini", "https://generativelanguage.googleapis.com", api_version="v1")
    assert "/v1/models/" in str(adapter.build_request(req, "gemini-2.5-pro", v1, stream=False).url)
    versioned = Endpoint("google", "gemini", "https://generativelanguage.googleapis.com/v1beta/")
    assert str(adapter.build_request(req, "gemini-2.5-pro", versioned, stream=False).url) == \
        f"{base}:generateContent"


def test_whole_conversation_is_accepted_by_the_emulator(d: Dispatcher, emu: GeminiEmulator) -> None:
    # The emulator refuses roles other than user/model and unknown fields, as Google does.
    msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "Say more"}]
    r = d.send(msgs, TARGET, system="Be brief.", temperature=0.2, top_p=0.5, seed=1,
               stop=["answer"])
    assert r.text == expected("Be brief.\nHi\nHello\nSay more", stop=["answer"], seed=1).text
    assert "answer" not in r.text


def test_key_travels_only_in_the_header(emu: GeminiEmulator) -> None:
    # A server that accepts only the canary: success shows the key arrived intact.
    with serve(["google"], time_scale=0, api_key=CANARY_KEY) as sim, dispatcher(sim) as disp:
        strict = emulator(sim, "google", GeminiEmulator)
        disp.send(PROMPT, TARGET)
        run_stream(disp)
        assert disp.models("google")
        assert [src for _, src in strict.seen] == ["header", "header", "header"]
        for url, _ in strict.seen:
            assert "key=" not in url and CANARY_KEY not in url
        assert strict.seen[1][0].endswith("?alt=sse")
        with dispatcher(sim, key="AIzaWrongKeyWrongKeyWrongKey123") as wrong, \
                pytest.raises(AuthenticationError) as info:
            wrong.send(PROMPT, TARGET)
        assert info.value.status == 400 and info.value.error_type == "API_KEY_INVALID"


def test_a_missing_key_is_refused(gemini_sim: SimServer, emu: GeminiEmulator) -> None:
    r = httpx.post(gemini_sim.base_url("google") + f"/v1beta/models/{MODEL}:generateContent",
                   json={"contents": [{"parts": [{"text": "hi"}]}]})
    assert r.status_code == 403 and r.json()["error"]["status"] == "PERMISSION_DENIED"
    assert emu.seen[-1][1] == "none"


# -- faults ------------------------------------------------------------------------------

# kind -> (class when plain, class when streamed, HTTP status, retry_after, retryable)
FAULTS: dict[str, FaultRow] = {
    "429": (RateLimitError, RateLimitError, 429, 2.0, True),
    "429-ms": (RateLimitError, RateLimitError, 429, 0.25, True),
    "429-long": (RateLimitError, RateLimitError, 429, 3600.0, True),
    "429-no-retry": (RateLimitError, RateLimitError, 429, 2.0, False),
    "quota": (QuotaExhaustedError, QuotaExhaustedError, 429, 43200.0, False),
    "408": (ServerError, ServerError, 408, None, True),
    "409": (ServerError, ServerError, 409, None, True),
    "500": (ServerError, ServerError, 500, None, True),
    "503": (OverloadedError, OverloadedError, 503, None, True),
    "529": (OverloadedError, OverloadedError, 503, None, True),
    "401": (AuthenticationError, AuthenticationError, 400, None, False),
    "400": (BadRequestError, BadRequestError, 400, None, False),
    "context-length": (ContextLengthError, ContextLengthError, 400, None, False),
    "content-filter": (ContentFilterError, ContentFilterError, 200, None, False),
    "content-filter-output": (None, None, None, None, False),  # a reply, cut, not an error
    "blocked": (ContentFilterError, ContentFilterError, 200, None, False),
    "hang": (VendorTimeoutError, VendorTimeoutError, None, None, True),
    "reset": (ConnectError, ConnectError, None, None, True),
    # A plain call has no stream to break: the emulator answers 503 / cuts the body.
    "midstream-error": (OverloadedError, MidStreamError, 503, None, True),
    "midstream-disconnect": (ConnectError, MidStreamError, None, None, True),
    "malformed-json": (ProtocolError, ProtocolError, None, None, True),
}


def test_the_fault_table_covers_every_kind() -> None:
    assert set(FAULTS) == set(FAULT_KINDS)


@pytest.fixture(scope="module")
def quick(gemini_sim: SimServer) -> Iterator[Dispatcher]:
    with dispatcher(gemini_sim, timeout=httpx.Timeout(1.0, connect=1.0)) as disp:
        yield disp


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_fault(kind: str, stream: bool, d: Dispatcher, quick: Dispatcher,
               emu: GeminiEmulator) -> None:
    plain_cls, stream_cls, status, retry_after, retryable = FAULTS[kind]
    cls = stream_cls if stream else plain_cls
    emu.faults.script(kind)
    disp = quick if kind == "hang" else d
    if cls is None:
        r = call(disp, stream)
        assert r.finish_reason == "content_filter" and r.raw_finish_reason == "SAFETY"
        assert r.text and expected().text.startswith(r.text) and r.text != expected().text
        return
    with pytest.raises(LLMDispatchError) as info:
        call(disp, stream)
    err = info.value
    assert type(err) is cls, f"{kind}: {type(err).__name__}: {err}"
    assert getattr(err, "vendor", None) == "google"
    assert_no_canary(str(err), repr(err), getattr(err, "body_excerpt", ""))
    if isinstance(err, MidStreamError):
        assert err.partial_text and expected().text.startswith(err.partial_text)
        assert not err.retryable
        return
    assert err.retryable is retryable
    assert err.status == status
    if retry_after is not None:
        assert err.retry_after == pytest.approx(retry_after)
    assert len(emu.requests.chat()) == 1  # no retries inside the adapter


def test_retry_waits_the_retry_info_delay(gemini_sim: SimServer, emu: GeminiEmulator) -> None:
    # The dispatcher's retries read RetryInfo through the adapter: the 0.25 s delay is
    # honoured and the second attempt answers; a per-day quota is not retried at all.
    with dispatcher(gemini_sim, retry=RetryPolicy(max_attempts=2)) as disp:
        emu.faults.script("429-ms")
        assert disp.send(PROMPT, TARGET).text == expected().text
        assert [r.fault for r in emu.requests.chat()] == ["429-ms", None]
        emu.reset()
        emu.faults.script("quota")
        with pytest.raises(QuotaExhaustedError):
            disp.send(PROMPT, TARGET)
        assert len(emu.requests.chat()) == 1


def test_midstream_error_keeps_google_status(d: Dispatcher, emu: GeminiEmulator) -> None:
    emu.faults.script(Fault("midstream-error", after_tokens=2))
    with pytest.raises(MidStreamError) as info:
        run_stream(d)
    assert info.value.status == 503 and info.value.code == "UNAVAILABLE"
    assert info.value.usage is not None and info.value.usage.input_tokens > 0


def test_midstream_error_before_any_text_is_the_plain_error(d: Dispatcher,
                                                             emu: GeminiEmulator) -> None:
    # Nothing reached the caller, so it is an overload like any other: retryable.
    emu.faults.script(Fault("midstream-error", after_tokens=0))
    with pytest.raises(OverloadedError) as info:
        run_stream(d)
    assert info.value.retryable and info.value.status == 503


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_unknown_model_is_404(d: Dispatcher, emu: GeminiEmulator, stream: bool) -> None:
    with pytest.raises(BadRequestError) as info:
        call(d, stream, target="google:gemini-9")
    assert info.value.status == 404 and info.value.code == "NOT_FOUND"


def test_map_error_reads_google_details() -> None:
    adapter = GeminiAdapter()
    ep = Endpoint("google", "gemini", "https://generativelanguage.googleapis.com")

    def mapped(status: int, error: dict[str, object], **headers: str) -> VendorError:
        return adapter.map_error(httpx.Response(status, json={"error": error}, headers=headers), ep)

    no_info = mapped(429, {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "slow"},
                     **{"retry-after": "7"})
    assert type(no_info) is RateLimitError and no_info.retry_after == 7.0
    fraction = mapped(429, {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "slow",
                            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                                         "retryDelay": "1.5s"}]}, **{"retry-after": "7"})
    assert fraction.retry_after == 1.5
    assert type(mapped(403, {"code": 403, "status": "PERMISSION_DENIED"})) is AuthenticationError
    assert type(mapped(504, {"code": 504, "status": "DEADLINE_EXCEEDED"})) is ServerError
    assert type(mapped(400, {"code": 400, "message": "Request exceeds the maximum number of "
                                                     "tokens allowed"})) is ContextLengthError
    garbage = adapter.map_error(httpx.Response(502, text="<html>Bad Gateway</html>"), ep)
    assert type(garbage) is ServerError and garbage.status == 502
    assert parse_duration("47s") == 47.0 and parse_duration({"seconds": 1, "nanos": 5e8}) == 1.5
    assert parse_duration("soon") is None


# -- framing -------------------------------------------------------------------------------


def sse_bytes(sim: SimServer, body: dict[str, object], model: str = MODEL) -> bytes:
    r = httpx.post(sim.base_url("google") + f"/v1beta/models/{model}:streamGenerateContent",
                   params={"alt": "sse"}, headers={"x-goog-api-key": "k"}, json=body)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    return r.content


def parse_all(data: bytes, step: int) -> tuple[list[object], GeminiStream]:
    dec, parser = SSEDecoder(), GeminiStream("google")
    events: list[object] = []
    for i in range(0, len(data), step):
        for sse in dec.feed(data[i:i + step]):
            events.extend(parser.feed(sse))
    for sse in dec.close():
        events.extend(parser.feed(sse))
    return events, parser


@pytest.mark.parametrize("step", [1, 2, 7, 1 << 20])
def test_crlf_sse_parses_in_any_split(gemini_sim: SimServer, emu: GeminiEmulator, step: int) -> None:
    data = sse_bytes(gemini_sim, {"contents": [{"parts": [{"text": PROMPT}]}]})
    assert data.count(b"\r\n\r\n") >= 3 and b"[DONE]" not in data
    assert all(frame.startswith(b"data: {") for frame in data.split(b"\r\n\r\n") if frame)
    events, parser = parse_all(data, step)
    parser.close()
    assert parser.done
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == expected().text
    assert sum(isinstance(e, StreamStart) for e in events) == 1


def test_eof_before_finish_reason_is_a_protocol_error(gemini_sim: SimServer,
                                                      emu: GeminiEmulator) -> None:
    data = sse_bytes(gemini_sim, {"contents": [{"parts": [{"text": PROMPT}]}]})
    cut = data[: data.rstrip(b"\r\n").rfind(b"\r\n\r\n") + 4]  # drop the finishReason event
    events, parser = parse_all(cut, 64)
    assert any(isinstance(e, TextDelta) for e in events)
    assert not any(isinstance(e, Finish) for e in events)
    with pytest.raises(ProtocolError):
        parser.close()


def test_stray_json_errors_and_garbage() -> None:
    error = {"error": {"code": 429, "message": "slow down", "status": "RESOURCE_EXHAUSTED",
                       "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                                    "retryDelay": "3s"}]}}
    text = b'data: {"candidates": [{"content": {"parts": [{"text": "Hi"}]}}]}\r\n\r\n'
    bare = json.dumps(error, indent=2).encode()
    # A bare error split across lines and reads, after text: the stream broke mid-way.
    with pytest.raises(MidStreamError) as mid:
        parse_all(text + bare, 5)
    assert mid.value.status == 429 and mid.value.code == "RESOURCE_EXHAUSTED"
    # The same before any text: the plain 429, with RetryInfo read.
    with pytest.raises(RateLimitError) as early:
        parse_all(bare, 3)
    assert early.value.retry_after == 3.0 and early.value.retryable
    # An error inside a data: event is read the same way.
    with pytest.raises(RateLimitError):
        parse_all(b"data: " + json.dumps(error).encode() + b"\r\n\r\n", 1 << 20)
    # Garbage that never becomes JSON fails the stream even after a finishReason.
    done = text.replace(b"}]}}]}", b'}]}, "finishReason": "STOP"}]}')
    _, parser = parse_all(done, 4)
    assert parser.done
    _, parser = parse_all(done + b"<html>proxy error</html>\r\n", 4)
    with pytest.raises(ProtocolError):
        parser.close()


def test_thought_parts_are_not_text(gemini_sim: SimServer, emu: GeminiEmulator) -> None:
    body = {"contents": [{"parts": [{"text": PROMPT}]}],
            "generationConfig": {"thinkingConfig": {"includeThoughts": True}}}
    r = httpx.post(gemini_sim.base_url("google") + f"/v1beta/models/{MODEL}:generateContent",
                   headers={"x-goog-api-key": "k"}, json=body)
    parts = r.json()["candidates"][0]["content"]["parts"]
    assert parts[0]["thought"] is True
    reply = GeminiAdapter().parse_reply(r, endpoint(gemini_sim))
    assert reply.text == expected().text
    events, _ = parse_all(sse_bytes(gemini_sim, body), 1 << 20)
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == expected().text


def test_without_alt_sse_the_stream_is_a_json_array(gemini_sim: SimServer,
                                                    emu: GeminiEmulator) -> None:
    r = httpx.post(gemini_sim.base_url("google") + f"/v1/models/{MODEL}:streamGenerateContent",
                   headers={"x-goog-api-key": "k"}, json={"contents": [{"parts": [{"text": PROMPT}]}]})
    chunks = r.json()
    assert isinstance(chunks, list) and len(chunks) > 1
    assert "candidatesTokenCount" not in chunks[0]["usageMetadata"]
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    text = "".join(p["text"] for c in chunks for p in c["candidates"][0]["content"]["parts"])
    assert text == expected().text


def test_models_list_pages_and_drops_non_generators(d: Dispatcher, gemini_sim: SimServer,
                                                   emu: GeminiEmulator) -> None:
    generators = list(PROFILES["google"])  # the emulator's models, Gemini 3.x included
    assert generators[:3] == ["gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.0-flash"]
    assert any(m.startswith("gemini-3") for m in generators)
    assert d.models("google") == generators
    adapter, ep = adapter_for("gemini"), endpoint(gemini_sim)
    assert isinstance(adapter, GeminiAdapter)
    ids: list[str] = []
    token: str | None = None
    pages = 0
    with httpx.Client() as client:
        while True:
            r = client.send(adapter.list_models_request(ep, page_token=token, page_size=2))
            pages += 1
            ids += adapter.parse_models(r)
            token = adapter.next_page_token(r)
            if token is None:
                break
    # The embedding model is listed too (it fills a page slot) but is not a generator.
    assert pages == (len(generators) + 1 + 1) // 2 and ids == generators


def test_no_canary_in_logs_reprs_or_records(log_text: pytest.LogCaptureFixture,
                                            gemini_sim: SimServer, emu: GeminiEmulator) -> None:
    records: list[object] = []
    with dispatcher(gemini_sim) as disp:
        disp.on_record(records.append)
        emu.faults.script("401", "midstream-error", "malformed-json")
        for call in (lambda: disp.send(PROMPT, TARGET), lambda: run_stream(disp),
                     lambda: disp.send(PROMPT, TARGET)):
            with pytest.raises(LLMDispatchError) as info:
                call()
            assert_no_canary(str(info.value), repr(info.value), info.value.__dict__)
        r = disp.send(PROMPT, TARGET)
        assert_no_canary(repr(disp), repr(disp.endpoints), repr(r), r.extra)
    assert len(records) == 4
    assert_no_canary(log_text.text, *records)


# -- the official SDK --------------------------------------------------------------------

genai = pytest.importorskip("google.genai")
from google.genai import errors as genai_errors  # noqa: E402
from google.genai import types as genai_types  # noqa: E402


@pytest.fixture(scope="module")
def client(gemini_sim: SimServer):  # type: ignore[no-untyped-def]
    # Kept in a variable for the module: a temporary Client is closed when collected.
    c = genai.Client(api_key=CANARY_KEY, http_options=genai_types.HttpOptions(
        base_url=gemini_sim.base_url("google"), api_version="v1beta"))
    yield c
    c.close()


def test_sdk_generate_content(client, emu: GeminiEmulator) -> None:  # type: ignore[no-untyped-def]
    gen = expected()
    r = client.models.generate_content(model=MODEL, contents=PROMPT)
    assert r.text == gen.text
    assert r.model_version == MODEL and r.response_id
    assert r.candidates[0].finish_reason == genai_types.FinishReason.STOP
    u = r.usage_metadata
    assert u.prompt_token_count == gen.input_tokens
    assert u.candidates_token_count == len(gen.tokens)
    assert u.total_token_count == u.prompt_token_count + u.candidates_token_count + u.thoughts_token_count
    assert emu.seen[-1] == (f"/v1beta/models/{MODEL}:generateContent", "header")


def test_sdk_generate_content_with_config(client, emu: GeminiEmulator) -> None:  # type: ignore[no-untyped-def]
    cfg = genai_types.GenerateContentConfig(
        system_instruction="Be brief.", max_output_tokens=4, temperature=0.5, top_p=0.9,
        seed=3, stop_sequences=["zzz"],
        thinking_config=genai_types.ThinkingConfig(thinking_budget=0))
    r = client.models.generate_content(model=MODEL, contents=PROMPT, config=cfg)
    assert r.text == expected(f"Be brief.\n{PROMPT}", max_tokens=4, seed=3).text
    assert r.candidates[0].finish_reason == genai_types.FinishReason.MAX_TOKENS
    assert not r.usage_metadata.thoughts_token_count


def test_sdk_stream(client, emu: GeminiEmulator) -> None:  # type: ignore[no-untyped-def]
    gen = expected()
    chunks = list(client.models.generate_content_stream(model=MODEL, contents=PROMPT))
    assert len(chunks) > 2
    assert "".join(c.text or "" for c in chunks) == gen.text
    assert chunks[0].usage_metadata.candidates_token_count is None
    assert chunks[-1].usage_metadata.candidates_token_count == len(gen.tokens)
    assert chunks[-1].candidates[0].finish_reason == genai_types.FinishReason.STOP
    assert emu.seen[-1] == (f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse", "header")


def test_sdk_models_list_get_and_count(client, emu: GeminiEmulator) -> None:  # type: ignore[no-untyped-def]
    names = [m.name for m in client.models.list(config={"page_size": 2})]
    assert names == [f"models/{m}" for m in PROFILES["google"]] + ["models/gemini-embedding-001"]
    listings = [url for url, _ in emu.seen if url.startswith("/v1beta/models?")]
    assert len(listings) == (len(names) + 1) // 2 and "pageToken=" in listings[1]
    m = client.models.get(model="gemini-2.5-pro")
    assert m.name == "models/gemini-2.5-pro" and m.input_token_limit == 1_048_576
    assert client.models.count_tokens(model=MODEL, contents=PROMPT).total_tokens == \
        expected().input_tokens


@pytest.mark.parametrize(("kind", "cls", "code", "status"), [
    ("429", "ClientError", 429, "RESOURCE_EXHAUSTED"),
    ("quota", "ClientError", 429, "RESOURCE_EXHAUSTED"),
    ("401", "ClientError", 400, "INVALID_ARGUMENT"),
    ("context-length", "ClientError", 400, "INVALID_ARGUMENT"),
    ("409", "ClientError", 409, "ABORTED"),
    ("500", "ServerError", 500, "INTERNAL"),
    ("503", "ServerError", 503, "UNAVAILABLE"),
    ("529", "ServerError", 503, "UNAVAILABLE"),
])
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_sdk_errors(client, emu: GeminiEmulator, kind: str, cls: str, code: int, status: str,  # type: ignore[no-untyped-def]
                    stream: bool) -> None:
    emu.faults.script(kind)
    with pytest.raises(genai_errors.APIError) as info:
        if stream:
            list(client.models.generate_content_stream(model=MODEL, contents=PROMPT))
        else:
            client.models.generate_content(model=MODEL, contents=PROMPT)
    assert type(info.value).__name__ == cls
    assert info.value.code == code and info.value.status == status
    assert_no_canary(str(info.value), repr(info.value))


def test_sdk_reads_the_bare_json_error_mid_stream(client, emu: GeminiEmulator) -> None:  # type: ignore[no-untyped-def]
    emu.faults.script(Fault("midstream-error", after_tokens=2))
    got: list[str] = []
    with pytest.raises(genai_errors.ServerError) as info:
        for chunk in client.models.generate_content_stream(model=MODEL, contents=PROMPT):
            got.append(chunk.text or "")
    assert len(got) == 2 and expected().text.startswith("".join(got))
    assert info.value.code == 503 and info.value.status == "UNAVAILABLE"


def test_sdk_blocked_prompt_and_unknown_model(client, emu: GeminiEmulator) -> None:  # type: ignore[no-untyped-def]
    emu.faults.script("blocked")
    r = client.models.generate_content(model=MODEL, contents=PROMPT)
    assert r.prompt_feedback.block_reason == genai_types.BlockedReason.SAFETY
    assert not r.candidates and r.text is None
    with pytest.raises(genai_errors.ClientError) as info:
        client.models.generate_content(model="gemini-9", contents=PROMPT)
    assert info.value.code == 404 and info.value.status == "NOT_FOUND"


def test_sdk_wrong_key(log_text: pytest.LogCaptureFixture) -> None:
    with serve(["google"], time_scale=0, api_key="the-only-key") as sim:
        c = genai.Client(api_key=CANARY_KEY, http_options=genai_types.HttpOptions(
            base_url=sim.base_url("google"), api_version="v1beta"))
        try:
            with pytest.raises(genai_errors.ClientError) as info:
                c.models.generate_content(model=MODEL, contents=PROMPT)
        finally:
            c.close()
    assert info.value.code == 400
    assert info.value.details["error"]["details"][0]["reason"] == "API_KEY_INVALID"
    assert_no_canary(str(info.value), repr(info.value), log_text.text)
