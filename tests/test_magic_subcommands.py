"""`%llm SUBCOMMAND` in a real InteractiveShell against the emulators: every subcommand,
its output, and its one-line errors."""

from __future__ import annotations

import importlib.util

import pytest

import llmdispatch_nb
from llmdispatch_nb import Dispatcher, Endpoint, Secret
from llmdispatch_nb.resilience import Budget
from llmdispatch_nb.sim import SimServer, serve

from .conftest import CANARY_KEY, assert_no_canary
from .test_magic_support import Notebook, one_error_line

pytest_plugins = ("tests.test_magic_support",)  # its fixtures: shell, nb, demo, d, records


def _analysis_or_skip() -> None:
    if importlib.util.find_spec("llmdispatch_nb.analysis") is None:
        pytest.skip("llmdispatch_nb.analysis is not in this build yet (ledger analysis pending)")


def table(nb: Notebook, line: str) -> str:
    run = nb.run(line)
    assert run.success, run.stdout + run.stderr
    return run.published[-1].data["text/plain"]


# -- vendors and models --------------------------------------------------------------------


def test_vendors_in_demo_mode(d: Dispatcher, nb: Notebook) -> None:
    text = table(nb, "%llm vendors")
    assert text.startswith("demo mode: every vendor is emulated")
    rows = {line.split()[0]: line for line in text.splitlines()[3:]}
    for vendor in ("openai", "anthropic", "google", "azure"):
        assert "demo key" in rows[vendor] and "simulated" in rows[vendor]
    assert "not configured" in rows["ollama"] and "OLLAMA_BASE_URL" in rows["ollama"]


def test_vendors_with_real_keys_never_show_them(openai_sim: SimServer, nb: Notebook) -> None:
    eps = [Endpoint("openai", "openai", openai_sim.base_url("openai"), key=Secret(CANARY_KEY),
                    default_model="gpt-4o-mini"),
           Endpoint("local", "compat", openai_sim.base_url("openai"), key=None)]
    with Dispatcher(eps, dotenv=False) as real:
        llmdispatch_nb.set_default(real)
        run = nb.run("%llm vendors")
    data = run.published[-1].data
    assert_no_canary(run.stdout, data)
    assert data["text/plain"].startswith("vendors in use (keys are never shown)")
    md = data["text/markdown"]
    assert "| openai | openai | set | real | gpt-4o-mini |" in md
    assert "| local | compat | not set | real |" in md
    assert "| anthropic | anthropic | not set | not configured |  | set ANTHROPIC_API_KEY |" in md


def test_models_of_every_vendor_and_of_one(d: Dispatcher, nb: Notebook) -> None:
    every = table(nb, "%llm models")
    for model in ("gpt-4o-mini", "claude-haiku-4-5", "gemini-2.5-flash"):
        assert model in every
    one = table(nb, "%llm models gemini")  # a vendor alias reads as the vendor
    assert "gemini-2.5-pro" in one and "gpt-4o" not in one
    assert "default" in [line.split()[-1] for line in one.splitlines() if "gemini-2.5-flash" in line]


def test_models_of_an_unknown_vendor(d: Dispatcher, nb: Notebook) -> None:
    line = one_error_line(nb.run("%llm models nosuch"))
    assert "no vendor 'nosuch' is configured" in line and "openai" in line


def test_models_shows_a_vendor_error_in_its_row(nb: Notebook) -> None:
    with serve(["openai", "anthropic"], time_scale=0, api_key="the-right-key") as sim:
        eps = [Endpoint("openai", "openai", sim.base_url("openai"), key=Secret(CANARY_KEY)),
               Endpoint("anthropic", "anthropic", sim.base_url("anthropic"),
                        key=Secret("the-right-key"))]
        with Dispatcher(eps, dotenv=False) as strict:
            llmdispatch_nb.set_default(strict)
            run = nb.run("%llm models")
    assert run.success  # one vendor's failure is a row, not the cell's
    text = run.published[-1].data["text/plain"]
    assert "error: openai 401" in text and "claude-haiku-4-5" in text
    assert_no_canary(text)


# -- aliases -------------------------------------------------------------------------------


def test_alias_add_use_list_and_remove(d: Dispatcher, nb: Notebook) -> None:
    run = nb.run("%llm alias fast openai:gpt-4.1-nano")
    assert run.stdout.strip() == "alias fast -> openai:gpt-4.1-nano"
    assert nb.cell("fast -m 4", "hi").success
    assert nb.ns["_llm"].response.model_requested == "gpt-4.1-nano"
    listing = table(nb, "%llm alias")
    assert "fast" in listing and "openai:gpt-4.1-nano" in listing and "claude" in listing
    assert nb.run("%llm unalias fast").stdout.strip() == "alias fast removed"
    assert "fast" not in d.aliases
    assert "unknown target 'fast'" in one_error_line(nb.cell("fast", "hi"))


def test_alias_errors(d: Dispatcher, nb: Notebook) -> None:
    assert "unknown target 'nosuch:model'" in one_error_line(nb.run("%llm alias x nosuch:model"))
    assert "x" not in d.aliases  # a bad alias is not kept
    assert "cannot contain ':'" in one_error_line(nb.run("%llm alias a:b gpt"))
    assert "is a vendor's name" in one_error_line(nb.run("%llm alias openai claude"))
    assert "usage: %llm alias NAME TARGET" in one_error_line(nb.run("%llm alias onlyname"))
    assert "no alias 'nope'" in one_error_line(nb.run("%llm unalias nope"))
    assert "usage: %llm unalias NAME" in one_error_line(nb.run("%llm unalias"))


def test_alias_loop_is_refused_and_the_old_alias_kept(d: Dispatcher, nb: Notebook) -> None:
    assert nb.run("%llm alias a1 gpt").success
    assert nb.run("%llm alias a2 a1").success
    try:
        assert "loop" in one_error_line(nb.run("%llm alias a1 a2"))
        assert d.aliases["a1"] == "gpt"
    finally:
        d.aliases.pop("a1", None)
        d.aliases.pop("a2", None)


# -- the ledger ----------------------------------------------------------------------------


def test_stats_calls_and_plots(d: Dispatcher, nb: Notebook) -> None:
    _analysis_or_skip()
    assert nb.cell("gpt claude -m 5", "for the ledger").success
    stats = nb.run("%llm stats")
    assert stats.success and stats.published
    calls = nb.run("%llm calls 1")
    assert calls.success
    shown = calls.published[-1].data
    assert "text/html" in shown or "text/plain" in shown
    for kind in ("latency", "ttft", "cost", "tradeoff"):
        run = nb.run(f"%llm plot {kind}")
        assert run.success, run.stdout + run.stderr
        assert run.published, f"plot {kind} showed nothing"


def test_ledger_subcommand_errors(d: Dispatcher, nb: Notebook) -> None:
    assert "N must be a whole number" in one_error_line(nb.run("%llm calls x"))
    assert "N must be 1 or more" in one_error_line(nb.run("%llm calls 0"))
    assert "choose one of latency, ttft, cost, tradeoff" in one_error_line(
        nb.run("%llm plot pie"))
    assert "usage: %llm plot latency|ttft|cost|tradeoff" in one_error_line(nb.run("%llm plot"))
    assert "usage: %llm stats" in one_error_line(nb.run("%llm stats extra"))


def test_ledger_subcommands_without_analysis_say_so(d: Dispatcher, nb: Notebook) -> None:
    if importlib.util.find_spec("llmdispatch_nb.analysis") is not None:
        pytest.skip("the analysis is installed; test_stats_calls_and_plots covers it")
    for line in ("%llm calls", "%llm plot latency"):
        assert "llmdispatch_nb.analysis" in one_error_line(nb.run(line))


# -- budget and cache ----------------------------------------------------------------------


def test_budget_show_and_set(d: Dispatcher, nb: Notebook) -> None:
    if getattr(d, "budget", None) is None:
        assert "a spending budget is not available" in one_error_line(nb.run("%llm budget"))
        pytest.skip("this dispatcher has no .budget yet (resilience integration pending)")
    before = d.budget.limit_usd
    try:
        text = table(nb, "%llm budget 2.5")
        assert d.budget.limit_usd == 2.5 and "$2.5000" in text
        assert "all calls" in table(nb, "%llm budget")
        table(nb, "%llm budget none")
        assert d.budget.limit_usd is None
    finally:
        d.budget.set_limit(before)
    assert "give US dollars" in one_error_line(nb.run("%llm budget lots"))
    assert "0 or more" in one_error_line(nb.run("%llm budget -1"))


def test_budget_after_many_tagged_cells_shows_the_limited_and_the_biggest(
        d: Dispatcher, nb: Notebook) -> None:
    before = d.budget
    d.budget = Budget(per_tag={"team-a": 1.0})
    try:
        for i in range(30):  # thirty cells' tags, cell i spending (i + 1) cents
            d.budget.reserve(0.5, [f"cell-{i}"]).settle((i + 1) / 100)
        d.budget.reserve(0.25, ["team-a"]).settle(0.25)
        hold = d.budget.reserve(0.125, ["cell-0"])  # a call in flight
        rows = table(nb, "%llm budget").splitlines()
        hold.release()
    finally:
        d.budget = before
    names = [r.split("  ")[0].strip() for r in rows[2:]]
    # all calls, the limited tag, the nine biggest spenders, then one row for the rest
    assert names[:2] == ["all calls", "tag team-a"]
    assert names[2:11] == [f"tag cell-{i}" for i in range(29, 20, -1)]
    assert names[11:] == ["21 more tags, no limit"]
    rest = rows[-1].split()
    assert rest[-3:] == ["$2.3100", "$0.1250", "–"]  # cents 1..21 settled; cell-0's hold


def test_cache_info_and_clear(d: Dispatcher, nb: Notebook) -> None:
    if getattr(d, "cache", None) is None:
        assert "the response cache is not available" in one_error_line(nb.run("%llm cache info"))
        pytest.skip("this dispatcher has no .cache yet (cache integration pending)")
    assert nb.run("%llm cache info").published
    assert nb.run("%llm cache").published  # info is the default
    assert "response cache cleared" in nb.run("%llm cache clear").stdout
    assert "use %llm cache info or %llm cache clear" in one_error_line(nb.run("%llm cache drop"))


# -- the magic itself ----------------------------------------------------------------------


def test_config_lists_settings_and_the_dispatcher(d: Dispatcher, nb: Notebook) -> None:
    nb.run("%config LLMMagics.throttle_s = 0.25")
    text = table(nb, "%llm config")
    assert "LLMMagics.throttle_s" in text and "0.25" in text
    assert "LLMMagics.default_target" in text and "LLMMagics.chat_max_turns" in text
    assert "demo (emulated vendors)" in text and "openai:gpt-4o-mini" in text


def test_chats_and_reset(d: Dispatcher, nb: Notebook) -> None:
    assert nb.run("%llm chats").stdout.startswith("no chats yet")
    assert nb.cell("gpt --chat a -m 4", "one").success
    assert nb.cell("claude --chat b -m 4", "two").success
    text = table(nb, "%llm chats")
    assert [line.split()[0] for line in text.splitlines()[2:]] == ["a", "b"]
    assert "no chat 'zzz'; chats: a, b" in one_error_line(nb.run("%llm reset zzz"))
    assert nb.run("%llm reset a").stdout.strip() == "chat a cleared"
    assert nb.run("%llm reset").stdout.strip() == "1 chat(s) cleared"
    assert nb.run("%llm reset").stdout.strip() == "no chats to clear"


def test_panel(d: Dispatcher, nb: Notebook) -> None:
    run = nb.run("%llm panel")
    if importlib.util.find_spec("llmdispatch_nb.notebook._panel") is None:
        assert "the widget panel is not in this build yet" in one_error_line(run)
        return
    assert run.success, run.stdout + run.stderr
    assert run.published  # the panel's widgets were displayed


def test_unknown_subcommand_and_empty_line(d: Dispatcher, nb: Notebook) -> None:
    line = one_error_line(nb.run("%llm frobnicate"))
    assert "unknown subcommand 'frobnicate'" in line and "%llm TARGET -- your prompt" in line
    assert "Subcommands:" in nb.run("%llm").stdout
