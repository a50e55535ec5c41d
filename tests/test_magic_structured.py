"""`%%llm --schema`, `--tool`, `--run-tools` and `--image` in a real InteractiveShell against
the emulators over loopback: what each column shows (the parsed object as a table with
valid/invalid, the calls made and their results, thumbnails above the columns), what is
kept in `_llm`, and each mistake as one line."""

from __future__ import annotations

import base64
from pathlib import Path

from llmdispatch_nb import CallRecord, Dispatcher
from llmdispatch_nb.notebook import CompareResult, LLMResult

from ._images import png
from .test_magic_support import Notebook, one_error_line

pytest_plugins = ("tests.test_magic_support",)  # its fixtures: shell, nb, demo, d, records

DEFINE = '''
from pydantic import BaseModel
from typing import TypedDict

class Person(BaseModel):
    name: str
    age: int

class City(TypedDict):
    name: str
    population: int

def get_weather(city: str) -> str:
    """The weather in a city, in words."""
    return f"sunny in {city}, 21 C"
'''


def define(nb: Notebook) -> None:
    assert nb.run(DEFINE).success


def test_schema_shows_the_parsed_object_per_column_and_valid(
        d: Dispatcher, nb: Notebook, records: list[CallRecord]) -> None:
    define(nb)
    run = nb.cell("gpt claude gemini --schema Person -m 200", "Invent a person.")
    assert run.success, run.stdout + run.stderr
    result = nb.ns["_llm"]
    assert isinstance(result, CompareResult)
    html = run.last_data["text/html"]
    for column in result:
        resp = column.responses[0]
        assert resp.valid is True and type(resp.parsed).__name__ == "Person"
        # the table's cells: each field and its value, escaped once
        assert "<td style=" in html and ">name</th>" in html and ">age</th>" in html
        assert f">{resp.parsed.age}</td>" in html
    assert html.count("valid against Person") == 3
    assert "valid against Person" in run.last_data["text/plain"]
    assert [r.schema_valid for r in records if r.status == "ok"] == [True, True, True]


def test_an_invalid_answer_is_shown_invalid_with_why(d: Dispatcher, nb: Notebook) -> None:
    define(nb)
    from llmdispatch_nb.sim import Fault

    d.sim.emulators["openai"].faults.script(Fault("schema-mismatch"), model="gpt-4o-mini")
    run = nb.cell("gpt --schema Person -m 200", "Invent a person.")
    assert run.success, run.stdout + run.stderr
    result = nb.ns["_llm"]
    assert isinstance(result, LLMResult) and result.response.valid is False
    text = run.last_data["text/plain"]
    assert "invalid against Person:" in text, text
    assert "invalid against Person" in run.last_data["text/html"]


def test_schema_from_a_typeddict_and_json_format_validates_against_it(
        d: Dispatcher, nb: Notebook) -> None:
    define(nb)
    run = nb.cell("claude --schema City -f json -m 200", "A big city, please.")
    assert run.success, run.stdout + run.stderr
    r = nb.ns["_llm"]
    assert r.response.valid is True and set(r.response.parsed) == {"name", "population"}
    assert "application/json" in run.last_data
    assert "valid against City" in run.last_data["text/plain"]


def test_tool_shows_the_calls_and_run_tools_the_final_answer(
        d: Dispatcher, nb: Notebook, records: list[CallRecord]) -> None:
    define(nb)
    run = nb.cell("gpt gemini --tool get_weather", "What's the weather in Paris?")
    assert run.success, run.stdout + run.stderr
    html = run.last_data["text/html"]
    assert html.count("get_weather(city=") == 2 and "not run: add --run-tools" in html
    ran = nb.cell("gpt claude gemini --tool get_weather --run-tools",
                  "What's the weather in Paris?")
    assert ran.success, ran.stdout + ran.stderr
    result = nb.ns["_llm"]
    html = ran.last_data["text/html"]
    for column in result:
        run0 = column.runs[0]
        assert run0.tool_run is not None and run0.tool_run.calls
        assert run0.tool_run.stopped == "answered" and run0.text == run0.tool_run.text
    assert html.count("→ <span>sunny in Paris, 21 C</span>") == 3 and "tool calls, run" in html
    rounds = [r for r in records if r.status == "ok" and "tool-round-2" in r.tags]
    assert len(rounds) == 3  # each vendor was sent its call's result back


def test_image_is_attached_and_shown_small_above_the_columns(
        d: Dispatcher, nb: Notebook, tmp_path: Path, records: list[CallRecord]) -> None:
    path = tmp_path / "dot.png"
    image = png(5, 4)
    path.write_bytes(image)
    run = nb.cell(f"gpt claude gemini --image {path} -m 120", "What is in the picture?")
    assert run.success, run.stdout + run.stderr
    first = run.published[0].data  # the thumbnail comes before the columns
    b64 = base64.b64encode(image).decode()
    assert f'src="data:image/png;base64,{b64}"' in first["text/html"]
    assert "dot.png" in first["text/plain"] and f"{len(image)} bytes" in first["text/plain"]
    for column in nb.ns["_llm"]:
        assert "[attached image: PNG, 5×4 px" in column.runs[0].text
    attached = [r.params.get("attachments") for r in records if r.status == "ok"]
    assert len(attached) == 3 and all(a and a[0]["bytes"] == len(image) for a in attached)


def test_image_from_a_variable_and_a_chat_turn(d: Dispatcher, nb: Notebook) -> None:
    nb.ns["pic"] = png(3, 3)
    run = nb.cell("claude --image pic --chat look -m 80", "Describe it.")
    assert run.success, run.stdout + run.stderr
    assert "[attached image: PNG, 3×3 px" in nb.ns["_llm"].text
    nb.ns.pop("pic")


def test_each_mistake_is_one_line(d: Dispatcher, nb: Notebook, tmp_path: Path) -> None:
    define(nb)
    assert "no variable named 'Nobody'" in one_error_line(nb.cell("gpt --schema Nobody", "x"))
    assert "no function named 'nope'" in one_error_line(nb.cell("gpt --tool nope", "x"))
    nb.ns["x"] = 3
    assert "'x' is a int, not a function" in one_error_line(nb.cell("gpt --tool x", "x"))
    assert "--run-tools runs the calls" in one_error_line(nb.cell("gpt --run-tools", "x"))
    missing = tmp_path / "none.png"
    assert "--image" in one_error_line(nb.cell(f"gpt --image {missing}", "x"))
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert "not PNG, JPEG" in one_error_line(nb.cell(f"gpt --image {text}", "x"))


def test_markup_in_an_answer_field_is_escaped(d: Dispatcher, nb: Notebook) -> None:
    from llmdispatch_nb.notebook._run import Run
    from llmdispatch_nb.notebook._structured_view import structured_html, structured_markdown

    define(nb)
    run = nb.cell("gpt --schema Person -m 200", "Invent a person.")
    resp = nb.ns["_llm"].response
    person = resp.parsed.model_copy(update={"name": "<img src=x onerror=alert(1)> $5 | *b*"})
    from dataclasses import replace

    shown = Run("gpt", 0, response=replace(resp, parsed=person), schema="Person")
    html = structured_html(shown)
    assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    md = structured_markdown(shown)
    assert "\\<img" in md and "\\|" in md and "\\*b\\*" in md
    assert run.success


def test_json_format_with_a_schema_says_when_the_json_does_not_fit(d: Dispatcher,
                                                                  nb: Notebook) -> None:
    define(nb)
    from llmdispatch_nb.sim import Fault

    d.sim.emulators["anthropic"].faults.script(Fault("schema-mismatch"), model="claude-haiku-4-5")
    run = nb.cell("gpt claude -f json --schema Person -m 200", "Invent a person.")
    assert run.success, run.stdout + run.stderr
    html = run.last_data["text/html"]
    assert "valid JSON, fits the schema" in html
    assert "the JSON does not fit the schema:" in html
    single = nb.cell("gpt -f json --schema Person -m 200", "Invent a person.")
    assert nb.ns["_llm"].json_error is None and "application/json" in single.last_data
