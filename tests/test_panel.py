"""The widget panel's logic, without a browser: its handlers are called as a click would
call them, against emulators on loopback, and its widgets are read back."""

from __future__ import annotations

import concurrent.futures
import json
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import ipywidgets as widgets
import pytest

from llmdispatch_nb import CallRecord, Dispatcher, Endpoint, Secret
from llmdispatch_nb._stream import Stream
from llmdispatch_nb._types import Response, TextDelta, Usage
from llmdispatch_nb.notebook._panel import Panel, panel, target_choices
from llmdispatch_nb.notebook._panel_column import Column
from llmdispatch_nb.sim import Fault, SimServer, serve

from .conftest import CANARY_KEY, assert_no_canary

GPT = "openai:gpt-4o-mini"
CLAUDE = "anthropic:claude-haiku-4-5"
WAIT = 20.0  # seconds: a bound on every wait, never reached when things work


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    with serve(["openai", "anthropic"], time_scale=0) as server:
        yield server


@pytest.fixture
def dispatcher(sim: SimServer) -> Iterator[Dispatcher]:
    for emulator in sim.emulators.values():
        emulator.reset()
    endpoints = [
        Endpoint("openai", "openai", sim.base_url("openai"), key=Secret(CANARY_KEY),
                 models=("gpt-4o-mini", "gpt-4o"), default_model="gpt-4o-mini", simulated=True),
        Endpoint("anthropic", "anthropic", sim.base_url("anthropic"), key=Secret(CANARY_KEY),
                 models=("claude-haiku-4-5",), default_model="claude-haiku-4-5", simulated=True),
    ]
    with Dispatcher(endpoints, dotenv=False) as d:
        yield d


@pytest.fixture
def records(dispatcher: Dispatcher) -> list[CallRecord]:
    seen: list[CallRecord] = []
    dispatcher.on_record(seen.append)
    return seen


def make_panel(d: Dispatcher, *targets: str, prompt: str = "Compare these, please") -> Panel:
    p = panel(d)
    p.prompt.value = prompt
    p.targets.value = targets
    return p


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def finish(p: Panel) -> None:
    assert p.wait(WAIT), f"the panel is still {p.state}"
    assert p.state == "idle"


def widget_states(w: widgets.Widget) -> Iterator[dict[str, Any]]:
    yield w.get_state()
    for child in getattr(w, "children", ()):
        yield from widget_states(child)


def all_text(p: Panel) -> str:
    return json.dumps(list(widget_states(p.widget)), default=str)


# -- the picker -------------------------------------------------------------------------


def test_picker_lists_every_model_with_key_status_and_simulated_mark(sim: SimServer) -> None:
    endpoints = [
        Endpoint("openai", "openai", sim.base_url("openai"), key=Secret(CANARY_KEY),
                 models=("gpt-4o-mini", "gpt-4o"), default_model="gpt-4o-mini"),
        Endpoint("anthropic", "anthropic", sim.base_url("anthropic"), key=None,
                 default_model="claude-haiku-4-5", simulated=True),
    ]
    with Dispatcher(endpoints, dotenv=False) as d:
        labels = [c.label for c in target_choices(d)]
        p = Panel(d)
        assert labels == [
            "openai:gpt-4o-mini · key set",
            "openai:gpt-4o · key set",
            "anthropic:claude-haiku-4-5 · simulated",
            "google:gemini-2.5-flash · no key (set GEMINI_API_KEY)",
        ]
        assert [label for label, _ in p.targets.options] == labels
        assert p.targets.value == (GPT,)  # the dispatcher's default target
        assert_no_canary(all_text(p), repr(p), p.choices)
        p.close()


def test_picker_in_demo_mode_marks_every_vendor_simulated() -> None:
    with Dispatcher(demo=True, dotenv=False, env={}) as d:
        p = Panel(d)
        configured = [c for c in p.choices if c.configured]
        assert {c.vendor for c in configured} >= {"openai", "anthropic"}
        assert all(c.simulated and "simulated" in c.label for c in configured)
        assert "demo mode" in p.widget.children[0].value
        p.close()


# -- send and compare -------------------------------------------------------------------


def test_send_streams_the_first_selected_target_into_one_column(
        sim: SimServer, dispatcher: Dispatcher, records: list[CallRecord]) -> None:
    p = make_panel(dispatcher, GPT, CLAUDE)
    assert p.on_send()
    assert p.state == "running"
    assert p.send_button.disabled and p.compare_button.disabled
    assert not p.cancel_all_button.disabled
    finish(p)

    assert [c.target for c in p.columns] == [GPT]
    assert sim.emulators["openai"].count == 1
    assert sim.emulators["anthropic"].count == 0
    (column,) = p.columns
    response = column.responses[0]
    assert column.status == "done"
    assert column.text == response.text and response.text.startswith("[simulated gpt-4o-mini]")
    assert response.text[:40] in column.body.value
    stats = column.stats.value
    assert f"latency {response.latency_s:.2f} s" in stats
    assert f"ttft {response.ttft_s:.2f} s" in stats
    assert f"{response.usage.output_tokens} out" in stats
    assert response.cost.usd is not None and f"{response.cost.usd:.6f}" in stats
    assert "[done]" in column.title.value and "[simulated]" in column.title.value
    assert column.cancel_button.disabled
    assert not p.send_button.disabled and not p.compare_button.disabled
    assert p.cancel_all_button.disabled
    assert "1 done" in p.status.value
    assert [r.status for r in records] == ["ok"]
    p.close()


def test_compare_fills_one_column_per_selected_target(sim: SimServer, dispatcher: Dispatcher) -> None:
    p = make_panel(dispatcher, GPT, "openai:gpt-4o", CLAUDE)
    assert p.on_compare()
    finish(p)

    assert [c.target for c in p.columns] == [GPT, "openai:gpt-4o", CLAUDE]
    assert [c.status for c in p.columns] == ["done"] * 3
    assert p.columns_box.children == tuple(c.box for c in p.columns)
    assert sim.emulators["openai"].count == 2
    assert sim.emulators["anthropic"].count == 1
    for column in p.columns:
        model = column.target.partition(":")[2]
        assert column.text.startswith(f"[simulated {model}]")
        assert "latency" in column.stats.value and "cost $" in column.stats.value
    assert "3 done" in p.status.value
    p.close()


def test_a_new_run_replaces_the_last_runs_columns(sim: SimServer, dispatcher: Dispatcher) -> None:
    p = make_panel(dispatcher, GPT, CLAUDE)
    assert p.on_compare()
    finish(p)
    first = list(p.columns)
    p.targets.value = (CLAUDE,)
    assert p.on_compare()
    finish(p)
    assert [c.target for c in p.columns] == [CLAUDE]
    assert p.columns_box.children == (p.columns[0].box,)
    assert all(c.box.comm is None and c.body.comm is None for c in first)  # closed
    assert p.runs == 2 and sim.emulators["anthropic"].count == 2
    p.close()


def test_settings_from_the_controls_reach_the_call(
        dispatcher: Dispatcher, records: list[CallRecord]) -> None:
    p = make_panel(dispatcher, CLAUDE)
    p.system.value = "Answer in one line."
    p.temperature.value = 0.3
    p.max_tokens.value = 64
    assert p.on_send()
    finish(p)

    (record,) = records
    assert record.params == {"temperature": 0.3, "max_tokens": 64}
    assert record.tags == ("panel",)
    assert record.prompt is not None and record.prompt.startswith("Answer in one line.")
    assert p.settings().call_params()["system"] == "Answer in one line."
    p.close()


def test_a_max_cost_below_the_estimate_is_refused_before_sending(
        sim: SimServer, dispatcher: Dispatcher) -> None:
    p = make_panel(dispatcher, GPT)
    p.max_cost.value = 1e-9
    p.strategy.value = "cheapest"
    assert p.settings().call_params()["strategy"] == "cheapest"
    assert p.on_send()
    finish(p)
    (column,) = p.columns
    assert column.status == "error" and column.error is not None
    assert column.error.startswith("BudgetExceededError")
    assert sim.emulators["openai"].count == 0
    p.close()


def test_repeat_sends_each_target_that_many_times(sim: SimServer, dispatcher: Dispatcher) -> None:
    p = make_panel(dispatcher, GPT, CLAUDE)
    p.repeat.value = 3
    assert p.on_compare()
    finish(p)

    assert sim.emulators["openai"].count == 3
    assert sim.emulators["anthropic"].count == 3
    for column in p.columns:
        assert len(column.responses) == 3
        assert "[run 3/3]" in column.title.value
        assert "3 runs: mean latency" in column.stats.value
    p.close()


def test_nothing_is_sent_without_a_prompt_or_a_target(sim: SimServer, dispatcher: Dispatcher) -> None:
    p = make_panel(dispatcher, GPT, prompt="   ")
    assert not p.on_compare()
    assert p.state == "idle" and "write a prompt first" in p.status.value
    p.prompt.value = "Hello"
    p.targets.value = ()
    assert not p.on_send()
    assert p.state == "idle" and "pick at least one target" in p.status.value
    assert p.ignored_clicks == 0
    assert sim.total_requests() == 0
    p.close()


# -- in-flight clicks and cancelling ----------------------------------------------------


def test_a_click_while_running_is_ignored_never_a_second_send(
        sim: SimServer, dispatcher: Dispatcher) -> None:
    sim.emulators["openai"].faults.script(Fault("hang", hang_s=WAIT))
    p = make_panel(dispatcher, GPT)
    assert p.on_compare()
    wait_until(lambda: sim.emulators["openai"].count == 1, "the request to arrive")

    assert not p.on_compare()
    assert not p.on_send()
    assert p.ignored_clicks == 2
    assert p.state == "running"
    assert p.send_button.disabled and p.compare_button.disabled

    p.on_cancel_all()
    finish(p)
    assert sim.emulators["openai"].count == 1
    assert p.runs == 1
    assert p.columns[0].status == "cancelled"
    p.close()


def test_cancel_one_column_lets_the_others_finish(sim: SimServer, dispatcher: Dispatcher) -> None:
    sim.emulators["openai"].faults.script(Fault("hang", hang_s=WAIT))
    p = make_panel(dispatcher, GPT, CLAUDE)
    assert p.on_compare()
    stuck, other = p.columns
    wait_until(lambda: other.finished and sim.emulators["openai"].count == 1,
               "anthropic to finish while openai hangs")
    assert p.state == "running"

    stuck.cancel_button.click()
    finish(p)
    assert stuck.status == "cancelled" and "cancelled" in stuck.body.value
    assert other.status == "done" and other.text
    assert "1 cancelled" in p.status.value and "1 done" in p.status.value
    p.close()


def test_cancel_all_stops_every_column_and_returns_to_idle(
        sim: SimServer, dispatcher: Dispatcher) -> None:
    for name in ("openai", "anthropic"):
        sim.emulators[name].faults.script(Fault("hang", hang_s=WAIT))
    p = make_panel(dispatcher, GPT, CLAUDE)
    p.repeat.value = 2
    assert p.on_compare()
    wait_until(lambda: sim.total_requests() == 2, "both requests to arrive")

    p.cancel_all_button.click()
    assert p.state in ("cancelling", "idle")
    finish(p)
    assert [c.status for c in p.columns] == ["cancelled", "cancelled"]
    assert sim.total_requests() == 2  # the second repeat never started
    assert p.cancel_all_button.disabled and not p.compare_button.disabled
    p.on_cancel_all()  # idle: nothing to cancel, nothing changes
    assert p.state == "idle"
    p.close()


def test_closing_a_running_panel_cancels_its_calls(sim: SimServer, dispatcher: Dispatcher) -> None:
    sim.emulators["anthropic"].faults.script(Fault("hang", hang_s=WAIT))
    p = make_panel(dispatcher, CLAUDE)
    assert p.on_send()
    wait_until(lambda: sim.emulators["anthropic"].count == 1, "the request to arrive")
    p.close()
    assert p.state == "idle"
    assert p.columns[0].status == "cancelled"


# -- failures ---------------------------------------------------------------------------


def test_a_vendor_failing_mid_compare_shows_its_error_while_the_others_finish(
        sim: SimServer, dispatcher: Dispatcher) -> None:
    sim.emulators["anthropic"].faults.script(Fault("midstream-disconnect", after_tokens=3))
    p = make_panel(dispatcher, GPT, CLAUDE, "openai:gpt-4o")
    assert p.on_compare()
    finish(p)

    gpt, claude, gpt4o = p.columns
    assert gpt.status == gpt4o.status == "done"
    assert claude.status == "error"
    assert claude.error is not None and claude.error.startswith("MidStreamError")
    assert "llmd-error" in claude.body.value and "MidStreamError" in claude.body.value
    assert claude.text.startswith("[simulated claude-haiku-4-5]")  # the partial text stays
    assert claude.text[:30] in claude.body.value
    assert "[error]" in claude.title.value
    assert "2 done" in p.status.value and "1 error" in p.status.value
    p.close()


def test_an_error_before_any_text_names_the_vendor_error_and_leaks_no_key(
        sim: SimServer, dispatcher: Dispatcher) -> None:
    sim.emulators["openai"].faults.script("401")
    p = make_panel(dispatcher, GPT, CLAUDE)
    assert p.on_compare()
    finish(p)

    gpt, claude = p.columns
    assert gpt.status == "error" and gpt.error is not None
    assert gpt.error.startswith("AuthenticationError")
    assert claude.status == "done"
    assert_no_canary(all_text(p), gpt.error)
    p.close()


def test_a_target_without_a_key_says_which_variable_to_set(dispatcher: Dispatcher) -> None:
    p = make_panel(dispatcher, "google:gemini-2.5-flash", GPT)
    assert p.on_compare()
    finish(p)
    missing, ok = p.columns
    assert missing.status == "error" and missing.error is not None
    assert "GEMINI_API_KEY" in missing.error
    assert ok.status == "done"
    p.close()


# -- rendering --------------------------------------------------------------------------


def _response(text: str) -> Response:
    return Response(text=text, finish_reason="stop", raw_finish_reason="stop",
                    usage=Usage(5, 7), vendor="openai", model="gpt-4o-mini",
                    model_requested="gpt-4o-mini", latency_s=0.5, ttft_s=0.1)


def test_a_column_writes_its_widgets_at_most_once_per_interval() -> None:
    stream = Stream()
    future: concurrent.futures.Future[Response] = concurrent.futures.Future()
    stream.attach(future)
    column = Column(GPT, min_interval=0.1)
    assert column.renders == 1  # the empty column, drawn once when built
    changes: list[str] = []
    column.body.observe(lambda c: changes.append(c["new"]), names="value")

    t = time.perf_counter() + 100  # explicit clock readings, later than the first draw
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        consumer = pool.submit(column.consume, lambda _target: stream)
        try:
            stream.sink.send(TextDelta("Hello"))
            wait_until(lambda: column.text == "Hello", "the first piece")
            assert column.render(now=t)
            stream.sink.send(TextDelta(" there"))
            wait_until(lambda: column.text == "Hello there", "the second piece")
            assert not column.render(now=t + 0.05)  # too soon: the text waits
            assert "there" not in column.body.value
            assert column.render(now=t + 0.15)
            assert "Hello there" in column.body.value
            assert not column.render(now=t + 10)  # nothing new: nothing sent
            future.set_result(_response("Hello there"))
            consumer.result(WAIT)
        finally:
            future.cancel()  # never leave the consumer waiting if an assertion failed

    assert column.status == "done"
    assert column.render(now=t + 10.01, force=True)  # the final state is never held back
    assert column.renders == 4
    assert len(changes) == 2  # the final text equals the streamed text: not sent again
    assert "latency 0.50 s" in column.stats.value and "5 in / 7 out" in column.stats.value


def test_column_text_is_escaped_as_html() -> None:
    stream = Stream()
    future: concurrent.futures.Future[Response] = concurrent.futures.Future()
    stream.attach(future)
    column = Column(GPT)
    future.set_result(_response("<script>alert(1)</script> & more"))
    column.consume(lambda _target: stream)
    column.render(force=True)
    assert "<script>" not in column.body.value
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in column.body.value


# -- the Stats and Charts tabs ----------------------------------------------------------


def test_stats_and_charts_say_so_when_the_analysis_module_is_missing(
        dispatcher: Dispatcher, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "llmdispatch_nb.analysis", None)  # makes the import fail
    p = make_panel(dispatcher, GPT)
    assert p.on_send()
    finish(p)
    assert "Stats are not available" in p.ledger.stats.value
    p.tabs.selected_index = 2
    assert "Charts are not available" in p.ledger.chart_note.value
    assert p.columns[0].status == "done"  # the panel itself still works
    p.close()


def test_stats_tab_shows_the_ledger_summary_after_a_run(dispatcher: Dispatcher) -> None:
    pytest.importorskip("llmdispatch_nb.analysis")
    p = make_panel(dispatcher, GPT, CLAUDE)
    assert p.on_compare()
    finish(p)
    table = p.ledger.stats.value
    assert "<table" in table
    assert "openai" in table and "anthropic" in table
    p.close()


def test_charts_tab_draws_a_plotly_figure_from_the_ledger(dispatcher: Dispatcher) -> None:
    pytest.importorskip("llmdispatch_nb.analysis")
    p = make_panel(dispatcher, GPT, CLAUDE)
    assert p.on_compare()
    finish(p)
    p.tabs.selected_index = 2
    (output,) = p.ledger.chart.outputs
    figure = output["data"]["application/vnd.plotly.v1+json"]
    assert figure["data"], "the figure has no traces"
    assert p.ledger.chart_note.value == ""

    names = [value for _label, value in p.ledger.figure_picker.options]
    assert "latency_figure" in names and len(names) > 1
    current = p.ledger.figure_picker.value
    for name in [n for n in names if n != current] + [current]:  # picking a figure draws it
        p.ledger.chart.outputs = ()
        p.ledger.figure_picker.value = name
        assert p.ledger.chart_note.value == "", f"{name}: {p.ledger.chart_note.value}"
        (output,) = p.ledger.chart.outputs
        assert "application/vnd.plotly.v1+json" in output["data"], name
    p.close()


def test_max_cost_zero_says_no_limit(dispatcher: Dispatcher) -> None:
    p = make_panel(dispatcher, GPT)
    assert "no limit" in p.max_cost_note.value
    p.max_cost.value = 0.05
    assert "per call" in p.max_cost_note.value and "no limit" not in p.max_cost_note.value
    p.max_cost.value = 0.0
    assert "no limit" in p.max_cost_note.value
    p.close()
