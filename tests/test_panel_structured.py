"""The widget panel's Schema, Tools and Images fields (as %%llm's --schema, --tool and
--image): names read from a real InteractiveShell's namespace, sent to the emulators over
loopback, the parsed table, verdict and calls shown in each column."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pydantic
import pytest
from IPython.core.interactiveshell import InteractiveShell

from llmdispatch_nb import Dispatcher, Endpoint, Secret
from llmdispatch_nb.notebook._panel import Panel, panel
from llmdispatch_nb.sim import SimServer, serve

from ._images import png
from .conftest import CANARY_KEY

pytest_plugins = ("tests.test_magic_support",)  # its `shell` fixture: a real InteractiveShell

GPT, CLAUDE = "openai:gpt-4o-mini", "anthropic:claude-haiku-4-5"


class Person(pydantic.BaseModel):
    name: str
    age: int


def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    with serve(["openai", "anthropic"], time_scale=0) as server:
        yield server


@pytest.fixture
def d(sim: SimServer, shell: InteractiveShell) -> Iterator[Dispatcher]:
    for emulator in sim.emulators.values():
        emulator.reset()
    shell.user_ns.update(Person=Person, get_weather=get_weather)
    eps = [Endpoint("openai", "openai", sim.base_url("openai"), key=Secret(CANARY_KEY),
                    models=("gpt-4o-mini",), default_model="gpt-4o-mini", simulated=True),
           Endpoint("anthropic", "anthropic", sim.base_url("anthropic"), key=Secret(CANARY_KEY),
                    models=("claude-haiku-4-5",), default_model="claude-haiku-4-5",
                    simulated=True)]
    with Dispatcher(eps, dotenv=False, ledger=None) as disp:
        yield disp
    for name in ("Person", "get_weather"):
        shell.user_ns.pop(name, None)


def run(p: Panel) -> None:
    assert p.on_compare()
    deadline = time.monotonic() + 30
    while not p.wait(0.05):
        assert time.monotonic() < deadline, "the panel is still running"


def test_schema_and_image_fields_reach_every_column(d: Dispatcher, sim: SimServer,
                                                    tmp_path: Path) -> None:
    path = tmp_path / "dot.png"
    path.write_bytes(png(4, 4))
    p = panel(d)
    p.prompt.value = "Invent a person."
    p.targets.value = (GPT, CLAUDE)
    p.schema.value = "Person"
    p.images.value = str(path)
    run(p)
    for column in p.columns:
        response = column.responses[0]
        assert response.valid is True and isinstance(response.parsed, Person)
        assert ">age</th>" in column.body.value and "valid" in column.body.value
    body = sim.emulators["openai"].requests.chat()[-1].body
    assert body["messages"][-1]["content"][1]["type"] == "image_url"
    assert body["response_format"]["type"] == "json_schema"
    p.close()


def test_tools_field_shows_the_calls_in_each_column(d: Dispatcher) -> None:
    p = panel(d)
    p.prompt.value = "What's the weather in Oslo?"
    p.targets.value = (GPT, CLAUDE)
    p.tools.value = "get_weather"
    run(p)
    for column in p.columns:
        assert column.responses[0].tool_calls
        assert "get_weather(city=" in column.body.value
    p.close()


def test_a_name_the_notebook_lacks_is_said_and_nothing_is_sent(d: Dispatcher,
                                                               sim: SimServer) -> None:
    p = panel(d)
    p.prompt.value = "Invent a person."
    p.targets.value = (GPT,)
    p.schema.value = "Nobody"
    assert not p.on_compare()
    assert "no variable named &#x27;Nobody&#x27;" in p.status.value and p.state == "idle"
    assert not sim.emulators["openai"].requests.chat()
    p.close()
