"""Structured output (issue 17.1, 17.6): `schema=` through each adapter to each emulator
over loopback, plain and streamed. The exact body each vendor gets (read at the emulator's
request log), `.parsed` / `.valid` / `.validation_errors`, an answer broken by the
emulator's "schema-mismatch" fault recorded as invalid in the ledger, each vendor's schema
dialect translated or refused by keyword, and the adapters' fallbacks (Anthropic's forced
tool, JSON mode on a server without schema support).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any, TypedDict

import pydantic
import pytest

import llmdispatch_nb as ld
from llmdispatch_nb import catalogue
from llmdispatch_nb._schema import for_anthropic, for_gemini, for_openai, output_schema
from llmdispatch_nb._types import Request
from llmdispatch_nb.errors import RequestValidationError
from llmdispatch_nb.vendors import Endpoint, adapter_for

PROMPT = "Describe Ada Lovelace."
TARGETS = {"openai": "openai:gpt-4o-mini", "anthropic": "anthropic:claude-haiku-4-5",
           "google": "google:gemini-2.5-flash"}

# A plain JSON Schema dict, so every body below is exact (pydantic adds titles).
PERSON: dict[str, Any] = {
    "type": "object", "title": "Person",
    "properties": {"name": {"type": "string"},
                   "age": {"type": "integer", "minimum": 0},
                   "email": {"type": "string"}},
    "required": ["name", "age"],
}


class Person(pydantic.BaseModel):
    name: str
    age: int


@pytest.fixture(scope="module")
def d() -> Iterator[ld.Dispatcher]:
    with ld.Dispatcher(demo=True, sim_time_scale=0, dotenv=False) as disp:
        yield disp


def last_body(d: ld.Dispatcher, vendor: str) -> Any:
    return d.sim.emulators[vendor].requests.chat()[-1].body


def run(d: ld.Dispatcher, stream: bool, target: str, **kw: Any) -> tuple[ld.Response, list[Any]]:
    if not stream:
        return d.send(PROMPT, target, **kw), []
    s = d.stream(PROMPT, target, **kw)
    events = list(s)
    assert s.response is not None
    return s.response, events


# -- the bodies each vendor gets -------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_openai_body_and_answer(d: ld.Dispatcher, stream: bool) -> None:
    r, events = run(d, stream, TARGETS["openai"], schema=PERSON)
    body = last_body(d, "openai")
    expected: dict[str, Any] = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": PROMPT}],
        "response_format": {"type": "json_schema", "json_schema": {
            "name": "Person", "strict": True, "schema": {
                "type": "object", "title": "Person",
                "properties": {"name": {"type": "string"},
                               "age": {"type": "integer", "minimum": 0},
                               "email": {"type": "string"}},
                "required": ["name", "age", "email"], "additionalProperties": False}}},
    }
    if stream:
        expected.update(stream=True, stream_options={"include_usage": True})
    assert body == expected
    assert r.valid is True and r.validation_errors == ()
    assert isinstance(r.parsed, dict) and set(r.parsed) == {"name", "age", "email"}
    assert r.parsed == json.loads(r.text)
    if stream:  # the JSON arrived as text pieces
        assert "".join(e.text for e in events if e.kind == "text") == r.text


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_gemini_body_and_answer(d: ld.Dispatcher, stream: bool) -> None:
    r, _ = run(d, stream, TARGETS["google"], schema=PERSON)
    assert last_body(d, "google") == {
        "contents": [{"role": "user", "parts": [{"text": PROMPT}]}],
        "generationConfig": {"responseMimeType": "application/json",
                             "responseJsonSchema": PERSON},
    }
    assert r.valid is True and r.parsed == json.loads(r.text)
    assert {"name", "age"} <= set(r.parsed)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_anthropic_forced_tool_when_the_catalogue_states_no_native_output(
        d: ld.Dispatcher, stream: bool) -> None:
    assert catalogue.lookup("anthropic", "claude-haiku-4-5").structured_output is not True
    r, events = run(d, stream, TARGETS["anthropic"], schema=Person)
    body = last_body(d, "anthropic")
    assert body["tools"] == [{"name": "Person", "description": "Give the answer as Person.",
                              "input_schema": for_anthropic(Person.model_json_schema())}]
    assert body["tool_choice"] == {"type": "tool", "name": "Person",
                                   "disable_parallel_tool_use": True}
    assert "output_config" not in body
    # The forced call's input is the answer: text, parsed, and no tool call left over.
    assert r.tool_calls == () and r.finish_reason == "stop"
    assert isinstance(r.parsed, Person) and r.valid is True
    assert json.loads(r.text) == r.parsed.model_dump()
    if stream:  # ...and streams as text, as a native structured answer would
        assert [e.kind for e in events if e.kind.startswith("tool")] == []
        assert "".join(e.text for e in events if e.kind == "text") == r.text


@pytest.fixture
def native_sonnet() -> Iterator[str]:
    catalogue.add("anthropic", "claude-sonnet-4-5", structured_output=True)
    yield "anthropic:claude-sonnet-4-5"
    catalogue.remove("anthropic", "claude-sonnet-4-5")


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_anthropic_native_output_config(d: ld.Dispatcher, native_sonnet: str,
                                        stream: bool) -> None:
    r, _ = run(d, stream, native_sonnet, schema=PERSON)
    body = last_body(d, "anthropic")
    assert body["output_config"] == {"format": {"type": "json_schema", "schema": {
        "type": "object", "title": "Person",
        "properties": {"name": {"type": "string"},
                       "age": {"type": "integer", "description": "{minimum: 0}"},
                       "email": {"type": "string"}},
        "required": ["name", "age"], "additionalProperties": False}}}
    assert "tools" not in body
    assert r.valid is True and {"name", "age"} <= set(r.parsed)


def test_anthropic_emulator_refuses_native_output_the_catalogue_does_not_state(
        d: ld.Dispatcher) -> None:
    import anthropic

    with anthropic.Anthropic(api_key="sk-test", base_url=d.sim.base_url("anthropic"),
                             max_retries=0) as client, \
            pytest.raises(anthropic.BadRequestError, match=r"output_config\.format"):
        client.messages.create(model="claude-haiku-4-5", max_tokens=100, messages=[
            {"role": "user", "content": PROMPT}],
            extra_body={"output_config": {"format": {"type": "json_schema", "schema": PERSON}}})


# -- invalid answers are data, and the ledger says so ------------------------------------


@pytest.mark.parametrize("vendor", ["openai", "anthropic", "google"])
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_a_broken_answer_is_recorded_invalid(d: ld.Dispatcher, vendor: str, stream: bool) -> None:
    d.sim.emulators[vendor].faults.script("schema-mismatch")
    r, _ = run(d, stream, TARGETS[vendor], schema=Person, tags=[f"broken-{vendor}-{stream}"])
    assert r.valid is False and r.parsed is None
    assert any("Field required" in e for e in r.validation_errors), r.validation_errors
    ok, _ = run(d, stream, TARGETS[vendor], schema=Person, tags=[f"fine-{vendor}-{stream}"])
    assert ok.valid is True
    records = {rec.tags[0]: rec for rec in d.session_records()
               if rec.tags and rec.tags[0].endswith(f"{vendor}-{stream}")}
    assert records[f"broken-{vendor}-{stream}"].schema_valid is False
    assert records[f"fine-{vendor}-{stream}"].schema_valid is True


def test_no_schema_records_no_validity(d: ld.Dispatcher) -> None:
    r = d.send("Hello there.", TARGETS["openai"], tags=["plain-text"])
    assert r.valid is None and r.parsed is None
    rec = next(x for x in d.session_records() if "plain-text" in x.tags)
    assert rec.schema_valid is None and rec.params.get("schema") is None


def test_the_content_fault_waits_for_a_structured_request(d: ld.Dispatcher) -> None:
    d.sim.emulators["openai"].faults.script("schema-mismatch")
    plain = d.send("Say hi.", TARGETS["openai"])  # no schema: untouched, fault kept
    assert plain.valid is None and plain.text
    assert d.send(PROMPT, TARGETS["openai"], schema=PERSON).valid is False


# -- python types as schemas -------------------------------------------------------------


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Movie(TypedDict):
    title: str
    year: int


def test_dataclass_and_typeddict_schemas(d: ld.Dispatcher) -> None:
    p = d.send("Pick a point.", TARGETS["google"], schema=Point)
    assert isinstance(p.parsed, Point) and p.valid
    m = d.send("Name a film.", TARGETS["openai"], schema=Movie)
    assert isinstance(m.parsed, dict) and set(m.parsed) == {"title", "year"} and m.valid
    assert last_body(d, "openai")["response_format"]["json_schema"]["name"] == "Movie"


def test_a_schema_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(RequestValidationError, match="root must be an object"):
        Request("x", schema={"type": "array", "items": {"type": "string"}})
    with pytest.raises(RequestValidationError, match="pydantic model"):
        Request("x", schema=42)


# -- each vendor's dialect: translated, or refused naming the keyword ----------------------


@pytest.mark.parametrize(("convert", "schema", "keyword"), [
    (for_openai, {"type": "object", "properties": {"a": {"not": {"type": "string"}}}}, "'not'"),
    (for_openai, {"type": "object", "properties": {"a": {"allOf": [{"type": "string"},
                                                                   {"minLength": 2}]}}},
     "'allOf'"),
    (for_anthropic, {"type": "object", "if": {"required": ["a"]}, "properties": {}}, "'if'"),
    (for_gemini, {"type": "object", "properties": {"a": {"type": "string",
                                                         "pattern": "^x"}}}, "'pattern'"),
    (for_gemini, {"type": "object", "properties": {}, "patternProperties": {}},
     "'patternProperties'"),
])
def test_unsupported_keywords_are_refused_by_name(convert: Any, schema: dict[str, Any],
                                                  keyword: str) -> None:
    with pytest.raises(RequestValidationError, match=keyword):
        convert(schema)


def test_translations_keep_the_meaning() -> None:
    s = {"type": "object", "properties": {
        "kind": {"const": "cat"}, "n": {"oneOf": [{"type": "integer"}, {"type": "null"}],
                                        "default": None},
        "tag": {"type": "string", "maxLength": 5}}, "required": ["kind", "n", "tag"],
        "$schema": "https://json-schema.org/draft/2020-12/schema"}
    g = for_gemini({k: v for k, v in s.items()
                    if k != "properties"} | {"properties": {k: v for k, v in s["properties"].items()
                                                            if k != "tag"}})
    assert g["properties"]["kind"] == {"enum": ["cat"]}
    assert g["properties"]["n"] == {"anyOf": [{"type": "integer"}, {"type": "null"}]}
    assert "$schema" not in g
    a = for_anthropic(s)
    assert a["properties"]["tag"] == {"type": "string", "description": "{maxLength: 5}"}
    assert a["additionalProperties"] is False


def test_the_refusal_reaches_the_caller_before_anything_is_sent(d: ld.Dispatcher) -> None:
    before = len(d.sim.emulators["google"].requests.chat())
    with pytest.raises(RequestValidationError, match=r"Gemini does not accept .*'pattern'"):
        d.send(PROMPT, TARGETS["google"], schema={
            "type": "object", "properties": {"code": {"type": "string", "pattern": "^[A-Z]+$"}}})
    assert len(d.sim.emulators["google"].requests.chat()) == before


# -- a server without schema support: JSON mode plus the schema in an instruction ---------


def test_compat_without_schema_support_uses_json_mode() -> None:
    ep = Endpoint("ollama", "compat", "http://127.0.0.1:11434/v1")
    req = adapter_for("compat").build_request(Request(PROMPT, schema=PERSON), "llama3.2", ep,
                                              stream=False)
    body = json.loads(req.content)
    assert body["response_format"] == {"type": "json_object"}
    assert body["messages"][0]["role"] == "system"
    assert json.dumps(PERSON, separators=(",", ":")) in body["messages"][0]["content"]
    assert body["messages"][1] == {"role": "user", "content": PROMPT}


def test_output_schema_names_follow_openai_rules() -> None:
    assert output_schema({"type": "object", "title": "A person!"}).name == "A_person_"


# -- a refusal instead of content (OpenAI's shape; the emulator does not refuse) ------------


def test_an_openai_refusal_is_an_invalid_answer_with_its_reason() -> None:
    import httpx

    from llmdispatch_nb._sse import SSEEvent
    from llmdispatch_nb._structured import finish_response
    from llmdispatch_nb._types import Usage

    adapter = adapter_for("openai")
    ep = Endpoint("openai", "openai", "https://api.openai.com/v1")
    reply = adapter.parse_reply(httpx.Response(200, json={
        "id": "chatcmpl-1", "model": "gpt-4o-mini", "choices": [{
            "index": 0, "finish_reason": "stop",
            "message": {"role": "assistant", "content": None,
                        "refusal": "I can't help with that."}}]}), ep)
    parser = adapter.stream_parser(ep)
    for piece in ("I can't ", "help with that."):
        parser.feed(SSEEvent(None, json.dumps({"model": "gpt-4o-mini", "choices": [
            {"index": 0, "delta": {"refusal": piece}, "finish_reason": None}]})))
    assert parser.extra["refusal"] == reply.extra["refusal"] == "I can't help with that."
    resp = ld.Response(reply.text, "stop", "stop", Usage(), "openai", "gpt-4o-mini",
                       "gpt-4o-mini", 0.1, None, extra=reply.extra)
    done = finish_response(resp, Request("x", schema=Person))
    assert (done.valid, done.parsed) == (False, None)
    assert done.validation_errors == ("the model refused: I can't help with that.",)
    assert "valid=False" in repr(done)


# -- the ledger's column -------------------------------------------------------------------


def test_a_ledger_of_the_previous_schema_gains_schema_valid(tmp_path: Any) -> None:
    import sqlite3

    from llmdispatch_nb.ledger import Ledger
    from llmdispatch_nb.ledger._migrations import MIGRATIONS, _statements

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE migrations (number INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                 "applied_at REAL NOT NULL)")
    for number, name, sql in MIGRATIONS[:2]:  # a ledger written before this column existed
        for statement in _statements(sql):
            conn.execute(statement)
        conn.execute("INSERT INTO migrations VALUES (?, ?, 0)", (number, name))
    conn.close()
    ledger = Ledger(path)
    rec = ld.CallRecord(call_id="c1", attempt=1, timestamp=1.0, vendor="openai",
                        model_requested="gpt-4o-mini", model_served=None, status="ok",
                        schema_valid=False)
    ledger.write(rec)
    ledger.write(ld.CallRecord(call_id="c2", attempt=1, timestamp=2.0, vendor="openai",
                               model_requested="gpt-4o-mini", model_served=None, status="ok"))
    ledger.flush()
    assert [r.schema_valid for r in ledger.records()] == [False, None]
    ledger.close()


class Address(pydantic.BaseModel):
    city: str
    zip: str | None = None


class Resident(pydantic.BaseModel):
    name: str
    home: Address = pydantic.Field(description="where they live")
    friends: list[Address] = []


def test_openai_strict_schema_matches_the_sdks_own() -> None:
    """Nested models, a described $ref, optional fields: what OpenAI's SDK would send."""
    from openai.lib._pydantic import to_strict_json_schema

    ours = for_openai(Resident.model_json_schema())
    theirs = to_strict_json_schema(Resident)
    theirs["properties"]["friends"].pop("default")  # an annotation: we drop them all
    theirs["$defs"]["Address"]["properties"]["zip"].pop("default", None)
    assert ours == theirs


@pytest.mark.parametrize("target", list(TARGETS.values()))
def test_nested_models_on_every_vendor(d: ld.Dispatcher, target: str) -> None:
    r = d.send(PROMPT, target, schema=Resident)
    assert r.valid is True, r.validation_errors
    assert isinstance(r.parsed, Resident) and isinstance(r.parsed.home, Address)
