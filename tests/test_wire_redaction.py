"""A gateway that reflects the key back, in every place a vendor puts text we keep: the
error message, code and type, the request-id header, a body's request id, the reply's id
and model, and a mid-stream error. For OpenAI, Azure, an OpenAI-compatible server,
Anthropic and Gemini, plain and streamed, from a loopback server of the test's own
(tests/_wire_server.py) that echoes whatever credential the request carried.

What must hold (issue 14, item 10): every string from the wire is redacted once, before it
is stored or shown: no key in `err.code`, `err.error_type`, `err.request_id`, the message,
`args`, `repr`, `__dict__`, the cause chain, the magic's one line, the ledger's rows or the
ledger's files on disk. Two keys: one shaped like a key (caught by shape) and one that is
not (caught because it is a configured secret).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from llmdispatch_nb import Dispatcher, Endpoint, Secret
from llmdispatch_nb.errors import LLMDispatchError, VendorError
from llmdispatch_nb.ledger import Ledger
from llmdispatch_nb.notebook._errors import describe
from llmdispatch_nb.resilience import RetryPolicy
from tests._wire_server import Answer, Seen, WireServer, serve_wire
from tests.conftest import CANARY_KEY

# Not key-shaped: only the registry of configured secrets can know it is one.
PLAIN_KEY = "plainCanary0123456789xyz"
KEYS = [CANARY_KEY, PLAIN_KEY]
TARGETS = {"openai": "openai:gpt-4o-mini", "azure": "azure:gpt-4o-mini",
           "local": "local:llama3.2", "anthropic": "anthropic:claude-haiku-4-5",
           "google": "google:gemini-2.5-flash"}


def shape(seen: Seen) -> str:
    if "enerateContent" in seen.path:  # generateContent, streamGenerateContent
        return "gemini"
    return "anthropic" if seen.path.startswith("/v1/messages") else "openai"


def streamed(seen: Seen) -> bool:
    return "alt=sse" in seen.path or (isinstance(seen.body, dict) and bool(seen.body.get("stream")))


def id_headers(k: str) -> dict[str, str]:
    return {"x-request-id": k, "request-id": k, "apim-request-id": k}


def error_answer(seen: Seen) -> Answer:
    """A 400 with the key in the message, the code, the type and the request-id headers."""
    k = seen.key
    if shape(seen) == "anthropic":
        body: Any = {"type": "error", "request_id": k, "error": {
            "type": k, "message": f"invalid request from {k}", "details": {"error_code": k}}}
    elif shape(seen) == "gemini":
        body = {"error": {"code": 400, "message": f"invalid request from {k}", "status": k,
                          "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                       "reason": k}]}}
    else:
        body = {"error": {"message": f"invalid request from {k}", "type": k, "code": k}}
    return Answer(400, body, headers=id_headers(k))


def ok_answer(seen: Seen) -> Answer:
    """A 200 whose ids and model name are the key (the answer text itself is not)."""
    k = seen.key
    s = shape(seen)
    if s == "anthropic":
        if streamed(seen):
            return Answer(headers=id_headers(k), events=[json.dumps(e) for e in (
                {"type": "message_start", "message": {"id": k, "model": k,
                                                      "usage": {"input_tokens": 5}}},
                {"type": "content_block_delta", "index": 0,
                 "delta": {"type": "text_delta", "text": "Hi"}},
                {"type": "message_delta", "delta": {"stop_reason": k},
                 "usage": {"output_tokens": 2}},
                {"type": "message_stop"})])
        return Answer(headers=id_headers(k), body={
            "id": k, "model": k, "request_id": k, "type": "message", "stop_reason": k,
            "content": [{"type": "text", "text": "Hi"}],
            "usage": {"input_tokens": 5, "output_tokens": 2}})
    if s == "gemini":
        reply = {"candidates": [{"content": {"parts": [{"text": "Hi"}]}, "finishReason": k}],
                 "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 2},
                 "modelVersion": k, "responseId": k}
        if streamed(seen):
            return Answer(headers=id_headers(k), events=[json.dumps(reply)])
        return Answer(headers=id_headers(k), body=reply)
    if streamed(seen):
        return Answer(headers=id_headers(k), events=[
            json.dumps({"id": k, "model": k, "choices": [
                {"index": 0, "delta": {"content": "Hi"}, "finish_reason": k}]}),
            json.dumps({"id": k, "model": k, "choices": [],
                        "usage": {"prompt_tokens": 5, "completion_tokens": 2}}),
            "[DONE]"])
    return Answer(headers=id_headers(k), body={
        "id": k, "model": k, "choices": [{"index": 0, "finish_reason": k,
                                          "message": {"role": "assistant", "content": "Hi"}}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2}})


def midstream_answer(seen: Seen) -> Answer:
    """Text first, then an error event carrying the key in every field."""
    k = seen.key
    s = shape(seen)
    if s == "anthropic":
        events = [{"type": "message_start", "message": {"id": "m", "model": "claude-haiku-4-5",
                                                        "usage": {"input_tokens": 5}}},
                  {"type": "content_block_delta", "index": 0,
                   "delta": {"type": "text_delta", "text": "Hi"}},
                  {"type": "error", "request_id": k, "error": {"type": k, "message": k}}]
    elif s == "gemini":
        events = [{"candidates": [{"content": {"parts": [{"text": "Hi"}]}}],
                   "modelVersion": "gemini-2.5-flash"},
                  {"error": {"code": 500, "message": k, "status": k}}]
    else:
        events = [{"id": "c", "model": "gpt-4o-mini", "choices": [
                      {"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}]},
                  {"error": {"message": k, "type": k, "code": k}}]
    return Answer(headers=id_headers(k), events=[json.dumps(e) for e in events])


@pytest.fixture(scope="module")
def server() -> Iterator[WireServer]:
    yield from serve_wire()


@pytest.fixture(params=KEYS, ids=["key-shaped", "plain"])
def key(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def d(server: WireServer, key: str, tmp_path: Path) -> Iterator[Dispatcher]:
    k = Secret(key)
    eps = [Endpoint("openai", "openai", f"{server.url}/v1", key=k),
           Endpoint("azure", "azure", server.url, key=k, auth="api-key", route="deployments",
                    api_version="2024-10-21", deployments={"gpt-4o-mini": "gpt-4o-mini"}),
           Endpoint("local", "compat", f"{server.url}/v1", key=k, priced=False),
           Endpoint("anthropic", "anthropic", server.url, key=k),
           Endpoint("google", "gemini", server.url, key=k)]
    with Dispatcher(eps, dotenv=False, retry=RetryPolicy(max_attempts=1), cache=False,
                    ledger=Ledger(tmp_path / "ledger.db")) as disp:
        yield disp


def leaks(key: str, obj: Any, seen: set[int] | None = None) -> list[str]:
    """Where `key` shows in an exception: its text, args, repr, attributes, causes."""
    seen = set() if seen is None else seen
    if obj is None or id(obj) in seen:
        return []
    seen.add(id(obj))
    found = [f"{where}" for where, text in (
        ("str", str(obj)), ("repr", repr(obj)), ("args", repr(getattr(obj, "args", ()))),
        ("__dict__", repr(getattr(obj, "__dict__", {})))) if key in text]
    if isinstance(obj, BaseException):
        found += [f"cause.{w}" for w in leaks(key, obj.__cause__, seen)]
        found += [f"context.{w}" for w in leaks(key, obj.__context__, seen)]
        found += [f"errors.{w}" for e in getattr(obj, "errors", ()) for w in leaks(key, e, seen)]
    return found


def assert_ledger_clean(d: Dispatcher, key: str, tmp_path: Path) -> None:
    rows = d.session_records()
    assert rows, "nothing was recorded"
    assert not [r for r in rows if key in repr(r)], "the key is in a ledger row"
    d.ledger.flush()
    for f in tmp_path.iterdir():
        if f.is_file():
            assert key.encode() not in f.read_bytes(), f"the key is in {f.name} on disk"


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("vendor", list(TARGETS))
def test_a_reflected_key_in_an_error_is_redacted_everywhere(
        d: Dispatcher, server: WireServer, key: str, vendor: str, stream: bool,
        tmp_path: Path) -> None:
    server.script = error_answer
    with pytest.raises(VendorError) as info:
        if stream:
            list(d.stream("hello", TARGETS[vendor]))
        else:
            d.send("hello", TARGETS[vendor])
    err = info.value
    assert server.seen[-1].key == key  # the server did have the key to reflect
    assert leaks(key, err) == []
    assert key not in describe(err)  # what the magic shows
    # The reflected text did arrive, redacted (not merely dropped by accident).
    assert err.request_id is not None and "[redacted]" in err.request_id
    assert "[redacted]" in (err.error_type or err.code or "")
    assert "[redacted]" in str(err)
    assert_ledger_clean(d, key, tmp_path)
    (row,) = [r for r in d.session_records() if r.status == "error"]
    assert row.request_id is not None and "[redacted]" in row.request_id


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("vendor", list(TARGETS))
def test_a_reflected_key_in_a_reply_is_redacted(
        d: Dispatcher, server: WireServer, key: str, vendor: str, stream: bool,
        tmp_path: Path) -> None:
    server.script = ok_answer
    if stream:
        s = d.stream("hello", TARGETS[vendor])
        events = list(s)
        r = s.response
        assert key not in repr(events)
    else:
        r = d.send("hello", TARGETS[vendor])
    assert r is not None and r.text == "Hi"
    assert key not in repr(r), "the key is in the Response"
    assert r.request_id is not None and "[redacted]" in r.request_id
    assert_ledger_clean(d, key, tmp_path)


@pytest.mark.parametrize("vendor", ["openai", "local", "anthropic", "google"])
def test_a_reflected_key_in_a_midstream_error_is_redacted(
        d: Dispatcher, server: WireServer, key: str, vendor: str, tmp_path: Path) -> None:
    server.script = midstream_answer
    s = d.stream("hello", TARGETS[vendor])
    with pytest.raises(LLMDispatchError) as info:
        list(s)
    assert leaks(key, info.value) == []
    assert key not in describe(info.value)
    assert_ledger_clean(d, key, tmp_path)


def chain(err: BaseException | None) -> Iterator[BaseException]:
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def held_headers(err: BaseException) -> list[str]:
    """Header values of any request or response an exception in the chain still holds."""
    out = []
    for e in chain(err):
        for value in vars(e).values():
            if isinstance(value, httpx.Request | httpx.Response):
                out += [v.decode("latin-1") for _, v in value.headers.raw]
    return out


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("kind", ["openai", "azure", "anthropic", "gemini"])
def test_a_failed_connection_keeps_no_request_with_the_key(kind: str, stream: bool) -> None:
    """httpx's error (our error's __context__) held the request, and so the key in its
    headers; the mapping makes it forget the request."""
    url = f"http://127.0.0.1:{closed_port()}"
    ep = Endpoint("v", kind, url, key=Secret(CANARY_KEY), auth="api-key" if kind == "azure" else "default",
                  deployments={"m": "m"} if kind == "azure" else {})
    with Dispatcher([ep], dotenv=False, retry=RetryPolicy(max_attempts=1),
                    ledger=Ledger.memory()) as d, pytest.raises(LLMDispatchError) as info:
        if stream:
            list(d.stream("hello", "v:m"))
        else:
            d.send("hello", "v:m")
    assert len(list(chain(info.value))) >= 1
    assert not [h for h in held_headers(info.value) if CANARY_KEY in h]
    assert leaks(CANARY_KEY, info.value) == []


def models_answer(seen: Seen) -> Answer:
    k = seen.key
    if "/v1beta/models" in seen.path:
        return Answer(body={"models": [{"name": f"models/{k}"}, {"name": "models/gemini-2.5-flash"}]})
    return Answer(body={"data": [{"id": k}, {"id": "some-model"}], "has_more": False})


@pytest.mark.parametrize("vendor", ["openai", "anthropic", "google"])
def test_a_reflected_key_in_a_models_listing_is_redacted(
        d: Dispatcher, server: WireServer, key: str, vendor: str) -> None:
    server.script = models_answer
    listed = d.models(vendor)
    assert key not in repr(listed) and "[redacted]" in listed and len(listed) == 2
