"""`%%llm` in a real InteractiveShell against the emulators over loopback: loading,
options, streaming updates, compare, formats, results, chats and each error line."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

import llmdispatch_nb
from llmdispatch_nb import CallRecord, Dispatcher, Endpoint, Secret
from llmdispatch_nb.errors import AuthenticationError, BudgetExceededError, MissingKeyError
from llmdispatch_nb.notebook import CompareResult, LLMResult, check_json, fenced_code
from llmdispatch_nb.sim import SimServer, serve

from .conftest import CANARY_KEY, assert_no_canary
from .test_magic_support import Notebook, no_traceback, one_error_line

pytest_plugins = ("tests.test_magic_support",)  # its fixtures: shell, nb, demo, d, records

META = "llmdispatch_nb"


def ok_records(records: list[CallRecord]) -> list[CallRecord]:
    return [r for r in records if r.status == "ok"]


# -- loading and configuration --------------------------------------------------------------


def test_load_ext_registers_line_and_cell_magic(nb: Notebook) -> None:
    mm = nb.shell.magics_manager.magics
    assert "llm" in mm["line"] and "llm" in mm["cell"]
    assert "--max-tokens" in (nb.shell.find_line_magic("llm").__doc__ or "")


def test_question_mark_shows_usage(nb: Notebook) -> None:
    run = nb.run("%llm?")
    shown = run.stdout + "".join(str(p.data.get("text/plain", "")) for p in run.published)
    assert "Subcommands:" in shown and "--no-interpolate" in shown


def test_help_subcommand_and_dash_h(nb: Notebook) -> None:
    assert "Subcommands:" in nb.run("%llm help").stdout
    assert "--fallback TARGET" in nb.cell("-h", "ignored").stdout


def test_config_default_target(d: Dispatcher, nb: Notebook, records: list[CallRecord]) -> None:
    run = nb.run("%config LLMMagics.default_target = 'claude'")
    assert run.success
    assert nb.cell("-m 5", "hi").success
    assert ok_records(records)[-1].vendor == "anthropic"


def test_config_from_ipython_config_reaches_a_reloaded_magic(nb: Notebook) -> None:
    nb.shell.config.LLMMagics.default_target = "gemini"
    try:
        assert nb.run("%reload_ext llmdispatch_nb").success
        assert nb.magics.default_target == "gemini"
    finally:
        del nb.shell.config.LLMMagics["default_target"]
        nb.run("%reload_ext llmdispatch_nb")
    assert nb.magics.default_target is None


def test_config_rejects_a_negative_throttle(nb: Notebook, caplog: pytest.LogCaptureFixture) -> None:
    nb.run("%config LLMMagics.throttle_s = -1")
    assert nb.magics.throttle_s == 0.1
    assert "throttle_s must be 0 or more" in caplog.text  # %config logs what it refused


# -- sending ------------------------------------------------------------------------------


def test_cell_streams_an_answer_with_a_footer(d: Dispatcher, nb: Notebook) -> None:
    run = nb.cell("gpt -m 20", "Say hello")
    assert run.success, run.stdout
    data = run.last_data
    result = nb.ns["_llm"]
    assert isinstance(result, LLMResult)
    assert result.text and result.text in data["text/markdown"]
    footer = data["text/plain"].splitlines()[-1]
    for part in ("openai · gpt-4o-mini", "ttft", "tokens", "$", "simulated"):
        assert part in footer, footer
    assert "cut at max tokens" in footer  # -m 20 on a longer synthetic answer
    assert d.sim.emulators["openai"].requests.chat()[-1].stream is True


def test_no_stream_waits_for_the_whole_answer(d: Dispatcher, nb: Notebook) -> None:
    run = nb.cell("gpt --no-stream -m 10", "hi")
    assert run.success
    assert d.sim.emulators["openai"].requests.chat()[-1].stream is False
    # The placeholder, then the answer: nothing streamed in between.
    assert len(run.published) == 2 and run.published[1].update
    assert nb.ns["_llm"].text in run.last_data["text/plain"]


def test_request_options_reach_the_call(d: Dispatcher, nb: Notebook,
                                        records: list[CallRecord]) -> None:
    run = nb.cell('gpt -s "Be brief." -t 0.3 -m 12 --top-p 0.9 --seed 7 --stop zzz '
                  "--tag exp1 --tag exp2", "Name a colour")
    assert run.success, run.stdout
    rec = ok_records(records)[-1]
    assert rec.params == {"max_tokens": 12, "temperature": 0.3, "top_p": 0.9, "seed": 7,
                          "stop": ["zzz"]}
    assert rec.tags == ("exp1", "exp2")
    assert rec.prompt is not None and rec.prompt.startswith("Be brief.")
    assert rec.output_tokens is not None and rec.output_tokens <= 12


def test_stop_sequence_cuts_the_answer(d: Dispatcher, nb: Notebook) -> None:
    assert nb.cell('gpt --stop "You asked"', "anything").success
    text = nb.ns["_llm"].text
    assert text.startswith("[simulated gpt-4o-mini]") and "You asked" not in text


def test_long_options_and_explicit_vendor_model(d: Dispatcher, nb: Notebook,
                                                records: list[CallRecord]) -> None:
    run = nb.cell("google:gemini-2.0-flash --system S --temperature 1 --max-tokens 8", "x y z")
    assert run.success
    rec = ok_records(records)[-1]
    assert (rec.vendor, rec.model_requested) == ("google", "gemini-2.0-flash")
    assert rec.params["max_tokens"] == 8 and rec.params["temperature"] == 1


def test_one_line_prompt(d: Dispatcher, nb: Notebook, records: list[CallRecord]) -> None:
    nb.ns["x"] = 42
    run = nb.run("%llm claude -m 5 -- What is {x}?")
    assert run.success, run.stdout
    rec = ok_records(records)[-1]
    assert rec.vendor == "anthropic" and rec.prompt is not None and rec.prompt.endswith("What is 42?")


def test_a_group_target_and_a_strategy(d: Dispatcher, nb: Notebook) -> None:
    d.resolver.add_group("pair", ["claude", "gpt"])
    try:
        assert nb.cell("pair -m 5", "hi").success
        assert nb.ns["_llm"].response.vendor == "anthropic"  # "model": the group's order
        run = nb.cell("pair --strategy cheapest -m 5", "hi")
        assert run.success
        assert nb.ns["_llm"].response.vendor == "openai"  # gpt-4o-mini is the cheaper one
        assert nb.ns["_llm"].target == "pair"
    finally:
        d.resolver.groups.pop("pair", None)


def test_fallback_answers_when_the_first_target_fails(d: Dispatcher, nb: Notebook) -> None:
    d.sim.emulators["openai"].faults.script("401")
    try:
        d.send("probe", "gpt", fallbacks=["claude"], max_tokens=3)
    except AuthenticationError:
        pytest.skip("this core does not honour fallbacks= yet (routing integration pending)")
    d.sim.emulators["openai"].reset()
    d.sim.emulators["openai"].faults.script("401")
    run = nb.cell("gpt --fallback claude -m 5", "hi")
    assert run.success, run.stdout
    assert nb.ns["_llm"].response.vendor == "anthropic"
    assert "fell back from openai:gpt-4o-mini" in run.last_data["text/plain"]


def test_max_cost_refuses_before_sending(d: Dispatcher, nb: Notebook) -> None:
    try:
        d.send("probe", "gpt", max_cost=1e-12, max_tokens=3)
        pytest.skip("this core does not enforce max_cost= yet (budget integration pending)")
    except BudgetExceededError:
        pass
    d.sim.emulators["openai"].reset()
    line = one_error_line(nb.cell("gpt --max-cost 0.000000000001", "hi"))
    assert "budget" in line.lower() or "cost" in line.lower()
    assert d.sim.emulators["openai"].count == 0


def test_no_cache_asks_the_vendor_again(d: Dispatcher, nb: Notebook) -> None:
    if getattr(d, "cache", None) is None:
        pytest.skip("this dispatcher has no response cache yet (cache integration pending)")
    d.cache.clear()
    emu = d.sim.emulators["openai"]
    assert nb.cell("gpt -m 5 -t 0", "cache me").success
    again = nb.cell("gpt -m 5 -t 0", "cache me")
    assert again.success and emu.count == 1  # a deterministic call came from the cache
    assert nb.ns["_llm"].response.cached is True
    assert "· cached" in again.last_data["text/plain"].splitlines()[-1]
    assert nb.cell("gpt -m 5 -t 0 --no-cache", "cache me").success
    assert nb.ns["_llm"].response.cached is False
    assert emu.count == 2


# -- streaming, seen through the display publisher ------------------------------------------


@pytest.fixture(scope="module")
def slow_sim() -> Iterator[SimServer]:
    with serve(["openai"], time_scale=0.1) as sim:
        yield sim


@pytest.fixture
def slow(slow_sim: SimServer, nb: Notebook) -> Iterator[Dispatcher]:
    ep = Endpoint("openai", "openai", slow_sim.base_url("openai"), key=Secret(CANARY_KEY),
                  default_model="gpt-4.1", simulated=True)
    with Dispatcher([ep], dotenv=False) as d:
        llmdispatch_nb.set_default(d)
        yield d


def test_streaming_updates_the_output_several_times(slow: Dispatcher, nb: Notebook) -> None:
    nb.run("%config LLMMagics.throttle_s = 0.02")
    run = nb.cell("openai:gpt-4.1", "Tell me something long")
    assert run.success, run.stdout
    first, *rest = run.published
    assert first.display_id and not first.update
    assert all(p.update and p.display_id == first.display_id for p in rest)
    streamed = [p for p in rest[:-1] if "streaming…" in p.data["text/plain"]]
    assert len(streamed) >= 3, f"only {len(streamed)} live updates"
    final_text = nb.ns["_llm"].text
    texts = [p.data["text/plain"].rsplit("\n— ", 1)[0] for p in streamed]
    assert all(final_text.startswith(t) for t in texts)  # each update shows more of the answer
    assert len(set(texts)) == len(texts)
    # Throttled: fewer updates than tokens that arrived.
    assert len(streamed) < nb.ns["_llm"].response.usage.output_tokens
    assert META in rest[-1].metadata


def test_a_long_throttle_leaves_only_the_placeholder_and_the_answer(slow: Dispatcher,
                                                                     nb: Notebook) -> None:
    nb.run("%config LLMMagics.throttle_s = 60")
    run = nb.cell("openai:gpt-4.1", "Tell me something long")
    assert run.success
    assert len(run.published) == 2
    assert "waiting…" in run.published[0].data["text/plain"]
    assert run.published[1].update and META in run.published[1].metadata


def test_compare_streams_every_column_live(slow: Dispatcher, nb: Notebook) -> None:
    nb.run("%config LLMMagics.throttle_s = 0.02")
    run = nb.cell("openai:gpt-4.1 openai:gpt-4o -m 40", "Compare")
    assert run.success, run.stdout
    live = [p for p in run.published[1:-1] if "streaming" in p.data["text/plain"]]
    assert len(live) >= 2
    assert all("display:grid" in p.data["text/html"] for p in run.published)


# -- compare ------------------------------------------------------------------------------


def test_compare_with_one_vendor_failing(d: Dispatcher, nb: Notebook,
                                         records: list[CallRecord]) -> None:
    d.sim.emulators["anthropic"].faults.script("401")
    run = nb.cell("gpt claude gemini -m 10", "Which is best?")
    assert run.success, run.stdout  # the others finished; the failure is data
    no_traceback(run)
    result = nb.ns["_llm"]
    assert isinstance(result, CompareResult)
    assert [c.status for c in result] == ["done", "failed", "done"]
    assert {r.vendor for r in result.responses} == {"openai", "google"}
    (target, error), = result.errors
    assert target == "claude" and isinstance(error, AuthenticationError)
    html = run.last_data["text/html"]
    assert html.count("error: ") == 1 and "error: anthropic 401" in html
    assert "simulated" in html
    df = result.to_dataframe()
    assert list(df["status"]) == ["ok", "error", "ok"]
    assert df.loc[1, "error"].startswith("anthropic 401")
    # The failed attempt is in the ledger.
    assert any(r.vendor == "anthropic" and r.status == "error" for r in records)
    meta = run.published[-1].metadata[META]
    assert meta["kind"] == "compare" and len(meta["call_ids"]) == 2


def test_compare_with_a_vendor_that_has_no_key(demo: Dispatcher, nb: Notebook) -> None:
    # Real mode with keys for two vendors only: the third target's column says which
    # variable to set, and the other two still answer.
    eps = [ep for name, ep in demo.endpoints.items() if name in ("openai", "anthropic")]
    with Dispatcher(eps, dotenv=False, cache=False) as partial:
        llmdispatch_nb.set_default(partial)
        try:
            run = nb.cell("gpt claude gemini -m 10", "Which is best?")
        finally:
            llmdispatch_nb.set_default(demo)
    assert run.success, run.stdout
    no_traceback(run)
    result = nb.ns["_llm"]
    assert [c.status for c in result] == ["done", "done", "failed"]
    (target, error), = result.errors
    assert target == "gemini" and isinstance(error, MissingKeyError)
    assert "GEMINI_API_KEY" in run.last_data["text/html"]


def test_compare_with_a_misspelt_target_stops_before_sending(d: Dispatcher, nb: Notebook) -> None:
    run = nb.cell("gpt no-such-model", "hi")
    assert "unknown target" in one_error_line(run)
    assert d.sim.emulators["openai"].count == 0


def test_compare_every_target_failing_fails_the_cell(d: Dispatcher, nb: Notebook) -> None:
    d.sim.emulators["openai"].faults.script("401")
    d.sim.emulators["anthropic"].faults.script("401")
    run = nb.cell("gpt claude", "hi")
    line = one_error_line(run)
    assert "every target failed" in line
    html = run.last_data["text/html"]
    assert "error: openai 401" in html and "error: anthropic 401" in html  # each column says why


def test_repeat_shows_mean_and_spread(d: Dispatcher, nb: Notebook) -> None:
    run = nb.cell("gpt claude -n 3 -m 8", "Repeat me")
    assert run.success
    result = nb.ns["_llm"]
    assert d.sim.emulators["openai"].count == 3 and d.sim.emulators["anthropic"].count == 3
    assert [len(c.runs) for c in result] == [3, 3]
    html = run.last_data["text/html"]
    assert html.count("3/3 answered") == 2 and "±" in html
    summary = result.summary()
    assert list(summary["ok"]) == [3, 3] and summary["latency_sd"].notna().all()
    assert len(result.to_dataframe()) == 6


def test_repeat_with_one_target(d: Dispatcher, nb: Notebook) -> None:
    assert nb.cell("gpt -n 2 -m 5", "twice").success
    result = nb.ns["_llm"]
    assert isinstance(result, CompareResult) and len(result["gpt"].responses) == 2


# -- formats and results ------------------------------------------------------------------


def test_output_name_keeps_the_result(d: Dispatcher, nb: Notebook,
                                      records: list[CallRecord]) -> None:
    run = nb.cell("gpt -m 6 -o answer", "Keep me")
    assert run.success
    answer = nb.ns["answer"]
    assert answer is nb.ns["_llm"] and isinstance(answer, LLMResult)
    assert str(answer) == answer.text
    rec = ok_records(records)[-1]
    meta = run.published[-1].metadata[META]
    assert meta["call_ids"] == [rec.call_id] == answer.call_ids
    assert meta["vendor"] == "openai" and meta["model"] == "gpt-4o-mini-2024-07-18"
    assert meta["simulated"] is True
    df = answer.to_dataframe()
    assert df.loc[0, "call_id"] == rec.call_id and df.loc[0, "vendor"] == "openai"
    data, metadata = answer._repr_mimebundle_()
    assert {"text/plain", "text/markdown"} <= set(data) and META in metadata


def test_format_text_has_no_markdown(d: Dispatcher, nb: Notebook) -> None:
    run = nb.cell("gpt -f text -m 5", "plain")
    assert run.success
    assert "text/markdown" not in run.last_data and "text/plain" in run.last_data


def test_format_html(d: Dispatcher, nb: Notebook) -> None:
    run = nb.cell("gpt --format html -m 5", "html please")
    assert run.success and nb.ns["_llm"].text in run.last_data["text/html"]


def test_format_code_puts_the_code_in_a_new_cell(d: Dispatcher, nb: Notebook) -> None:
    nb.shell.rl_next_input = None
    run = nb.cell("gpt -f code", "Write code")
    assert run.success
    assert nb.shell.rl_next_input == fenced_code(nb.ns["_llm"].text)  # the fenced code only
    assert "the code is in a new cell below" in run.last_data["text/plain"]


def test_format_code_without_code_says_so_and_inserts_nothing(d: Dispatcher, nb: Notebook) -> None:
    nb.shell.rl_next_input = None
    run = nb.cell("gpt -f code -m 6", "Write code")  # cut before the fence opens
    assert run.success and fenced_code(nb.ns["_llm"].text) is None
    assert nb.shell.rl_next_input is None
    assert "no fenced code block, so no cell was inserted" in run.last_data["text/plain"]


def test_format_json_reports_an_invalid_answer(d: Dispatcher, nb: Notebook) -> None:
    run = nb.cell("gpt -f json -m 8", "Give JSON")
    assert run.success  # the call worked; the answer's shape is reported, not raised
    result = nb.ns["_llm"]
    assert result.json is None and result.json_error is not None
    assert "not valid JSON" in run.last_data["text/plain"]
    assert "application/json" not in run.last_data


def test_fenced_code_and_json_checks() -> None:
    answer = "Here:\n```python\nx = {'a': 1}\n```\nand\n~~~\nprint(x)\n~~~\n"
    assert fenced_code(answer) == "x = {'a': 1}\n\nprint(x)"
    assert fenced_code("no code here") is None
    assert check_json('```json\n{"a": [1, 2]}\n```').value == {"a": [1, 2]}
    bad = check_json('{"a": }')
    assert not bad.ok and "line 1, column 7" in (bad.error or "")


def test_result_repr_bundle_for_json_holds_the_parsed_value(d: Dispatcher) -> None:
    import dataclasses

    from llmdispatch_nb.notebook import Run

    # The emulators never answer in JSON: take a real response and give it JSON text.
    resp = dataclasses.replace(d.send("hi", "gpt", max_tokens=3), text='{"k": [1, 2]}')
    result = LLMResult("gpt", Run("gpt", 0, text=resp.text, response=resp), format="json")
    data, metadata = result._repr_mimebundle_()
    assert data["application/json"] == {"k": [1, 2]} and result.json_error is None
    assert json.loads(data["text/plain"].split("\n—")[0]) == {"k": [1, 2]}
    assert metadata[META]["call_ids"] == [resp.call_id]


# -- interpolation --------------------------------------------------------------------------


def test_interpolation_of_names_history_and_escapes(d: Dispatcher, nb: Notebook,
                                                    records: list[CallRecord]) -> None:
    nb.run("x = 42")
    nb.run("cfg = {'model': 'small', 'sizes': [3, 5]}")
    n_in = nb.shell.execution_count
    nb.run("y = 1 + 1")
    n_out = nb.shell.execution_count
    nb.run("6 * 7")
    body = ("x={x} size={cfg['sizes'][1]} in={In[N_IN]} out={Out[N_OUT]} lit={{x}}"
            .replace("N_IN", str(n_in)).replace("N_OUT", str(n_out)))
    run = nb.cell("gpt -m 5", body)
    assert run.success
    assert run.stderr == ""  # everything resolved: no warning
    assert ok_records(records)[-1].prompt.endswith(
        "x=42 size=5 in=y = 1 + 1 out=42 lit={x}")


def test_code_with_braces_and_dict_literals_survives(d: Dispatcher, nb: Notebook,
                                                     records: list[CallRecord]) -> None:
    code = ('def f(x):\n    return {"a": {"b": x}}\n\n'
            "cfg = {'k': [1, 2], 'n': {}}\n"
            'print(f"{x!r:>10}", {1, 2})\n'
            "int main() { return 0; }\n"
            "const o = { key: value };")
    run = nb.cell("gpt -m 5", "Review:\n" + code)
    assert run.success
    no_traceback(run)
    assert ok_records(records)[-1].prompt.endswith("Review:\n" + code)


def test_unknown_placeholder_is_sent_as_written_with_one_warning(d: Dispatcher, nb: Notebook,
                                                                 records: list[CallRecord]) -> None:
    run = nb.cell("gpt -m 5", "Explain f'{value}' and {missing[0]}")
    assert run.success
    assert ok_records(records)[-1].prompt.endswith("Explain f'{value}' and {missing[0]}")
    warnings = [ln for ln in run.stderr.splitlines() if ln.strip()]
    assert len(warnings) == 1 and "{value}" in warnings[0] and "{missing[0]}" in warnings[0]


def test_no_interpolate_and_no_var_expand_on_the_line(d: Dispatcher, nb: Notebook,
                                                      records: list[CallRecord]) -> None:
    nb.ns["x"] = 42
    nb.ns["role"] = "pirate"
    assert nb.cell("gpt -m 5 --no-interpolate", "raw {x}").success
    assert ok_records(records)[-1].prompt.endswith("raw {x}")
    # IPython would expand {1+1} and $role in a magic's line; ours keeps them.
    assert nb.cell('gpt -m 5 -s "{1+1} $role, {role}"', "hi").success
    assert ok_records(records)[-1].prompt.startswith("{1+1} $role, pirate")


def test_a_previous_result_interpolates_as_its_text(d: Dispatcher, nb: Notebook,
                                                    records: list[CallRecord]) -> None:
    assert nb.cell("gpt -m 4 -o answer", "first").success
    first = nb.ns["answer"].text
    assert nb.cell("claude -m 4", "Critique: {answer}").success
    assert ok_records(records)[-1].prompt.endswith("Critique: " + first)


# -- chats --------------------------------------------------------------------------------


def test_chat_sends_history_and_trims_it(d: Dispatcher, nb: Notebook,
                                         records: list[CallRecord]) -> None:
    assert nb.cell("claude --chat review -s 'You review code.' -m 6", "turn one").success
    first = nb.ns["_llm"].text
    assert nb.cell("--chat review -m 6", "turn two").success  # the chat's target is kept
    rec = ok_records(records)[-1]
    assert rec.vendor == "anthropic"
    assert rec.prompt.split("\n") == ["You review code.", "turn one", first, "turn two"]
    nb.run("%config LLMMagics.chat_max_turns = 1")
    assert nb.cell("--chat review -m 6", "turn three").success
    prompt = ok_records(records)[-1].prompt
    assert "turn one" not in prompt and "turn two" in prompt

    listing = nb.run("%llm chats")
    table = listing.published[-1].data["text/plain"]
    assert "review" in table and "anthropic" not in table and "claude" in table
    assert nb.run("%llm reset review").stdout.strip() == "chat review cleared"
    assert nb.cell("claude --chat review -m 6", "fresh").success
    assert ok_records(records)[-1].prompt.strip() == "fresh"  # no history, no system


def test_a_failed_turn_is_not_added_to_the_chat(d: Dispatcher, nb: Notebook) -> None:
    assert nb.cell("gpt --chat c -m 4", "one").success
    d.sim.emulators["openai"].faults.script("401")
    one_error_line(nb.cell("--chat c -m 4", "two"))
    assert len(nb.magics.chats.get("c").turns) == 1


# -- errors: one line, no traceback, the kernel goes on ---------------------------------------


@pytest.mark.parametrize(("line", "body", "expected"), [
    ("nosuch:model", "hi", "unknown target 'nosuch:model'"),
    ("bogus-model-name", "hi", "unknown target 'bogus-model-name'"),
    ("-t 5", "hi", "temperature must be between 0 and 2"),
    ("--top-p 2", "hi", "top_p must be in (0, 1]"),
    ("-n 0", "hi", "argument -n: '0' must be 1 or more"),
    ("-m lots", "hi", "'lots' is not a whole number"),
    ("--bogus", "hi", "unrecognized arguments: --bogus"),
    ("-f yaml", "hi", "invalid choice: 'yaml'"),
    ("-o 1abc", "hi", "give a Python variable name"),
    ("--max-cost -1", "hi", "--max-cost must be 0 or more"),
    ("", "   \n", "the prompt is empty"),
    ('-s "unclosed', "hi", "check its quotes"),
    ("gpt claude --chat c", "hi", "--chat keeps one conversation"),
    ("--chat c -n 2", "hi", "--chat and -n cannot be combined"),
    ("--strategy nope", "hi", "unknown strategy"),
    ("--fallback nosuch:x", "hi", "unknown target 'nosuch:x'"),
])
def test_user_mistakes_are_one_line(d: Dispatcher, nb: Notebook, line: str, body: str,
                                    expected: str) -> None:
    run = nb.cell(line, body)
    assert expected in one_error_line(run)
    assert d.sim.total_requests() == 0  # refused before anything was sent
    assert nb.run("1 + 1").success  # the shell goes on


def test_vendor_error_is_one_line_and_in_the_ledger(d: Dispatcher, nb: Notebook,
                                                    records: list[CallRecord]) -> None:
    d.sim.emulators["openai"].faults.script("401")
    run = nb.cell("gpt -m 5", "hi")
    line = one_error_line(run)
    assert "openai 401" in line and "check that vendor's key" in line
    assert "_llm" not in nb.ns
    assert [r.status for r in records] == ["error"]
    assert records[0].error_class == "AuthenticationError"


def test_midstream_failure_keeps_the_partial_answer(d: Dispatcher, nb: Notebook) -> None:
    from llmdispatch_nb.sim import Fault

    d.sim.emulators["openai"].faults.script(Fault("midstream-disconnect", after_tokens=4))
    run = nb.cell("gpt", "hi")
    line = one_error_line(run)
    assert "partial answer is kept above" in line
    kept = run.last_data
    assert "stopped early" in kept["text/markdown"] and kept["text/plain"].startswith("[simulated")


def test_missing_key_names_the_variable(openai_sim: SimServer, nb: Notebook) -> None:
    ep = Endpoint("openai", "openai", openai_sim.base_url("openai"), key=Secret(CANARY_KEY),
                  default_model="gpt-4o-mini", simulated=True)
    with Dispatcher([ep], dotenv=False) as only_openai:
        llmdispatch_nb.set_default(only_openai)
        line = one_error_line(nb.cell("claude", "hi"))
    assert "no API key for anthropic: set ANTHROPIC_API_KEY" in line


def test_a_rejected_key_never_shows(nb: Notebook) -> None:
    with serve(["openai"], time_scale=0, api_key="the-right-key") as sim:
        ep = Endpoint("openai", "openai", sim.base_url("openai"), key=Secret(CANARY_KEY),
                      default_model="gpt-4o-mini")
        with Dispatcher([ep], dotenv=False) as strict:
            llmdispatch_nb.set_default(strict)
            run = nb.cell("gpt", "hi")
            line = one_error_line(run)
            vendors = nb.run("%llm vendors")
    assert "openai 401" in line
    assert_no_canary(run.stdout, run.stderr, [p.data for p in run.published],
                     vendors.stdout, [p.data for p in vendors.published])
    assert "| set |" in vendors.published[-1].data["text/markdown"]


def test_errors_can_be_shown_without_failing_the_cell(d: Dispatcher, nb: Notebook) -> None:
    nb.run("%config LLMMagics.fail_cell_on_error = False")
    d.sim.emulators["openai"].faults.script("401")
    run = nb.cell("gpt", "hi")
    assert run.success and run.error_lines == []
    assert run.last_data["text/plain"].startswith("llm error: openai 401")
    run = nb.cell("nosuch:model", "hi")
    assert run.success and "unknown target" in run.last_data["text/html"]


# -- interrupting ---------------------------------------------------------------------------


def test_an_interrupt_cancels_every_running_call(slow: Dispatcher) -> None:
    """Ctrl-C arrives in the kernel thread, which is where `on_update` runs."""
    from llmdispatch_nb.notebook import Column, Runner

    seen: list[tuple[list[str], bool]] = []

    def on_update(columns: list[Column], final: bool) -> None:
        seen.append(([c.status for c in columns], final))
        if not final and any(c.current and c.current.text for c in columns):
            raise KeyboardInterrupt

    targets = ["openai:gpt-4.1", "openai:gpt-4o"]
    runner = Runner(slow, "Tell me something long", targets, {}, labels=targets, repeat=3,
                    throttle_s=0.0)
    with pytest.raises(KeyboardInterrupt):
        runner.run(on_update)
    assert seen[-1][1] is True  # the display got its last word
    for column in runner.columns:
        assert len(column.runs) < 3 and column.runs  # the later repeats never started
        assert all(run.done for run in column.runs)
        assert any(isinstance(run.error, BaseException) and not run.ok for run in column.runs)


def test_a_chat_whose_first_turn_fails_is_not_kept(d: Dispatcher, nb: Notebook) -> None:
    one_error_line(nb.cell("nosuch:model --chat lost", "one"))
    d.sim.emulators["openai"].faults.script("401")
    one_error_line(nb.cell("gpt --chat lost -s 'sys'", "one"))
    assert "lost" not in nb.magics.chats
