"""The model catalogue: lookups of real models across vendors, overrides (in one call and in
config), unknown models, and that `import llmdispatch_nb` does not read the data."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmdispatch_nb import catalogue
from llmdispatch_nb.catalogue import (
    DEFAULT_CONTEXT_WINDOW,
    DEFAULT_MAX_OUTPUT_TOKENS,
    Catalogue,
    ModelInfo,
)

# (vendor, model, context window, output cap, reasoning) as the vendors publish them.
REAL = [
    ("openai", "gpt-4o", 128_000, 16_384, False),
    ("openai", "gpt-4o-mini", 128_000, 16_384, False),
    ("openai", "gpt-4.1", 1_047_576, 32_768, False),
    ("openai", "gpt-4.1-mini", 1_047_576, 32_768, False),
    ("openai", "gpt-4.1-nano", 1_047_576, 32_768, False),
    ("openai", "o3", 200_000, 100_000, True),
    ("openai", "o4-mini", 200_000, 100_000, True),
    ("openai", "gpt-5", 400_000, 128_000, True),
    ("openai", "gpt-5-mini", 400_000, 128_000, True),
    ("openai", "gpt-5-nano", 400_000, 128_000, True),
    ("anthropic", "claude-haiku-4-5", 200_000, 64_000, True),
    ("anthropic", "claude-sonnet-4-5", 200_000, 64_000, True),
    ("anthropic", "claude-opus-4-1", 200_000, 32_000, True),
    ("anthropic", "claude-3-5-haiku-20241022", 200_000, 8_192, False),
    ("google", "gemini-2.5-flash", 1_048_576, 65_536, True),
    ("google", "gemini-2.5-pro", 1_048_576, 65_536, True),
    ("google", "gemini-2.0-flash", 1_048_576, 8_192, False),
    ("groq", "llama-3.3-70b-versatile", 131_072, 32_768, False),
    ("deepseek", "deepseek-chat", None, None, None),
    ("mistral", "mistral-large-latest", None, None, None),
    ("xai", "grok-4.3", None, None, None),
    ("openrouter", "openai/gpt-4o-mini", 128_000, 16_384, False),
    ("openai", "gpt-5.5", 1_050_000, 128_000, True),
    ("openai", "o3-mini", 200_000, 100_000, True),
    ("openai", "gpt-4o-2024-08-06", 128_000, 16_384, False),
    ("azure", "gpt-4.1-mini", 1_047_576, 32_768, False),
    ("anthropic", "claude-opus-4-6", 1_000_000, 128_000, True),
    ("anthropic", "claude-opus-4-7", 1_000_000, 128_000, True),
    ("anthropic", "claude-sonnet-4-6", 1_000_000, 64_000, True),
    ("google", "gemini-3-pro-preview", 1_048_576, 65_536, True),
    ("google", "gemini-3.5-flash", 1_048_576, 65_536, True),
    ("google", "gemini-2.5-flash-lite", 1_048_576, 65_536, True),
    ("deepseek", "deepseek-reasoner", None, None, None),
    ("cerebras", "gpt-oss-120b", None, None, None),
    ("togetherai", "meta-llama/Llama-3.3-70B-Instruct-Turbo", None, None, None),
    ("fireworks-ai", "accounts/fireworks/models/deepseek-v3p1", None, None, None),
    ("perplexity", "sonar", None, None, None),
    ("groq", "openai/gpt-oss-120b", None, None, None),
]


@pytest.mark.parametrize(("vendor", "model", "window", "cap", "reasoning"), REAL)
def test_real_models_are_known_with_their_published_limits(vendor: str, model: str,
                                                          window: int | None, cap: int | None,
                                                          reasoning: bool | None) -> None:
    info = catalogue.lookup(vendor, model)
    assert info.known and info.source == "models.dev"
    assert info.vendor == vendor and info.model == model
    if window is not None:
        assert (info.context_window, info.max_output_tokens, info.reasoning) == (window, cap, reasoning)
    assert info.context_window >= info.max_output_tokens > 0
    assert info.release_date and info.release_date[:2] == "20"
    assert "text" in info.input_modalities


def test_parameter_facts_reasoning_models_and_the_one_of_rule() -> None:
    gpt5 = catalogue.lookup("openai", "gpt-5")
    assert (gpt5.temperature, gpt5.top_p, gpt5.tools, gpt5.structured_output) == (False, False, True, True)
    mini = catalogue.lookup("openai", "gpt-4o-mini")
    assert (mini.temperature, mini.top_p, mini.sampling_one_of, mini.images) == (True, True, False, True)
    sonnet = catalogue.lookup("anthropic", "claude-sonnet-4-5")
    assert (sonnet.temperature, sonnet.sampling_one_of) == (True, True)
    old = catalogue.lookup("anthropic", "claude-3-5-haiku-20241022")
    assert old.sampling_one_of is False
    opus47 = catalogue.lookup("anthropic", "claude-opus-4-7")
    assert (opus47.temperature, opus47.top_p) == (False, False)


def test_dated_prefixed_and_azure_names_find_their_model() -> None:
    assert catalogue.lookup("anthropic", "claude-sonnet-4-5-20250929").max_output_tokens == 64_000
    assert catalogue.lookup("google", "models/gemini-2.5-flash").context_window == 1_048_576
    assert catalogue.lookup("gemini", "gemini-2.5-flash").known  # our alias for google
    assert catalogue.lookup("azure", "gpt-4o-mini").max_output_tokens == 16_384


def test_vendors_list_their_models_newest_first_including_the_newest_releases() -> None:
    openai = [m.model for m in catalogue.models("openai")]
    assert {"gpt-5", "gpt-4o-mini", "o4-mini"} <= set(openai)
    assert any(m.startswith("gpt-5.") for m in openai)
    anthropic = [m.model for m in catalogue.models("anthropic")]
    assert {"claude-opus-4-6", "claude-opus-4-7", "claude-sonnet-4-6"} <= set(anthropic)
    google = [m.model for m in catalogue.models("google")]
    assert any(m.startswith("gemini-3") for m in google)
    dates = [m.release_date or "" for m in catalogue.models("anthropic")]
    assert dates == sorted(dates, reverse=True)
    assert "llama3.2" not in openai and "qwen3:8b" not in openai


def test_unknown_model_gets_conservative_defaults_and_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    cat = Catalogue()
    with caplog.at_level(logging.WARNING, logger="llmdispatch_nb.catalogue"):
        first = cat.lookup("openai", "gpt-from-the-future")
        again = cat.lookup("openai", "gpt-from-the-future")
    assert first == again and not first.known and first.source == "default"
    assert (first.context_window, first.max_output_tokens) == (DEFAULT_CONTEXT_WINDOW,
                                                              DEFAULT_MAX_OUTPUT_TOKENS)
    assert (first.reasoning, first.tools, first.temperature) == (False, False, True)
    warned = [r.getMessage() for r in caplog.records if "gpt-from-the-future" in r.getMessage()]
    assert len(warned) == 1
    assert "catalogue.add('openai', 'gpt-from-the-future'" in warned[0]


def test_override_in_one_call_merges_over_the_data_and_can_be_removed() -> None:
    cat = Catalogue()
    before = cat.lookup("openai", "gpt-4o")
    after = cat.override("openai", "gpt-4o", max_output_tokens=4096, team="blue")
    assert after.max_output_tokens == 4096 and after.source == "override"
    assert after.context_window == before.context_window  # untouched fields stay
    assert after.get("team") == "blue"
    assert cat.lookup("openai", "gpt-4o").max_output_tokens == 4096
    cat.remove("openai", "gpt-4o")
    assert cat.lookup("openai", "gpt-4o") == before


def test_a_local_model_added_by_hand_and_a_vendor_wide_entry() -> None:
    cat = Catalogue()
    q = cat.add("vllm", "Qwen/Qwen3-8B", context_window=40_960, max_output_tokens=8192,
                reasoning=True, input_modalities=["text"])
    assert isinstance(q, ModelInfo) and q.known and q.reasoning and q.input_modalities == ("text",)
    assert [m.model for m in cat.models("vllm")] == ["Qwen/Qwen3-8B"]
    cat.add("vllm", "*", context_window=8192)
    assert cat.lookup("vllm", "anything").context_window == 8192
    assert cat.lookup("vllm", "Qwen/Qwen3-8B").context_window == 40_960  # its own entry wins
    with pytest.raises(ValueError, match="context_window"):
        cat.add("vllm", "bad", context_window=0)


def test_overrides_from_a_config_file(tmp_path: Path) -> None:
    path = tmp_path / "models.json"
    path.write_text(json.dumps({"ollama:llama3.2": {"context_window": 131_072, "tools": True},
                                "openai:gpt-4o": {"max_output_tokens": 2048}}))
    cat = Catalogue()
    cat.configure({"LLMDISPATCH_CATALOGUE": str(path)})
    assert cat.lookup("ollama", "llama3.2").context_window == 131_072
    assert cat.lookup("ollama", "llama3.2").tools is True
    assert cat.lookup("openai", "gpt-4o").max_output_tokens == 2048
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"no-colon": {}}))
    with pytest.raises(ValueError, match="vendor:model"):
        cat.load_overrides(bad)


def test_a_fresher_models_dev_file_replaces_the_bundled_data(tmp_path: Path) -> None:
    fresh = {"openai": {"id": "openai", "name": "OpenAI", "env": ["OPENAI_API_KEY"], "npm": "@ai-sdk/openai",
                        "doc": "", "models": {"gpt-9": {
                            "id": "gpt-9", "name": "GPT-9", "attachment": False, "reasoning": True,
                            "tool_call": True, "temperature": False, "release_date": "2027-01-01",
                            "last_updated": "2027-01-02", "open_weights": False,
                            "modalities": {"input": ["text"], "output": ["text"]},
                            "limit": {"context": 2_000_000, "output": 256_000}}}}}
    path = tmp_path / "api.json"
    path.write_text(json.dumps(fresh))
    cat = Catalogue()
    cat.use_data(path)
    assert cat.lookup("openai", "gpt-9").max_output_tokens == 256_000
    assert cat.info()["data_date"] == "2027-01-02"
    assert not cat.knows("openai", "gpt-4o")  # the new file is the whole data


def test_info_names_the_source_and_its_date() -> None:
    meta = catalogue.info()
    assert meta["source"] == "models.dev" and meta["version"]
    assert meta["data_date"] >= "2026-05-01"
    assert meta["providers"] > 100 and meta["models"] > 2000


def test_importing_the_package_does_not_read_the_catalogue() -> None:
    code = ("import sys, llmdispatch_nb as ld; ld.catalogue; "
            "print('models_dev' in sys.modules, ld.catalogue.CATALOGUE._data is None)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]


# -- the router reads windows from the catalogue; call-level fallbacks are checked too ------


@pytest.fixture
def small_haiku() -> Iterator[None]:
    """Claude Haiku 4.5 with a 1,000-token window, for one test (a user override)."""
    catalogue.add("anthropic", "claude-haiku-4-5", context_window=1_000)
    try:
        yield
    finally:
        catalogue.remove("anthropic", "claude-haiku-4-5")


def test_call_level_fallbacks_too_small_for_the_prompt_are_skipped_before_sending(
        small_haiku: None) -> None:
    from llmdispatch_nb import Dispatcher
    from llmdispatch_nb.errors import ContextLengthError
    from llmdispatch_nb.resilience import RetryPolicy

    from ._resilience_support import dispatcher, start

    long_prompt = "word " * 2_000  # ~2,500 tokens by the routing estimate
    with start() as sim, dispatcher(sim, retry=RetryPolicy.none()) as d:
        assert isinstance(d, Dispatcher)
        plan = d.plan(d.request(long_prompt, "openai:gpt-4o-mini"),
                      fallbacks=["anthropic:claude-haiku-4-5", "google:gemini-2.5-flash"])
        assert [c.key for c in plan.candidates] == ["openai:gpt-4o-mini", "google:gemini-2.5-flash"]
        assert [(c.key, why.split(" <")[0]) for c, why in plan.skipped] == [
            ("anthropic:claude-haiku-4-5", "context window 1000")]
        sim.emulators["openai"].faults.script("context-length")
        with pytest.raises(ContextLengthError):
            d.send(long_prompt, "openai:gpt-4o-mini", fallbacks=["anthropic:claude-haiku-4-5"])
        assert sim.emulators["anthropic"].requests.chat() == []  # never sent
        short = d.send("hi", "openai:gpt-4o-mini", fallbacks=["anthropic:claude-haiku-4-5"],
                       max_tokens=5)
        assert short.vendor == "openai"


def test_the_routers_windows_come_from_the_catalogue() -> None:
    from llmdispatch_nb.routing import Candidate, ContextWindows
    from llmdispatch_nb.vendors import Endpoint

    windows = ContextWindows()
    openai = Endpoint("openai", "openai", "https://api.openai.com/v1")
    assert windows(Candidate(openai, "gpt-5")) == 400_000
    assert windows(Candidate(openai, "gpt-5.5")) == 1_050_000
    anthropic = Endpoint("anthropic", "anthropic", "https://api.anthropic.com")
    assert windows(Candidate(anthropic, "claude-opus-4-7")) == 1_000_000
    groq = Endpoint("groq", "compat", "https://api.groq.com/openai/v1")
    assert windows(Candidate(groq, "llama-3.3-70b-versatile")) == 131_072


# -- %llm models: the catalogue's columns as a DataFrame -------------------------------------

pytest_plugins = ("tests.test_magic_support",)  # its fixtures: shell, nb, demo, d


def test_llm_models_shows_the_catalogue_columns_and_keeps_the_frame(d: Any, nb: Any) -> None:
    run = nb.run("%llm models openai -o openai_models")
    assert run.success, run.stdout + run.stderr
    frame = nb.shell.user_ns["openai_models"]
    assert list(frame.columns) == ["vendor", "model", "context", "output cap", "reasoning", "tools",
                                   "structured output", "images", "price in /1M",
                                   "price out /1M", "released", "note"]
    rows = frame.set_index("model")
    assert rows.loc["gpt-5", "context"] == 400_000 and rows.loc["gpt-5", "reasoning"] == True  # noqa: E712
    assert rows.loc["gpt-4o-mini", "output cap"] == 16_384
    assert rows.loc["gpt-4o-mini", "price in /1M"] == pytest.approx(0.15)
    assert rows.loc["gpt-4o-mini", "price out /1M"] == pytest.approx(0.60)
    assert "default" in rows.loc["gpt-4o-mini", "note"]
    assert set(frame["vendor"]) == {"openai"} and "llama3.2" not in set(frame["model"])
    cheapest = frame.sort_values("price out /1M").iloc[0]["model"]  # sortable as any frame
    assert rows.loc[cheapest, "price out /1M"] == frame["price out /1M"].min()
    text = run.published[-1].data["text/plain"]
    assert "gpt-5.5" in text and "1,050,000" in text  # every column, unabridged
    everyone = nb.run("%llm models")
    assert everyone.success
    shown = everyone.published[-1].data["text/plain"]
    assert "claude-opus-4-7" in shown and "gemini-3" in shown
    assert "usage: %llm models" in nb.run("%llm models openai -o").stdout + \
        nb.run("%llm models openai -o").stderr
