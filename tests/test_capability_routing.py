"""Routing by what a request needs of a model: a candidate whose model lacks tools, images or
PDFs (the catalogue's word) is skipped in the plan with the reason; when none is left, one
error names the capability and models that have it; whatever is refused before sending is
a `refused` row in the ledger. A schema is no hard requirement: every adapter has a fallback.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pydantic
import pytest

import llmdispatch_nb as ld
from llmdispatch_nb import catalogue
from llmdispatch_nb.errors import AllCandidatesFailedError, RequestValidationError

ASK = "What is the weather in Paris?"
# A one-pixel PNG (as the attachment tests use).
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6300010000050001a5f645400000000049454e44ae426082")


def get_weather(city: str) -> dict[str, Any]:
    """Current weather in a city."""
    return {"city": city, "temp": 21}


class Point(pydantic.BaseModel):
    x: int
    y: int


@pytest.fixture
def d() -> Iterator[ld.Dispatcher]:
    with ld.Dispatcher(demo=True, sim_time_scale=0, dotenv=False,
                       groups={"pair": ["openai:gpt-4o-mini", "openai:gpt-4o"]}) as disp:
        yield disp


@pytest.fixture
def mini_without(request: pytest.FixtureRequest) -> Iterator[None]:
    """openai:gpt-4o-mini as the catalogue would list a model lacking the given fields."""
    catalogue.add("openai", "gpt-4o-mini", **request.param)
    try:
        yield
    finally:
        catalogue.remove("openai", "gpt-4o-mini")


def rows(d: ld.Dispatcher, call_id: str | None = None) -> list[Any]:
    d.ledger.flush()
    return [r for r in d.ledger.records() if call_id is None or r.call_id == call_id]


def sent_models(d: ld.Dispatcher) -> list[str]:
    return [r.body["model"] for r in d.sim.emulators["openai"].requests.chat()]


@pytest.mark.parametrize("mini_without", [{"tools": False}], indirect=True)
def test_a_group_sends_tools_to_the_model_that_takes_them(
        d: ld.Dispatcher, mini_without: None) -> None:
    plan = d.plan(d.request(ASK, "pair", tools=[get_weather]))
    assert [c.key for c in plan.candidates] == ["openai:gpt-4o"]
    [(skipped, why)] = plan.skipped
    assert skipped.key == "openai:gpt-4o-mini" and "does not take tools" in why
    assert "skipped openai:gpt-4o-mini: openai:gpt-4o-mini does not take tools" in plan.describe()
    r = d.send(ASK, "pair", tools=[get_weather])
    assert r.model_requested == "gpt-4o" and r.tool_calls
    assert sent_models(d) == ["gpt-4o"]  # nothing went to the model without tools
    assert [(a.model, a.status) for a in r.attempts] == [("gpt-4o-mini", "skipped"),
                                                         ("gpt-4o", "ok")]
    assert [(x.model_requested, x.status) for x in rows(d, r.call_id)] == [("gpt-4o", "ok")]
    # Without tools the same group sends to its first model as before.
    assert d.send("Hello", "pair").model_requested == "gpt-4o-mini"


@pytest.mark.parametrize("mini_without", [{"tools": False}], indirect=True)
def test_a_single_model_without_tools_gives_one_error_and_a_ledger_row(
        d: ld.Dispatcher, mini_without: None) -> None:
    before = len(rows(d))
    with pytest.raises(RequestValidationError) as caught:
        d.send(ASK, "openai:gpt-4o-mini", tools=[get_weather])
    message = str(caught.value)
    assert "takes tools" in message and "openai:gpt-4o-mini does not take tools" in message
    # The models that have it, from the catalogue; the one without is not among them.
    listed = message.split("that do (")[1]
    assert "openai:" in listed and "openai:gpt-4o-mini," not in listed
    assert sent_models(d) == []
    [row] = rows(d)[before:]
    assert (row.status, row.model_requested, row.error_class) == (
        "refused", "gpt-4o-mini", "RequestValidationError")
    assert "does not take tools" in (row.error_message or "")


@pytest.mark.parametrize("mini_without", [{"input_modalities": ["text"]}], indirect=True)
def test_an_image_goes_to_the_model_that_reads_images(
        d: ld.Dispatcher, mini_without: None) -> None:
    r = d.send(["What is this?", ld.Image(PNG)], "pair")
    assert r.model_requested == "gpt-4o"
    assert [(a.model, a.status) for a in r.attempts] == [("gpt-4o-mini", "skipped"),
                                                         ("gpt-4o", "ok")]
    assert "does not take images" in (r.attempts[0].error or "")
    with pytest.raises(RequestValidationError, match="takes images"):
        d.send(["What is this?", ld.Image(PNG)], "openai:gpt-4o-mini")
    assert rows(d)[-1].status == "refused"


def test_a_refusal_the_plan_cannot_foresee_is_recorded_and_the_next_candidate_tried(
        d: ld.Dispatcher) -> None:
    # An image type OpenAI does not read: a vendor limit, not a model's capability, so
    # the plan keeps both candidates and each adapter refuses before sending.
    heic = ld.Image(b"\x00\x00\x00\x18ftypheic" + b"\x00" * 64)
    assert not d.plan(d.request(["What is this?", heic], "pair")).skipped
    with pytest.raises(AllCandidatesFailedError, match="does not read image/heic"):
        d.send(["What is this?", heic], "pair")
    refused = [r for r in rows(d) if r.status == "refused"]
    assert [r.model_requested for r in refused] == ["gpt-4o-mini", "gpt-4o"]
    assert len({r.call_id for r in refused}) == 1 and sent_models(d) == []


@pytest.mark.parametrize("mini_without", [{"structured_output": False, "tools": False}],
                         indirect=True)
def test_a_schema_is_no_requirement_where_the_adapter_has_a_fallback(
        d: ld.Dispatcher, mini_without: None) -> None:
    # OpenAI's adapter: JSON mode with the schema in an instruction.
    r = d.send("Pick a point.", "pair", schema=Point)
    assert r.model_requested == "gpt-4o-mini" and isinstance(r.parsed, Point)
    assert d.sim.emulators["openai"].requests.chat()[-1].body["response_format"] == {
        "type": "json_object"}
    assert not d.plan(d.request("Pick a point.", "pair", schema=Point)).skipped


def test_anthropic_without_native_structured_output_fills_a_schema_by_a_forced_tool(
        d: ld.Dispatcher) -> None:
    catalogue.add("anthropic", "claude-haiku-4-5", structured_output=False)
    try:
        r = d.send("Pick a point.", "anthropic:claude-haiku-4-5", schema=Point)
    finally:
        catalogue.remove("anthropic", "claude-haiku-4-5")
    assert isinstance(r.parsed, Point) and r.valid is True
    body = d.sim.emulators["anthropic"].requests.chat()[-1].body
    assert body["tool_choice"]["type"] == "tool"
    assert rows(d, r.call_id)[-1].schema_valid is True


def test_a_compatible_server_without_schema_support_uses_json_mode() -> None:
    from llmdispatch_nb.sim import SimServer
    from llmdispatch_nb.sim.openai import OpenAIEmulator
    from llmdispatch_nb.vendors import Endpoint

    catalogue.add("ollama", "llama3.2", structured_output=False, tools=False)
    try:
        with SimServer({"local": OpenAIEmulator(local=True, time_scale=0)}).start() as sim, \
                ld.Dispatcher([Endpoint("ollama", "compat", sim.base_url("local"),
                                        priced=False, simulated=True)],
                              dotenv=False) as local:
            r = local.send("Pick a point.", "ollama:llama3.2", schema=Point)
            assert isinstance(r.parsed, Point)
            assert sim.emulators["local"].requests.chat()[-1].body["response_format"] == {
                "type": "json_object"}
            # Tools, though, it does not take (the catalogue says so): one error, one row.
            with pytest.raises(RequestValidationError, match="takes tools"):
                local.send(ASK, "ollama:llama3.2", tools=[get_weather])
            assert len(sim.emulators["local"].requests.chat()) == 1
            assert rows(local)[-1].status == "refused"
    finally:
        catalogue.remove("ollama", "llama3.2")
