"""The official SDKs read the emulators' structured answers and tool calls (issue 17.6):
OpenAI's `chat.completions.parse` and its streaming helper, Anthropic's `messages.parse`
and its tool_use blocks (plain, and assembled by its stream helper), google-genai's
`response.parsed` and `function_calls`, each against the emulator over loopback, as the
real APIs would be read.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pydantic
import pytest
from google import genai
from google.genai import types as genai_types

from llmdispatch_nb import catalogue
from llmdispatch_nb.sim import SimServer, serve

from .conftest import CANARY_KEY


class Person(pydantic.BaseModel):
    name: str
    age: int


class GetWeather(pydantic.BaseModel):
    """Current weather in a city."""

    city: str


WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
ASK = "What is the weather in Paris and Rome?"


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    with serve(["openai", "anthropic", "google"], time_scale=0) as s:
        yield s


@pytest.fixture(scope="module")
def oai(sim: SimServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(api_key=CANARY_KEY, base_url=sim.base_url("openai"),
                       max_retries=0) as c:
        yield c


@pytest.fixture(scope="module")
def ant(sim: SimServer) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(api_key=CANARY_KEY, base_url=sim.base_url("anthropic"),
                             max_retries=0) as c:
        yield c


@pytest.fixture(scope="module")
def gem(sim: SimServer) -> Iterator[Any]:
    c = genai.Client(api_key=CANARY_KEY, http_options=genai_types.HttpOptions(
        base_url=sim.base_url("google"), api_version="v1beta"))
    yield c
    c.close()


# -- OpenAI --------------------------------------------------------------------------------


def test_openai_parse(oai: openai.OpenAI) -> None:
    done = oai.chat.completions.parse(model="gpt-4o-mini", response_format=Person, messages=[
        {"role": "user", "content": "Describe Ada Lovelace."}])
    person = done.choices[0].message.parsed
    assert isinstance(person, Person) and person.name
    assert done.choices[0].message.refusal is None


def test_openai_parse_streamed(oai: openai.OpenAI) -> None:
    with oai.chat.completions.stream(model="gpt-4o-mini", response_format=Person, messages=[
            {"role": "user", "content": "Describe Ada Lovelace."}]) as stream:
        kinds = {event.type for event in stream}
        final = stream.get_final_completion()
    assert "content.delta" in kinds and "content.done" in kinds
    assert isinstance(final.choices[0].message.parsed, Person)


def test_openai_strict_schema_refused_in_its_words(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="'additionalProperties' is required"):
        oai.chat.completions.create(model="gpt-4o-mini", messages=[
            {"role": "user", "content": "x"}], response_format={
                "type": "json_schema", "json_schema": {"name": "P", "strict": True, "schema": {
                    "type": "object", "properties": {"a": {"type": "string"}},
                    "required": ["a"]}}})


def test_openai_tool_calls(oai: openai.OpenAI) -> None:
    done = oai.chat.completions.create(model="gpt-4o-mini", tools=[WEATHER_TOOL],  # type: ignore[list-item]
                                       messages=[{"role": "user", "content": ASK}])
    choice = done.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    calls = choice.message.tool_calls or []
    assert [c.function.name for c in calls] == ["get_weather", "get_weather"]  # type: ignore[union-attr]


def test_openai_tool_calls_streamed_with_pydantic_tools(oai: openai.OpenAI) -> None:
    with oai.chat.completions.stream(model="gpt-4o-mini", messages=[
            {"role": "user", "content": ASK}],
            tools=[openai.pydantic_function_tool(GetWeather, name="get_weather")]) as stream:
        done_events = [e for e in stream if e.type == "tool_calls.function.arguments.done"]
        final = stream.get_final_completion()
    assert [e.parsed_arguments.city for e in done_events] == ["Paris", "Rome"]  # type: ignore[attr-defined]
    calls = final.choices[0].message.tool_calls or []
    assert [c.function.parsed_arguments.city for c in calls] == ["Paris", "Rome"]  # type: ignore[union-attr]


# -- Anthropic -----------------------------------------------------------------------------


@pytest.fixture
def native_sonnet() -> Iterator[str]:
    catalogue.add("anthropic", "claude-sonnet-4-5", structured_output=True)
    yield "claude-sonnet-4-5"
    catalogue.remove("anthropic", "claude-sonnet-4-5")


def test_anthropic_parse(ant: anthropic.Anthropic, native_sonnet: str) -> None:
    done = ant.messages.parse(model=native_sonnet, max_tokens=500, output_format=Person,
                              messages=[{"role": "user", "content": "Describe Ada Lovelace."}])
    assert isinstance(done.parsed_output, Person)


def test_anthropic_tool_use(ant: anthropic.Anthropic) -> None:
    done = ant.messages.create(model="claude-haiku-4-5", max_tokens=500, tools=[{
        "name": "get_weather", "description": "Current weather in a city.",
        "input_schema": WEATHER_TOOL["function"]["parameters"]}],  # type: ignore[index]
        messages=[{"role": "user", "content": ASK}])
    assert done.stop_reason == "tool_use"
    uses = [b for b in done.content if b.type == "tool_use"]
    assert [(b.name, b.input) for b in uses] == [("get_weather", {"city": "Paris"}),
                                                 ("get_weather", {"city": "Rome"})]
    # The results sent back the way the SDK's docs show: answered in text.
    again = ant.messages.create(model="claude-haiku-4-5", max_tokens=500, tools=[{
        "name": "get_weather", "description": "Current weather in a city.",
        "input_schema": WEATHER_TOOL["function"]["parameters"]}],  # type: ignore[index]
        messages=[{"role": "user", "content": ASK},
                  {"role": "assistant", "content": done.content},  # type: ignore[typeddict-item]
                  {"role": "user", "content": [
                      {"type": "tool_result", "tool_use_id": b.id, "content": "21 C"}
                      for b in uses]}])
    assert again.stop_reason == "end_turn" and "21 C" in again.content[0].text  # type: ignore[union-attr]


def test_anthropic_tool_use_streamed(ant: anthropic.Anthropic) -> None:
    with ant.messages.stream(model="claude-haiku-4-5", max_tokens=500, tools=[{
            "name": "get_weather", "description": "Current weather in a city.",
            "input_schema": WEATHER_TOOL["function"]["parameters"]}],  # type: ignore[index]
            messages=[{"role": "user", "content": ASK}]) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_message()
    assert "input_json" in kinds
    assert [b.input for b in final.content if b.type == "tool_use"] == [
        {"city": "Paris"}, {"city": "Rome"}]
    assert final.stop_reason == "tool_use"


# -- Gemini --------------------------------------------------------------------------------


def test_gemini_parsed(gem: Any) -> None:
    r = gem.models.generate_content(
        model="gemini-2.5-flash", contents="Describe Ada Lovelace.",
        config=genai_types.GenerateContentConfig(response_mime_type="application/json",
                                                 response_schema=Person))
    assert isinstance(r.parsed, Person)


def test_gemini_function_calls(gem: Any) -> None:
    decl = genai_types.FunctionDeclaration(
        name="get_weather", description="Current weather in a city.",
        parameters_json_schema=WEATHER_TOOL["function"]["parameters"])  # type: ignore[index]
    config = genai_types.GenerateContentConfig(
        tools=[genai_types.Tool(function_declarations=[decl])],
        automatic_function_calling=genai_types.AutomaticFunctionCallingConfig(disable=True))
    r = gem.models.generate_content(model="gemini-2.5-flash", contents=ASK, config=config)
    assert [(c.name, c.args) for c in r.function_calls] == [
        ("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Rome"})]
    chunks = list(gem.models.generate_content_stream(model="gemini-2.5-flash", contents=ASK,
                                                     config=config))
    streamed = [c for chunk in chunks for c in (chunk.function_calls or [])]
    assert [c.args["city"] for c in streamed] == ["Paris", "Rome"]


def test_gemini_automatic_function_calling(gem: Any) -> None:
    """The SDK's own loop: it calls our Python function and sends the result back."""
    cities: list[str] = []

    def get_weather(city: str) -> dict[str, Any]:
        """Current weather in a city."""
        cities.append(city)
        return {"temp_c": 21}

    r = gem.models.generate_content(model="gemini-2.5-flash", contents=ASK,
                                    config=genai_types.GenerateContentConfig(tools=[get_weather]))
    assert cities == ["Paris", "Rome"]
    assert "temp_c" in r.text
