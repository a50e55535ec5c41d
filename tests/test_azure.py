"""The Azure adapter against the Azure emulator (deployments and v1 routes, api-key and Entra
bearer auth), over loopback, and the emulator against openai-python's AzureOpenAI and OpenAI
clients."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from llmdispatch_nb import Dispatcher
from llmdispatch_nb._sse import iter_sse
from llmdispatch_nb._types import (
    Finish,
    Request,
    Response,
    StreamStart,
    TextDelta,
    Usage,
    UsageUpdate,
)
from llmdispatch_nb.errors import (
    AuthenticationError,
    BadRequestError,
    ContentFilterError,
    MidStreamError,
    RateLimitError,
    VendorError,
)
from llmdispatch_nb.resilience import RetryPolicy
from llmdispatch_nb.sim import FAULT_KINDS, Fault, SimServer, generate, serve
from llmdispatch_nb.sim.azure import AzureEmulator
from llmdispatch_nb.vendors import Endpoint, Secret, adapter_for
from llmdispatch_nb.vendors.azure import AzureAdapter

from ._vendor_support import (
    OPENAI_WIRE_FAULTS,
    Calls,
    check_openai_wire_fault,
    close,
    emulator,
    reset_around,
)
from .conftest import CANARY_KEY, assert_no_canary

DEPLOYMENT = "prod-4o"
MODEL = "gpt-4o"
SERVED = "gpt-4o-2024-08-06"
TARGET = f"azure:{DEPLOYMENT}"
VERSION = "2024-10-21"
PROMPT = "Explain what an Azure OpenAI deployment is, in one paragraph."
HI = [{"role": "user", "content": "hi"}]
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
ROUTES = ["deployments", "v1"]


def endpoint(sim: SimServer, route: str = "deployments", key: str = CANARY_KEY,
             **kw: Any) -> Endpoint:
    root = sim.base_url("azure")
    base = root + "/openai/v1" if route == "v1" else root
    kw.setdefault("deployments", {DEPLOYMENT: MODEL})
    kw.setdefault("api_version", VERSION)
    return Endpoint("azure", "azure", base, key=Secret(key), route=route, simulated=True, **kw)


def dispatcher(sim: SimServer, route: str = "deployments", key: str = CANARY_KEY,
               timeout: httpx.Timeout | None = None, **kw: Any) -> Dispatcher:
    return Dispatcher([endpoint(sim, route, key, **kw)], dotenv=False, timeout=timeout,
                      retry=RetryPolicy.none())


@pytest.fixture(scope="module")
def sim(azure_sim: SimServer) -> SimServer:
    emulator(azure_sim, "azure", AzureEmulator).add_deployment(DEPLOYMENT, MODEL)
    return azure_sim


@pytest.fixture
def emu(sim: SimServer) -> Iterator[AzureEmulator]:
    yield from reset_around(emulator(sim, "azure", AzureEmulator))


# Dispatchers are function-scoped, so one test's tripped circuit breaker never reaches the next.
@pytest.fixture(params=ROUTES)
def d(request: pytest.FixtureRequest, sim: SimServer) -> Iterator[Dispatcher]:
    with dispatcher(sim, request.param) as disp:
        yield disp


@pytest.fixture
def dep(sim: SimServer) -> Iterator[Dispatcher]:
    with dispatcher(sim) as disp:
        yield disp


@pytest.fixture
def quick(sim: SimServer) -> Iterator[Dispatcher]:
    with dispatcher(sim, timeout=httpx.Timeout(1.0, connect=1.0)) as disp:
        yield disp


def expected(prompt: str = PROMPT, model: str = MODEL, **kw: Any) -> Any:
    return generate(prompt, model, vendor="azure", **kw)


calls = Calls(PROMPT, TARGET)
run_stream, call = calls.run_stream, calls.call


def gpt_4o_cost(u: Usage) -> float:
    return (u.input_tokens * 2.50 + u.output_tokens * 10.0) / 1e6  # $ per million, list price


def chat_path(d: Dispatcher, deployment: str = DEPLOYMENT) -> str:
    if d.endpoints["azure"].route == "v1":
        return "/openai/v1/chat/completions"
    return f"/openai/deployments/{deployment}/chat/completions"


# -- happy paths -------------------------------------------------------------------------


def test_send_reads_text_usage_annotations_and_prices_the_deployment(
        d: Dispatcher, emu: AzureEmulator) -> None:
    gen = expected()
    r = d.send(PROMPT, TARGET)
    assert r.text == gen.text and r.finish_reason == "stop"
    assert r.model == SERVED and r.model_requested == DEPLOYMENT and r.vendor == "azure"
    assert r.usage == Usage(input_tokens=gen.input_tokens, output_tokens=len(gen.tokens))
    assert r.request_id is not None and UUID.fullmatch(r.request_id)
    # Priced as the model the deployment serves, not by the deployment's own name.
    assert r.cost.source == "genai-prices" and close(r.cost.usd, gpt_4o_cost(r.usage))
    cf = r.extra["content_filter"]
    assert cf["filtered"] == [] and cf["prompt"]["jailbreak"] == {"filtered": False, "detected": False}
    assert cf["completion"]["violence"] == {"filtered": False, "severity": "safe"}
    (seen,) = emu.requests.chat()
    assert seen.path == chat_path(d) and seen.model == DEPLOYMENT and not seen.stream


def test_stream_skips_the_filter_chunk_and_reads_usage(d: Dispatcher, emu: AzureEmulator) -> None:
    gen = expected()
    r, events = run_stream(d)
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert deltas == list(gen.tokens) and r.text == gen.text
    usages = [e.usage for e in events if isinstance(e, UsageUpdate)]
    assert usages == [Usage(input_tokens=gen.input_tokens, output_tokens=len(gen.tokens))]
    assert isinstance(events[-1], Finish) and events[-1].reason == "stop"
    assert r.model == SERVED and r.request_id and UUID.fullmatch(r.request_id)
    assert r.ttft_s is not None and r.ttft_s <= r.latency_s
    assert close(r.cost.usd, gpt_4o_cost(r.usage))
    (seen,) = emu.requests.chat()
    assert seen.stream and seen.path == chat_path(d)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_an_unmapped_deployment_is_priced_by_its_own_name(sim: SimServer, emu: AzureEmulator,
                                                          stream: bool) -> None:
    with dispatcher(sim, deployments={}) as disp:
        r = call(disp, stream, target="azure:gpt-4o-mini")
    assert r.model == "gpt-4o-mini-2024-07-18"
    assert close(r.cost.usd, (r.usage.input_tokens * 0.15 + r.usage.output_tokens * 0.6) / 1e6)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_max_tokens_and_stop(d: Dispatcher, emu: AzureEmulator, stream: bool) -> None:
    r = call(d, stream, max_tokens=6)
    assert r.finish_reason == "length" and r.text == expected(max_tokens=6).text
    full = expected().text
    stop = full.split()[6]
    r = call(d, stream, stop=stop)
    assert r.finish_reason == "stop" and r.text == full[: full.index(stop)]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_entra_bearer_and_api_key_auth(route: str, stream: bool) -> None:
    with serve(["azure"], time_scale=0, api_key=CANARY_KEY) as keyed:
        for auth in ("api-key", "bearer"):
            with dispatcher(keyed, route, auth=auth, deployments={}) as disp:
                assert call(disp, stream, target="azure:gpt-4o").text == expected().text
        with dispatcher(keyed, route, key="the-wrong-key-0123456", deployments={}) as disp, \
                pytest.raises(AuthenticationError) as info:
            call(disp, stream, target="azure:gpt-4o")
    assert info.value.status == 401 and info.value.code == "401"
    assert "Access denied due to invalid subscription key" in str(info.value)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_an_unknown_deployment_says_to_check_its_name(d: Dispatcher, emu: AzureEmulator,
                                                      stream: bool) -> None:
    with pytest.raises(BadRequestError) as info:
        call(d, stream, target="azure:gpt-4o-prod")
    err = info.value
    assert type(err) is BadRequestError and err.status == 404 and err.code == "DeploymentNotFound"
    assert "no deployment 'gpt-4o-prod'" in str(err) and "check the deployment name" in str(err)
    assert not err.retryable and err.request_id and UUID.fullmatch(err.request_id)


def test_an_old_api_version_gets_max_tokens_and_no_stream_usage(sim: SimServer,
                                                                emu: AzureEmulator) -> None:
    ep = endpoint(sim, api_version="2024-06-01")
    built = AzureAdapter().build_request(Request(PROMPT, max_tokens=9), DEPLOYMENT, ep, stream=True)
    body = json.loads(built.content)
    assert body["max_tokens"] == 9 and "max_completion_tokens" not in body
    assert "stream_options" not in body and built.url.params["api-version"] == "2024-06-01"
    with Dispatcher([ep], dotenv=False, retry=RetryPolicy.none()) as disp:
        r = run_stream(disp)[0]
    assert r.text == expected().text and r.usage.source == "estimated"


@pytest.mark.parametrize("route", ROUTES)
def test_models(sim: SimServer, emu: AzureEmulator, route: str) -> None:
    with dispatcher(sim, route) as disp:
        assert disp.models("azure") == ["gpt-4o", "gpt-4o-mini"]
    (seen,) = emu.requests.items
    assert seen.path == ("/openai/v1/models" if route == "v1" else "/openai/models")


# -- the adapter, sans-IO ----------------------------------------------------------------


@pytest.mark.parametrize(("base", "route", "url"), [
    ("https://res.openai.azure.com", "deployments",
     "https://res.openai.azure.com/openai/deployments/prod%204o/chat/completions?api-version=2024-10-21"),
    ("https://res.openai.azure.com/openai/", "deployments",
     "https://res.openai.azure.com/openai/deployments/prod%204o/chat/completions?api-version=2024-10-21"),
    ("https://res.openai.azure.com/openai/v1/", "default",
     "https://res.openai.azure.com/openai/v1/chat/completions"),
    ("https://res.openai.azure.com", "v1", "https://res.openai.azure.com/openai/v1/chat/completions"),
    ("https://res.openai.azure.com/openai/v1", "v1",
     "https://res.openai.azure.com/openai/v1/chat/completions"),
])
def test_urls_for_either_route_and_any_base(base: str, route: str, url: str) -> None:
    ep = Endpoint("azure", "azure", base, key=Secret(CANARY_KEY), route=route)
    req = adapter_for("azure").build_request(Request("hi"), "prod 4o", ep, stream=False)
    assert str(req.url) == url
    assert req.headers["api-key"] == CANARY_KEY and "authorization" not in req.headers
    assert json.loads(req.content)["model"] == "prod 4o"


def test_bearer_auth_header_and_pricing_map() -> None:
    adapter = adapter_for("azure")
    ep = Endpoint("azure", "azure", "https://r.openai.azure.com", key=Secret(CANARY_KEY),
                  auth="bearer", deployments={"prod-4o": "gpt-4o"})
    req = adapter.build_request(Request("hi"), "prod-4o", ep, stream=True)
    assert req.headers["authorization"] == f"Bearer {CANARY_KEY}" and "api-key" not in req.headers
    assert adapter.pricing_model("prod-4o", ep) == "gpt-4o"
    assert adapter.pricing_model("other", ep) == "other"
    assert adapter.key_variables == ("AZURE_OPENAI_API_KEY",) and adapter.price_provider == "openai"


def test_the_stream_parser_tolerates_filter_chunks() -> None:
    # Azure's framing, including a trailing empty-delta annotation chunk after the finish.
    cf = {"hate": {"filtered": False, "severity": "safe"}}
    chunks: list[Any] = [
        {"choices": [], "created": 0, "id": "", "model": "", "object": "",
         "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": cf}]},
        {"choices": [{"content_filter_results": {}, "delta": {"content": "", "role": "assistant"},
                      "finish_reason": None, "index": 0}], "id": "chatcmpl-1", "model": SERVED,
         "object": "chat.completion.chunk", "created": 1},
        {"choices": [{"content_filter_results": cf, "delta": {"content": "Hi"},
                      "finish_reason": None, "index": 0}], "id": "chatcmpl-1", "model": SERVED},
        {"choices": [{"content_filter_results": {}, "delta": {}, "finish_reason": "content_filter",
                      "index": 0}], "id": "chatcmpl-1", "model": SERVED},
        {"choices": [{"content_filter_results": cf, "delta": {}, "finish_reason": None,
                      "index": 0, "content_filter_offsets": {"start_offset": 0}}],
         "id": "chatcmpl-1", "model": SERVED},
        {"choices": [], "id": "chatcmpl-1", "model": SERVED,
         "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}},
        "[DONE]",
    ]
    raw = b"".join(b"data: " + (c if isinstance(c, str) else json.dumps(c)).encode() + b"\n\n"
                   for c in chunks)
    parser = adapter_for("azure").stream_parser(Endpoint("azure", "azure", "https://x"))
    events = [ev for sse in iter_sse([raw]) for ev in parser.feed(sse)] + parser.close()
    assert events == [StreamStart(SERVED, "chatcmpl-1"), TextDelta("Hi"),
                      Finish("content_filter", "content_filter"),
                      UsageUpdate(Usage(input_tokens=3, output_tokens=1))]


# -- the emulator's wire, read raw -------------------------------------------------------


def raw_post(sim: SimServer, body: dict[str, Any], path: str | None = None,
             headers: dict[str, str] | None = None) -> httpx.Response:
    url = sim.base_url("azure") + (path or f"/openai/deployments/{DEPLOYMENT}/chat/completions"
                                   f"?api-version={VERSION}")
    return httpx.post(url, json=body, headers={"api-key": CANARY_KEY} if headers is None else headers)


def test_plain_body_and_headers(sim: SimServer, emu: AzureEmulator) -> None:
    r = raw_post(sim, {"messages": HI, "model": "ignored-by-this-route"})
    body = r.json()
    assert body["model"] == SERVED and "service_tier" not in body
    assert body["prompt_filter_results"][0]["prompt_index"] == 0
    assert body["choices"][0]["content_filter_results"]["sexual"]["severity"] == "safe"
    for name in ("apim-request-id", "x-request-id"):
        assert UUID.fullmatch(r.headers[name])
    assert r.headers["x-ms-region"] and int(r.headers["x-ratelimit-remaining-requests"]) > 0
    assert int(r.headers["x-ratelimit-remaining-tokens"]) > 0


@pytest.mark.parametrize("include_usage", [True, False], ids=["usage", "no-usage"])
def test_stream_framing(sim: SimServer, emu: AzureEmulator, include_usage: bool) -> None:
    body: dict[str, Any] = {"messages": HI, "stream": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    r = raw_post(sim, body)
    events = iter_sse([r.content])
    assert events[-1].data == "[DONE]" and all(e.event == "" for e in events)
    first, *chunks = [json.loads(e.data) for e in events[:-1]]
    assert first == {"choices": [], "created": 0, "id": "", "model": "", "object": "",
                     "prompt_filter_results": [first["prompt_filter_results"][0]]}
    if include_usage:
        *chunks, last = chunks
        assert last["choices"] == [] and last["usage"]["completion_tokens"] == len(expected("hi").tokens)
    assert all(c["choices"] for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    content = [c for c in chunks if c["choices"][0]["delta"].get("content")]
    assert all(c["choices"][0]["content_filter_results"]["hate"]["filtered"] is False for c in content)


@pytest.mark.parametrize("query", ["", "?api-version=", "?api-version=latest-ish"])
def test_the_classic_route_needs_an_api_version(sim: SimServer, emu: AzureEmulator,
                                                query: str) -> None:
    r = raw_post(sim, {"messages": HI}, f"/openai/deployments/{DEPLOYMENT}/chat/completions{query}")
    assert r.status_code == 404 and r.json() == {"error": {"code": "404", "message": "Resource not found"}}


def test_auth_failures_have_string_codes(sim: SimServer, emu: AzureEmulator) -> None:
    r = raw_post(sim, {"messages": HI}, headers={})
    assert r.status_code == 401 and r.json()["error"]["code"] == "401"
    assert "missing subscription key" in r.json()["error"]["message"]
    r = raw_post(sim, {"messages": HI}, headers={"Authorization": f"Bearer {CANARY_KEY}"})
    assert r.status_code == 200


# -- faults ------------------------------------------------------------------------------


def test_the_fault_table_covers_every_kind() -> None:
    assert set(OPENAI_WIRE_FAULTS) == set(FAULT_KINDS)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_fault(kind: str, stream: bool, dep: Dispatcher, quick: Dispatcher,
               emu: AzureEmulator) -> None:
    out = check_openai_wire_fault(kind, stream, quick if kind == "hang" else dep, emu, call,
                                  expected(), "azure")
    if isinstance(out, Response):
        if not stream:
            assert out.extra["content_filter"]["filtered"] == ["violence"]
        return
    assert_no_canary(str(out), repr(out), getattr(out, "body_excerpt", ""))
    if isinstance(out, VendorError) and not isinstance(out, MidStreamError):
        assert out.request_id and UUID.fullmatch(out.request_id)
        assert out.code is None or isinstance(out.code, str)


def test_rate_limits_read_retry_after_ms_first(dep: Dispatcher, sim: SimServer,
                                               emu: AzureEmulator) -> None:
    emu.faults.script(Fault("429", retry_after=2.5), Fault("429", retry_after=2.5))
    r = raw_post(sim, {"messages": HI})
    assert r.headers["retry-after"] == "3" and r.headers["retry-after-ms"] == "2500"
    err = r.json()["error"]
    assert err == {"code": "429", "message": err["message"]}
    assert "Please retry after 3 seconds." in err["message"] and VERSION in err["message"]
    with pytest.raises(RateLimitError) as info:
        dep.send(PROMPT, TARGET)
    assert close(info.value.retry_after, 2.5)


def test_a_filtered_prompt_names_the_category(dep: Dispatcher, emu: AzureEmulator) -> None:
    emu.faults.script("content-filter")
    with pytest.raises(ContentFilterError) as info:
        dep.send(PROMPT, TARGET)
    assert info.value.code == "content_filter" and "(filtered: violence)" in str(info.value)


def test_a_wrong_key_never_leaks(log_text: pytest.LogCaptureFixture) -> None:
    records: list[object] = []
    with serve(["azure"], time_scale=0, api_key="the-only-right-key-0001") as keyed, \
            dispatcher(keyed, deployments={}) as disp:
        disp.on_record(records.append)
        for stream in (False, True):
            with pytest.raises(AuthenticationError) as info:
                call(disp, stream, target="azure:gpt-4o")
            assert_no_canary(str(info.value), repr(info.value), info.value.__dict__)
        assert_no_canary(repr(disp), repr(disp.endpoints))
    assert len(records) == 2
    assert_no_canary(log_text.text, *records)


# -- the official SDK --------------------------------------------------------------------

openai_sdk = pytest.importorskip("openai")


@pytest.fixture(scope="module")
def azure_client(sim: SimServer) -> Iterator[Any]:
    c = openai_sdk.AzureOpenAI(api_key=CANARY_KEY, azure_endpoint=sim.base_url("azure"),
                               api_version=VERSION, max_retries=0)
    yield c
    c.close()


@pytest.fixture(scope="module")
def v1_client(sim: SimServer) -> Iterator[Any]:
    c = openai_sdk.OpenAI(api_key=CANARY_KEY, base_url=sim.base_url("azure") + "/openai/v1/",
                          max_retries=0)
    yield c
    c.close()


@pytest.mark.parametrize("which", ["azure_client", "v1_client"])
def test_sdk_create_and_stream(which: str, request: pytest.FixtureRequest,
                               emu: AzureEmulator) -> None:
    client = request.getfixturevalue(which)
    gen = expected()
    messages = [{"role": "user", "content": PROMPT}]
    r = client.chat.completions.create(model=DEPLOYMENT, messages=messages)
    assert r.choices[0].message.content == gen.text and r.model == SERVED
    assert r.usage.completion_tokens == len(gen.tokens)
    assert r.model_extra["prompt_filter_results"][0]["prompt_index"] == 0
    chunks = list(client.chat.completions.create(model=DEPLOYMENT, messages=messages, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[0].choices == [] and chunks[0].id == ""  # the filter chunk comes through
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == gen.text
    assert chunks[-1].usage.completion_tokens == len(gen.tokens)
    paths = [x.path for x in emu.requests.chat()]
    want = ("/openai/v1/chat/completions" if which == "v1_client"
            else f"/openai/deployments/{DEPLOYMENT}/chat/completions")
    assert paths == [want, want]


@pytest.mark.parametrize("which", ["azure_client", "v1_client"])
def test_sdk_models(which: str, request: pytest.FixtureRequest, emu: AzureEmulator) -> None:
    client = request.getfixturevalue(which)
    assert [m.id for m in client.models.list()] == ["gpt-4o", "gpt-4o-mini"]


@pytest.mark.parametrize(("kind", "cls", "status", "code"), [
    ("429", "RateLimitError", 429, "429"),
    ("401", "AuthenticationError", 401, "401"),
    ("content-filter", "BadRequestError", 400, "content_filter"),
    ("500", "InternalServerError", 500, "500"),
])
def test_sdk_errors(azure_client: Any, emu: AzureEmulator, kind: str, cls: str, status: int,
                    code: str) -> None:
    emu.faults.script(kind)
    with pytest.raises(getattr(openai_sdk, cls)) as info:
        azure_client.chat.completions.create(model=DEPLOYMENT, messages=HI)
    assert info.value.status_code == status and info.value.code == code
    if kind == "429":
        assert info.value.response.headers["retry-after-ms"] == "1000"
    assert_no_canary(str(info.value))


def test_sdk_unknown_deployment(azure_client: Any, emu: AzureEmulator) -> None:
    with pytest.raises(openai_sdk.NotFoundError) as info:
        azure_client.chat.completions.create(model="nope", messages=HI)
    assert info.value.code == "DeploymentNotFound"
