"""Tool calls (issue 17.2, 17.5, 17.6): `tools=` through each adapter to each emulator over
loopback, plain and streamed. The exact tool definitions and choice each vendor gets, the
calls in one shape (name, parsed arguments, id) whatever the vendor, streamed pieces
assembled, a round trip with a real Python function through `d.run_tools` (each round an
attempt in the ledger with its cost, the results in each vendor's shape on the wire), and a
sweep scored with `schema_valid`, `field_equals` and `tool_called`.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from typing import Any, Literal

import pydantic
import pytest

import llmdispatch_nb as ld
from llmdispatch_nb._tools import as_tool, parse_arguments
from llmdispatch_nb.errors import RequestValidationError
from llmdispatch_nb.experiments import (
    field_equals,
    pivot,
    schema_valid,
    sweep,
    tool_called,
    tradeoff_table,
)

TARGETS = {"openai": "openai:gpt-4o-mini", "anthropic": "anthropic:claude-haiku-4-5",
           "google": "google:gemini-2.5-flash"}
ASK = "What is the weather in Paris and Rome?"

seen: list[tuple[str, str]] = []


def get_weather(city: str, unit: Literal["c", "f"] = "c") -> dict[str, Any]:
    """Current weather in a city.

    Args:
        city: The city's name, e.g. Paris.
        unit: Celsius or Fahrenheit.
    """
    seen.append((city, unit))
    return {"city": city, "temp": 21 if unit == "c" else 70, "unit": unit}


PARAMS = {"type": "object",
          "properties": {"city": {"type": "string", "description": "The city's name, e.g. Paris."},
                         "unit": {"type": "string", "enum": ["c", "f"], "default": "c",
                                  "description": "Celsius or Fahrenheit."}},
          "required": ["city"]}


@pytest.fixture(scope="module")
def d() -> Iterator[ld.Dispatcher]:
    with ld.Dispatcher(demo=True, sim_time_scale=0, dotenv=False) as disp:
        yield disp


def bodies(d: ld.Dispatcher, vendor: str, n: int) -> list[Any]:
    return [r.body for r in d.sim.emulators[vendor].requests.chat()[-n:]]


def run(d: ld.Dispatcher, stream: bool, target: str, prompt: str = ASK,
        **kw: Any) -> tuple[ld.Response, list[Any]]:
    if not stream:
        return d.send(prompt, target, **kw), []
    s = d.stream(prompt, target, **kw)
    events = list(s)
    assert s.response is not None
    return s.response, events


# -- a function as a tool ----------------------------------------------------------------


def test_a_function_becomes_a_tool() -> None:
    t = as_tool(get_weather)
    assert (t.name, t.description, dict(t.parameters)) == \
        ("get_weather", "Current weather in a city.", PARAMS)
    assert t.function is get_weather


def test_explicit_schemas_and_bad_tools() -> None:
    t = as_tool({"type": "function", "function": {"name": "lookup", "description": "Find.",
                                                  "parameters": PARAMS}})
    assert (t.name, dict(t.parameters), t.function) == ("lookup", PARAMS, None)
    with pytest.raises(RequestValidationError, match="lambda"):
        as_tool(lambda x: x)
    with pytest.raises(RequestValidationError, match="tool_choice"):
        ld.Request("x", tools=[get_weather], tool_choice="get_wether")
    with pytest.raises(RequestValidationError, match="needs tools"):
        ld.Request("x", tool_choice="auto")
    assert parse_arguments('{"a": 1') == ({}, "the arguments are not JSON: '{\"a\": 1'")
    assert parse_arguments("[1]")[1] == "the arguments are a list, not an object"


# -- per vendor: the request, the calls, plain and streamed --------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_openai_tools(d: ld.Dispatcher, stream: bool) -> None:
    r, events = run(d, stream, TARGETS["openai"], tools=[get_weather], tool_choice="required")
    body = bodies(d, "openai", 1)[0]
    assert body["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": "Current weather in a city.",
        "parameters": PARAMS}}]
    assert body["tool_choice"] == "required"
    check_calls(r, events, stream, "call_")


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_anthropic_tools(d: ld.Dispatcher, stream: bool) -> None:
    r, events = run(d, stream, TARGETS["anthropic"], tools=[get_weather], tool_choice="required")
    body = bodies(d, "anthropic", 1)[0]
    assert body["tools"] == [{"name": "get_weather", "description": "Current weather in a city.",
                              "input_schema": {**PARAMS, "properties": {
                                  "city": PARAMS["properties"]["city"],
                                  "unit": {"type": "string", "enum": ["c", "f"],
                                           "description": "Celsius or Fahrenheit."}},
                                  "additionalProperties": False}}]
    assert body["tool_choice"] == {"type": "any"}
    check_calls(r, events, stream, "toolu_")


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_gemini_tools(d: ld.Dispatcher, stream: bool) -> None:
    r, events = run(d, stream, TARGETS["google"], tools=[get_weather], tool_choice="get_weather")
    body = bodies(d, "google", 1)[0]
    assert body["tools"] == [{"functionDeclarations": [{
        "name": "get_weather", "description": "Current weather in a city.",
        "parametersJsonSchema": {k: v for k, v in PARAMS.items()} | {"properties": {
            "city": PARAMS["properties"]["city"],
            "unit": {"type": "string", "enum": ["c", "f"],
                     "description": "Celsius or Fahrenheit."}}}}]}]
    assert body["toolConfig"] == {"functionCallingConfig": {
        "mode": "ANY", "allowedFunctionNames": ["get_weather"]}}
    # A tool named in the choice is called once; Gemini sends each call whole.
    assert r.finish_reason == "tool_calls" and len(r.tool_calls) == 1
    call = r.tool_calls[0]
    assert call.name == "get_weather" and call.arguments["city"] in ("Paris", "Rome")
    if stream:
        assert [e.kind for e in events if e.kind.startswith("tool")] == \
            ["tool_call_delta", "tool_call"]
        assert events[[e.kind for e in events].index("tool_call_delta")].arguments == \
            call.raw_arguments


def check_calls(r: ld.Response, events: list[Any], stream: bool, prefix: str) -> None:
    """Two calls in parallel (one per city asked about), in our one shape."""
    assert r.finish_reason == "tool_calls" and r.text == ""
    assert [c.name for c in r.tool_calls] == ["get_weather", "get_weather"]
    assert [c.arguments["city"] for c in r.tool_calls] == ["Paris", "Rome"]
    assert all(c.id.startswith(prefix) and c.error is None for c in r.tool_calls)
    assert len({c.id for c in r.tool_calls}) == 2
    if stream:
        whole = [e for e in events if e.kind == "tool_call"]
        assert [e.call for e in whole] == list(r.tool_calls)
        pieces = [e for e in events if e.kind == "tool_call_delta"]
        for i, call in enumerate(r.tool_calls):  # the pieces add up to each call
            mine = [p for p in pieces if p.index == whole[i].index]
            assert mine[0].id == call.id and mine[0].name == call.name
            assert "".join(p.arguments for p in mine) == call.raw_arguments
        assert len(pieces) > len(whole)  # the arguments came in more than one piece
        # every piece of a call comes before its whole event
        order = [e.kind for e in events if e.kind.startswith("tool_call")]
        assert order.index("tool_call") > 0


def test_tool_choice_none_and_auto(d: ld.Dispatcher) -> None:
    r = d.send(ASK, TARGETS["openai"], tools=[get_weather], tool_choice="none")
    assert r.tool_calls == () and r.text
    r = d.send(ASK, TARGETS["anthropic"], tools=[get_weather])
    assert "tool_choice" not in bodies(d, "anthropic", 1)[0]
    assert len(r.tool_calls) == 2


def test_a_model_without_tools_is_refused_before_sending(d: ld.Dispatcher) -> None:
    ld.catalogue.add("openai", "gpt-4o-mini", tools=False)
    try:
        with pytest.raises(RequestValidationError, match="does not take tools"):
            d.send(ASK, TARGETS["openai"], tools=[get_weather])
    finally:
        ld.catalogue.remove("openai", "gpt-4o-mini")


# -- the round trip ----------------------------------------------------------------------


@pytest.mark.parametrize("vendor", ["openai", "anthropic", "google"])
def test_run_tools_round_trip(d: ld.Dispatcher, vendor: str) -> None:
    seen.clear()
    tag = f"trip-{vendor}"
    run_ = d.run_tools(ASK, TARGETS[vendor], tools=[get_weather], max_rounds=3, tags=[tag])
    assert run_.stopped == "answered" and len(run_.rounds) == 2
    assert sorted(city for city, _ in seen) == ["Paris", "Rome"]  # the real function ran, twice
    assert [r.failed for r in run_.results] == [False, False]
    assert "Paris" in run_.text and "Rome" in run_.text  # the answer used the results
    # Each round is a call of its own in the ledger, with its cost.
    records = [r for r in d.session_records() if tag in r.tags]
    assert sorted(t for r in records for t in r.tags if t.startswith("tool-round")) == \
        ["tool-round-1", "tool-round-2"]
    assert all(r.status == "ok" and r.cost_usd is not None and r.cost_usd > 0 for r in records)
    assert run_.cost_usd == pytest.approx(sum(r.cost_usd or 0 for r in records))
    assert records[0].params["tools"] == ["get_weather"]
    # The second request carried the calls and their results in the vendor's own shape.
    second = bodies(d, vendor, 1)[0]
    calls = run_.rounds[0].tool_calls
    if vendor == "openai":
        assert second["messages"][1]["tool_calls"][0]["id"] == calls[0].id
        assert [m["role"] for m in second["messages"]] == ["user", "assistant", "tool", "tool"]
        assert second["messages"][2]["tool_call_id"] == calls[0].id
        assert '"city": "Paris"' in second["messages"][2]["content"]
    elif vendor == "anthropic":
        results = second["messages"][2]
        assert results["role"] == "user"
        assert [b["tool_use_id"] for b in results["content"]] == [c.id for c in calls]
        assert second["messages"][1]["content"][0]["type"] == "tool_use"
    else:
        model_turn, results = second["contents"][1], second["contents"][2]
        assert model_turn["role"] == "model" and "functionCall" in model_turn["parts"][0]
        assert results["parts"][0]["functionResponse"] == {
            "name": "get_weather", "id": calls[0].id,
            "response": {"result": json.loads(run_.results[0].result)}}


def test_run_tools_is_bounded(d: ld.Dispatcher) -> None:
    # "required" holds for the first round only; with one round allowed the next request
    # says tool_choice none and the model answers.
    run_ = d.run_tools(ASK, TARGETS["openai"], tools=[get_weather], max_rounds=1,
                       tool_choice="required")
    assert len(run_.rounds) == 2 and run_.stopped == "answered"
    assert [b.get("tool_choice") for b in bodies(d, "openai", 2)] == ["required", "none"]


def test_a_failing_function_and_broken_arguments_go_back_as_errors(d: ld.Dispatcher) -> None:
    def flaky(city: str) -> str:
        """Always fails."""
        raise RuntimeError(f"no data for {city}")

    run_ = d.run_tools("Weather in Oslo?", TARGETS["anthropic"], tools=[flaky])
    assert run_.results[0].failed and "RuntimeError: no data for Oslo" in run_.results[0].result
    sent = bodies(d, "anthropic", 1)[0]["messages"][2]["content"][0]
    assert sent["is_error"] is True
    # Arguments that do not fit the signature (the emulator's content fault drops one).
    d.sim.emulators["openai"].faults.script("schema-mismatch")
    run_ = d.run_tools("Weather in Oslo?", TARGETS["openai"], tools=[get_weather])
    assert run_.results[0].failed and "city: Missing required argument" in run_.results[0].result


def test_async_run_tools_with_an_async_function(d: ld.Dispatcher) -> None:
    async def lookup(city: str) -> str:
        """Look a city up."""
        await asyncio.sleep(0)
        return f"{city}: found"

    async def main() -> Any:
        return await d.arun_tools("Tell me about Lima.", TARGETS["google"], tools=[lookup])

    run_ = asyncio.run(main())
    assert run_.results[0].result == "Lima: found" and run_.stopped == "answered"


# -- a sweep scored on structured answers and tool calls ------------------------------------


class City(pydantic.BaseModel):
    name: str
    population: int


def test_sweep_scored_with_the_structured_evaluators(d: ld.Dispatcher) -> None:
    targets = list(TARGETS.values())
    df = sweep("Describe {city}, please.", targets, vars={"city": ["Paris", "Lima"]},
               schema=City, dispatcher=d, progress=False,
               evaluators=[schema_valid(), field_equals("population", lambda n: n >= 0),
                           field_equals("name", "Nowhere")])
    assert len(df) == 6 and set(df["status"]) == {"ok"}
    assert df["schema_valid"].tolist() == [1.0] * 6
    assert df["field:population"].tolist() == [1.0] * 6
    assert df["field:name"].tolist() == [0.0] * 6
    assert all(isinstance(p, City) for p in df["parsed"])
    table = pivot(df).frame  # per target, unchanged by the new columns
    assert len(table) == 3 and table["schema_valid"].tolist() == [1.0] * 3
    assert len(tradeoff_table(df)) == 3
    calls = sweep("What's the weather in {city}?", targets, vars={"city": ["Paris", "Lima"]},
                  tools=[get_weather], dispatcher=d, progress=False,
                  evaluators=[tool_called("get_weather", {"city": re.compile("Paris|Lima")}),
                              tool_called("get_weather", lambda a: a.get("city") == "Lima",
                                          name="asked_lima")])
    assert calls["tool_called:get_weather"].tolist() == [1.0] * 6
    assert calls["asked_lima"].tolist() == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    assert all(c[0]["name"] == "get_weather" for c in calls["tool_calls"])


# -- Gemini's thought signatures: kept with each call and sent back with it ----------------


def test_gemini_3_signatures_round_trip(d: ld.Dispatcher) -> None:
    run_ = d.run_tools(ASK, "google:gemini-3-flash-preview", tools=[get_weather])
    assert run_.stopped == "answered"
    calls = run_.rounds[0].tool_calls
    assert all(c.signature for c in calls)
    replayed = bodies(d, "google", 1)[0]["contents"][1]["parts"]
    assert [p["thoughtSignature"] for p in replayed] == [c.signature for c in calls]
    # The same history without the signatures is refused, as Gemini 3 refuses it.
    unsigned = [ld.Message("user", ASK),
                ld.Message("assistant", "", tuple(ld.ToolCall(c.id, c.name, c.arguments)
                                                  for c in calls)),
                *(ld.Message("tool", "{}", tool_call_id=c.id, name=c.name) for c in calls)]
    with pytest.raises(ld.errors.BadRequestError, match="missing a thought_signature"):
        d.send(unsigned, "google:gemini-3-flash-preview", tools=[get_weather])


def test_gemini_streamed_calls_keep_their_signature(d: ld.Dispatcher) -> None:
    r, events = run(d, True, "google:gemini-3-flash-preview", tools=[get_weather])
    assert r.tool_calls and all(c.signature for c in r.tool_calls)
    assert [e.call for e in events if e.kind == "tool_call"] == list(r.tool_calls)


# -- a local OpenAI-compatible server (Ollama's shape): JSON mode and tools ----------------


def test_local_server_json_mode_and_tools() -> None:
    from llmdispatch_nb.sim import SimServer
    from llmdispatch_nb.sim.openai import OpenAIEmulator
    from llmdispatch_nb.vendors import Endpoint

    class Point(pydantic.BaseModel):
        x: int
        y: int

    with SimServer({"local": OpenAIEmulator(local=True, time_scale=0)}).start() as sim, \
            ld.Dispatcher([Endpoint("ollama", "compat", sim.base_url("local"), priced=False,
                                    simulated=True)], dotenv=False) as local:
        emu = sim.emulators["local"]
        r = local.send("Pick a point.", "ollama:llama3.2", schema=Point)
        body = emu.requests.chat()[-1].body
        # The catalogue does not know the model: JSON mode, the schema in an instruction.
        assert body["response_format"] == {"type": "json_object"}
        assert body["messages"][0]["role"] == "system" and '"x"' in body["messages"][0]["content"]
        assert r.valid is True and isinstance(r.parsed, Point)
        seen.clear()
        run_ = local.run_tools(ASK, "ollama:llama3.2", tools=[get_weather])
        assert sorted(c for c, _ in seen) == ["Paris", "Rome"] and run_.stopped == "answered"
        assert run_.cost_usd == 0  # a local server is free unless priced
