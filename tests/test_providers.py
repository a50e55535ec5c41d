"""Providers by their own key: an OpenAI-compatible provider of the catalogue becomes a vendor
when its key variable is set, reached over loopback here with its base URL overridden;
extra settings are named; demo mode emulates providers through the OpenAI-wire emulator."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from llmdispatch_nb import Dispatcher, _config
from llmdispatch_nb.catalogue import Catalogue
from llmdispatch_nb.catalogue import _providers as providers
from llmdispatch_nb.errors import ConfigurationError, MissingKeyError
from llmdispatch_nb.ledger import MemoryLedger
from llmdispatch_nb.sim import SimServer, serve

from .conftest import CANARY_KEY, assert_no_canary

MODEL = "llama-3.3-70b-versatile"


@pytest.fixture(scope="module")
def keyed_sim() -> Iterator[SimServer]:
    """The OpenAI-wire emulator, wanting the canary key (as Groq would want its own)."""
    with serve(["openai"], time_scale=0, api_key=CANARY_KEY) as sim:
        yield sim


def provider_url(sim: SimServer, provider: str) -> str:
    return sim.base_url("openai").removesuffix("/v1") + f"/providers/{provider}/v1"


def test_a_provider_configured_from_its_key_variable_alone(keyed_sim: SimServer) -> None:
    env = {"GROQ_API_KEY": CANARY_KEY, "GROQ_BASE_URL": provider_url(keyed_sim, "groq")}
    with Dispatcher(env=env, dotenv=False, ledger=MemoryLedger()) as d:
        assert not d.demo and list(d.endpoints) == ["groq"]
        ep = d.endpoints["groq"]
        assert (ep.kind, ep.simulated, ep.priced) == ("compat", False, True)
        assert MODEL in ep.models and ep.default_model in ep.models
        r = d.send("Name three rivers.", f"groq:{MODEL}", max_tokens=40)
        assert r.vendor == "groq" and r.model == MODEL and r.text
        assert r.usage.output_tokens > 0
        assert r.cost.source == "genai-prices" and r.cost.usd is not None and r.cost.usd > 0
        assert MODEL in d.models("groq")
        assert_no_canary(repr(ep), repr(r), repr(d.endpoints))


def test_each_provider_gets_its_base_url_models_and_default() -> None:
    env = {"GROQ_API_KEY": "gsk-1", "DEEPSEEK_API_KEY": "ds-1", "OPENROUTER_API_KEY": "or-1",
           "MISTRAL_API_KEY": "m-1", "XAI_API_KEY": "x-1"}
    eps = {ep.name: ep for ep in _config.endpoints_from_env(env)}
    assert set(eps) == {"groq", "deepseek", "openrouter", "mistral", "xai"}
    assert eps["groq"].base_url == "https://api.groq.com/openai/v1"
    assert eps["deepseek"].base_url == "https://api.deepseek.com"
    assert eps["openrouter"].base_url == "https://openrouter.ai/api/v1"
    assert "deepseek-chat" in eps["deepseek"].models
    assert all(ep.kind == "compat" and ep.key is not None and ep.default_model for ep in eps.values())


def test_a_provider_needing_a_setting_says_which_variable() -> None:
    env = {"CLOUDFLARE_API_KEY": "cf-1"}
    assert "cloudflare-workers-ai" not in {ep.name for ep in _config.endpoints_from_env(env)}
    assert providers.pending(env) == {"cloudflare-workers-ai": ("CLOUDFLARE_ACCOUNT_ID",)}
    with Dispatcher(env={**env, "OPENAI_API_KEY": "sk-1"}, dotenv=False,
                    ledger=MemoryLedger()) as d, pytest.raises(MissingKeyError) as caught:
        d.plan(d.request("hi", "cloudflare-workers-ai:@cf/meta/llama-3.1-8b-instruct"))
    assert "CLOUDFLARE_ACCOUNT_ID" in str(caught.value)
    eps = {ep.name: ep for ep in _config.endpoints_from_env({**env, "CLOUDFLARE_ACCOUNT_ID": "acc42"})}
    assert eps["cloudflare-workers-ai"].base_url == \
        "https://api.cloudflare.com/client/v4/accounts/acc42/ai/v1"


def test_an_unconfigured_provider_target_names_its_key_variable() -> None:
    with Dispatcher(env={"OPENAI_API_KEY": "sk-1"}, dotenv=False, ledger=MemoryLedger()) as d:
        with pytest.raises(MissingKeyError, match="GROQ_API_KEY"):
            d.plan(d.request("hi", f"groq:{MODEL}"))
        with pytest.raises(MissingKeyError, match="TOGETHER_API_KEY"):
            d.plan(d.request("hi", "together:meta-llama/Llama-3.3-70B-Instruct-Turbo"))
        with pytest.raises(ConfigurationError, match="no vendor called 'nosuchvendor'"):
            d.plan(d.request("hi", "nosuchvendor:x"))


def test_general_tokens_and_builtin_variables_do_not_turn_providers_on() -> None:
    env = {"GITHUB_TOKEN": "ghp-1", "HF_TOKEN": "hf-1", "OLLAMA_API_KEY": "o-1"}
    assert _config.endpoints_from_env(env) == []  # CI's GITHUB_TOKEN keeps demo mode
    named = {ep.name for ep in providers.endpoints({**env, "LLMDISPATCH_PROVIDERS": "github-models"})}
    assert named == {"github-models"}
    assert providers.endpoints({"GROQ_API_KEY": "g", "LLMDISPATCH_PROVIDERS": "none"}) == []


def test_a_bad_provider_base_url_is_one_error_naming_its_variable() -> None:
    with pytest.raises(ConfigurationError, match="GROQ_BASE_URL"):
        _config.endpoints_from_env({"GROQ_API_KEY": "g", "GROQ_BASE_URL": "htps://api.groq.com"})


def test_no_provider_key_means_the_catalogue_is_not_read() -> None:
    cat = Catalogue()
    assert providers.endpoints({"PATH": "/bin", "HOME": "/root"}, catalogue=cat) == []
    assert cat._data is None


def test_demo_mode_emulates_a_provider_through_the_openai_wire_emulator() -> None:
    env = {"GROQ_API_KEY": CANARY_KEY, "DEEPSEEK_API_KEY": CANARY_KEY, "LLMDISPATCH_DEMO": "1"}
    with Dispatcher(env=env, dotenv=False, sim_time_scale=0, ledger=MemoryLedger()) as d:
        assert d.demo and {"groq", "deepseek", "openai"} <= set(d.endpoints)
        groq = d.endpoints["groq"]
        assert groq.simulated and "/providers/groq/v1" in groq.base_url
        r = d.send("Hello", f"groq:{MODEL}", max_tokens=20)
        assert r.model == MODEL and "[simulated" in r.text and r.cost.usd is not None
        s = d.send("Hello", "deepseek:deepseek-chat")
        assert s.vendor == "deepseek" and s.usage.output_tokens > 0
        assert MODEL in d.models("groq") and "gpt-4o" not in d.models("groq")


def test_the_official_openai_sdk_reads_an_emulated_provider(keyed_sim: SimServer) -> None:
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(api_key=CANARY_KEY, base_url=provider_url(keyed_sim, "groq"),
                           max_retries=0)
    done = client.chat.completions.create(model=MODEL, max_tokens=16,
                                          messages=[{"role": "user", "content": "Hi"}])
    assert done.model == MODEL and done.usage is not None and done.usage.completion_tokens <= 16
    assert MODEL in [m.id for m in client.models.list()]
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Hi"}])
    r = httpx.post(provider_url(keyed_sim, "not-a-provider") + "/chat/completions", json={},
                   headers={"Authorization": f"Bearer {CANARY_KEY}"})
    assert r.status_code == 404


# -- %llm vendors: the configured providers, and how many more there are ---------------------

pytest_plugins = ("tests.test_magic_support",)  # its fixtures: shell, nb


def test_llm_vendors_lists_providers_and_counts_the_rest(keyed_sim: SimServer, nb: Any,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import llmdispatch_nb

    monkeypatch.setenv("CLOUDFLARE_API_KEY", CANARY_KEY)  # its account id is missing
    env = {"GROQ_API_KEY": CANARY_KEY, "GROQ_BASE_URL": provider_url(keyed_sim, "groq")}
    with Dispatcher(env=env, dotenv=False, ledger=MemoryLedger()) as d:
        llmdispatch_nb.set_default(d)
        try:
            run = nb.run("%llm vendors")
        finally:
            llmdispatch_nb.set_default(None)
    assert run.success, run.stdout + run.stderr
    data = run.published[-1].data
    assert_no_canary(run.stdout, run.stderr, data)
    md = data["text/markdown"]
    assert "| groq | compat | set | real |" in md
    assert "| cloudflare-workers-ai | compat | set | not configured |  | set CLOUDFLARE_ACCOUNT_ID |" in md
    more = len([p for p in providers.compatible() if p.id != "groq"])
    assert f"{more} more OpenAI-compatible providers turn on by their own key" in data["text/plain"]


def test_demo_mode_emulates_a_provider_named_without_a_key() -> None:
    env = {"LLMDISPATCH_DEMO": "1", "LLMDISPATCH_PROVIDERS": "cerebras,together"}
    with Dispatcher(env=env, dotenv=False, sim_time_scale=0, ledger=MemoryLedger()) as d:
        assert d.endpoints["cerebras"].simulated and d.endpoints["togetherai"].simulated
        model = d.endpoints["cerebras"].default_model
        assert model is not None
        r = d.send("Hello", f"cerebras:{model}", max_tokens=10)
        assert r.vendor == "cerebras" and r.usage.output_tokens <= 10
        assert "groq" not in d.endpoints  # neither its key nor its name was given
