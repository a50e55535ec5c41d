"""Garbage from a vendor that answered 200: usage counts that cannot be true (text, NaN,
infinity, nested, negative, fractional, huge, a bool) and bodies with fields of the wrong
type, plain and streamed, for OpenAI, Anthropic and Gemini, from a loopback server of the
test's own (tests/_wire_server.py).

What must hold (issue 14, item 6): such usage is not believed: the answer still reaches the
caller, its usage is estimated (`usage.source == "estimated"`, `extra["usage_unreliable"]`
says which field and why), the attempt is in the ledger as such, and the budget's
reservation is closed (settled at the estimated cost, nothing left reserved). Any other
malformed body is one typed error of ours, recorded, with the reservation released.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from llmdispatch_nb import Dispatcher, Endpoint, Secret
from llmdispatch_nb.errors import LLMDispatchError
from llmdispatch_nb.resilience import Budget, RetryPolicy
from llmdispatch_nb.vendors._base import MAX_TOKEN_COUNT, UnreliableUsage, token_count
from tests._wire_server import Answer, Seen, WireServer, serve_wire

KEY = "garbage-test-key-0001"

BAD_COUNTS: list[Any] = ["12abc", float("nan"), float("inf"), float("-inf"), -5, -0.5, 2.5,
                         1e30, 10**20, MAX_TOKEN_COUNT + 1, {"n": 1}, [3], True, "", " ",
                         "1e5", "-3", "٣"]
GOOD_COUNTS: list[tuple[Any, int]] = [(12, 12), ("12", 12), (12.0, 12), (None, 0), (0, 0)]


# -- the bodies each vendor sends, with one usage count chosen by the test ---------------


def openai_body(count: Any) -> dict[str, Any]:
    return {"id": "c1", "object": "chat.completion", "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": count, "completion_tokens": 3}}


def openai_events(count: Any) -> list[str]:
    chunk = {"id": "c1", "model": "gpt-4o-mini", "choices": [
        {"index": 0, "delta": {"content": "Hello there"}, "finish_reason": None}]}
    end = {"id": "c1", "model": "gpt-4o-mini", "choices": [
        {"index": 0, "delta": {}, "finish_reason": "stop"}]}
    usage = {"id": "c1", "model": "gpt-4o-mini", "choices": [],
             "usage": {"prompt_tokens": 9, "completion_tokens": count}}
    return [json.dumps(chunk), json.dumps(end), json.dumps(usage), "[DONE]"]


def anthropic_body(count: Any) -> dict[str, Any]:
    return {"id": "m1", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
            "content": [{"type": "text", "text": "Hello there"}], "stop_reason": "end_turn",
            "usage": {"input_tokens": count, "output_tokens": 3}}


def anthropic_events(count: Any) -> list[str]:
    # The good counts of message_start come first; the bad one in message_delta must void
    # them (they would otherwise stand as the reported usage, output 1).
    return [json.dumps(e) for e in (
        {"type": "message_start", "message": {"id": "m1", "model": "claude-haiku-4-5",
                                              "usage": {"input_tokens": 9, "output_tokens": 1}}},
        {"type": "content_block_delta", "index": 0,
         "delta": {"type": "text_delta", "text": "Hello there"}},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
         "usage": {"output_tokens": count}},
        {"type": "message_stop"})]


def gemini_body(count: Any) -> dict[str, Any]:
    return {"candidates": [{"content": {"role": "model", "parts": [{"text": "Hello there"}]},
                            "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": count, "candidatesTokenCount": 3},
            "modelVersion": "gemini-2.5-flash"}


def gemini_events(count: Any) -> list[str]:
    first = {"candidates": [{"content": {"role": "model", "parts": [{"text": "Hello "}]}}],
             "usageMetadata": {"promptTokenCount": 9}, "modelVersion": "gemini-2.5-flash"}
    last = {"candidates": [{"content": {"role": "model", "parts": [{"text": "there"}]},
                            "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": count},
            "modelVersion": "gemini-2.5-flash"}
    return [json.dumps(first), json.dumps(last)]


VENDORS: dict[str, tuple[str, Callable[[Any], Any], Callable[[Any], list[str]]]] = {
    "openai": ("openai:gpt-4o-mini", openai_body, openai_events),
    "anthropic": ("anthropic:claude-haiku-4-5", anthropic_body, anthropic_events),
    "google": ("google:gemini-2.5-flash", gemini_body, gemini_events),
}


def vendor_of(seen: Seen) -> str:
    if "chat/completions" in seen.path:
        return "openai"
    return "anthropic" if "/messages" in seen.path else "google"


def streamed(seen: Seen) -> bool:
    return "alt=sse" in seen.path or (isinstance(seen.body, dict) and bool(seen.body.get("stream")))


@pytest.fixture(scope="module")
def server() -> Iterator[WireServer]:
    yield from serve_wire()


@pytest.fixture(scope="module")
def d(server: WireServer) -> Iterator[Dispatcher]:
    key = Secret(KEY)
    eps = [Endpoint("openai", "openai", f"{server.url}/v1", key=key, default_model="gpt-4o-mini"),
           Endpoint("anthropic", "anthropic", server.url, key=key),
           Endpoint("google", "gemini", server.url, key=key)]
    # No retries: a malformed answer is asked for once, so each case is one attempt.
    with Dispatcher(eps, dotenv=False, budget=Budget(100.0), retry=RetryPolicy(max_attempts=1),
                    cache=False) as disp:
        yield disp


def serve_count(server: WireServer, count: Any) -> None:
    def script(seen: Seen) -> Answer:
        _, body, events = VENDORS[vendor_of(seen)]
        return Answer(events=events(count)) if streamed(seen) else Answer(body=body(count))
    server.script = script


def call(d: Dispatcher, target: str, stream: bool, prompt: str) -> Any:
    if stream:
        s = d.stream(prompt, target, max_tokens=50, cache=False)
        list(s)
        return s.response
    return d.send(prompt, target, max_tokens=50, cache=False)


# -- usage that cannot be true: estimated, recorded, the reservation closed --------------


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("vendor", list(VENDORS))
@pytest.mark.parametrize("count", BAD_COUNTS, ids=repr)
def test_garbage_usage_is_estimated_recorded_and_released(
        d: Dispatcher, server: WireServer, vendor: str, stream: bool, count: Any) -> None:
    serve_count(server, count)
    spent_before = d.budget.spent
    prompt = f"Say hello ({vendor}, {stream}, {count!r})"
    r = call(d, VENDORS[vendor][0], stream, prompt)
    assert r.text == "Hello there"
    assert r.usage.source == "estimated", r.usage
    assert "not believed" in r.extra["usage_unreliable"]
    assert r.usage.input_tokens >= 1 and r.usage.output_tokens >= 1
    (row,) = [rec for rec in d.session_records() if rec.call_id == r.call_id]
    assert (row.status, row.usage_source) == ("ok", "estimated")
    assert 0 <= row.input_tokens < MAX_TOKEN_COUNT and 0 <= row.output_tokens < MAX_TOKEN_COUNT
    assert d.budget.reserved == 0  # nothing left held for a call that ended
    assert d.budget.spent > spent_before  # settled at the estimate: the vendor did bill


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("vendor", list(VENDORS))
def test_sound_usage_is_still_reported(d: Dispatcher, server: WireServer, vendor: str,
                                       stream: bool) -> None:
    for given, _ in GOOD_COUNTS:
        serve_count(server, given)
        r = call(d, VENDORS[vendor][0], stream, f"Say hello ({vendor}, {given!r})")
        assert r.usage.source == "reported" and "usage_unreliable" not in r.extra, (given, r.usage)


# -- one count, fuzzed: an int in range or UnreliableUsage, never anything else -----------


def random_json(rng: random.Random, depth: int = 0) -> Any:
    pick = rng.randrange(10 if depth < 3 else 7)
    return [
        lambda: rng.randint(-10**25, 10**25),
        lambda: rng.randint(0, 5000),
        lambda: rng.uniform(-1e6, 1e6),
        lambda: rng.choice([float("nan"), float("inf"), -0.0, 1e308, 3.0]),
        lambda: rng.choice(["", "7", " 42 ", "4.0", "1_000", "0x10", "NaN", "²", "９"]),
        lambda: rng.choice([True, False, None]),
        lambda: "".join(rng.choice("0123456789 -+.e") for _ in range(rng.randrange(1, 30))),
        lambda: [random_json(rng, depth + 1) for _ in range(rng.randrange(3))],
        lambda: {"n": random_json(rng, depth + 1)},
        lambda: {str(i): random_json(rng, depth + 1) for i in range(rng.randrange(3))},
    ][pick]()


def test_token_count_fuzz_is_a_count_or_unreliable() -> None:
    rng = random.Random(14)
    outcomes = {"count": 0, "unreliable": 0}
    for _ in range(600):
        value = random_json(rng)
        try:
            n = token_count({"x": value}, "x")
        except UnreliableUsage as exc:
            assert "x is" in str(exc)
            outcomes["unreliable"] += 1
        else:
            assert type(n) is int and 0 <= n <= MAX_TOKEN_COUNT, (value, n)
            outcomes["count"] += 1
    assert min(outcomes.values()) > 50  # both sides of the line were exercised


# -- whole 200 bodies with a field of the wrong type: a response or one typed error --------


def mutations(value: Any, rng: random.Random) -> Any:
    return rng.choice([None, 7, -1, "text", 2.5, float("nan"), [], {}, [value], {"v": value},
                       True, "x" * 300])


def paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += paths(v, (*prefix, i))
    return out


def swapped(obj: Any, path: tuple[Any, ...], new: Any) -> Any:
    obj = json.loads(json.dumps(obj))
    here = obj
    for step in path[:-1]:
        here = here[step]
    here[path[-1]] = new
    return obj


@pytest.mark.parametrize("vendor", list(VENDORS))
def test_bodies_with_swapped_types_give_a_response_or_our_error(
        d: Dispatcher, server: WireServer, vendor: str) -> None:
    rng = random.Random(vendor)
    target, body_of, events_of = VENDORS[vendor]
    cases = 0
    for stream in (False, True):
        for _ in range(40):
            if stream:
                events = [json.loads(e) if e != "[DONE]" else e for e in events_of(5)]
                i = rng.randrange(len(events) - (1 if vendor == "openai" else 0))
                p = rng.choice(paths(events[i]) or [()])
                if p:
                    events[i] = swapped(events[i], p, mutations(None, rng))
                texts = [e if isinstance(e, str) else json.dumps(e) for e in events]
                server.script = lambda seen, t=texts: Answer(events=t)
            else:
                body = body_of(5)
                p = rng.choice(paths(body))
                new = swapped(body, p, mutations(None, rng))
                server.script = lambda seen, b=new: Answer(body=b)
            before = len(d.session_records())
            try:
                r = call(d, target, stream, f"fuzz {vendor} {stream} {cases}")
            except LLMDispatchError:
                pass
            else:
                assert isinstance(r.text, str) and r.usage.source in ("reported", "estimated")
            assert len(d.session_records()) == before + 1  # the attempt is in the ledger
            assert d.budget.reserved == 0  # settled or released, never held
            cases += 1
    assert cases == 80
