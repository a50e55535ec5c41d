"""The emulators refuse what the real APIs refuse, in the real APIs' words, checked with the
official SDKs sent the raw violations (openai, anthropic, google-genai); reasoning tokens
come back in each vendor's own usage fields; Gemini's thinking stays inside
maxOutputTokens (empty text and MAX_TOKENS when the cap is too small)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from llmdispatch_nb import Dispatcher
from llmdispatch_nb.resilience import RetryPolicy
from llmdispatch_nb.sim import SimServer
from llmdispatch_nb.sim.azure import AzureEmulator
from llmdispatch_nb.vendors import Endpoint, Secret
from llmdispatch_nb.vendors._rules import ParameterWarning

from .conftest import CANARY_KEY

HI = [{"role": "user", "content": "Explain why the sky is blue, briefly."}]


# -- OpenAI ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def oai(openai_sim: SimServer) -> Iterator[openai.OpenAI]:
    c = openai.OpenAI(api_key=CANARY_KEY, base_url=openai_sim.base_url("openai"), max_retries=0)
    yield c
    c.close()


def openai_refusal(client: Any, **kw: Any) -> dict[str, Any]:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(messages=HI, **kw)
    assert info.value.status_code == 400
    err = info.value.body
    assert isinstance(err, dict) and err["type"] == "invalid_request_error"
    return err


@pytest.mark.parametrize(("kw", "message", "param", "code"), [
    ({"model": "gpt-5", "max_tokens": 100},
     "Unsupported parameter: 'max_tokens' is not supported with this model. Use "
     "'max_completion_tokens' instead.", "max_tokens", "unsupported_parameter"),
    ({"model": "o3", "temperature": 0.2},
     "Unsupported value: 'temperature' does not support 0.2 with this model. Only the default "
     "(1) value is supported.", "temperature", "unsupported_value"),
    ({"model": "gpt-5", "top_p": 0.9},
     "Unsupported value: 'top_p' does not support 0.9 with this model. Only the default (1) "
     "value is supported.", "top_p", "unsupported_value"),
    ({"model": "o4-mini", "stop": ["END"]},
     "Unsupported parameter: 'stop' is not supported with this model.", "stop",
     "unsupported_parameter"),
    ({"model": "gpt-5", "presence_penalty": 0.5},
     "Unsupported parameter: 'presence_penalty' is not supported with this model.",
     "presence_penalty", "unsupported_parameter"),
    ({"model": "gpt-5.1", "reasoning_effort": "minimal"},
     "Unsupported value: 'minimal' is not supported with the 'gpt-5.1' model. Supported values "
     "are: 'none', 'low', 'medium', and 'high'.", "reasoning_effort", "unsupported_value"),
    ({"model": "o3", "reasoning_effort": "none"},
     "Unsupported value: 'none' is not supported with the 'o3' model. Supported values are: "
     "'low', 'medium', and 'high'.", "reasoning_effort", "unsupported_value"),
    ({"model": "gpt-4o-mini", "reasoning_effort": "low"},
     "Unsupported parameter: 'reasoning_effort' is not supported with this model.",
     "reasoning_effort", "unsupported_parameter"),
], ids=["max_tokens", "temperature", "top_p", "stop", "penalty", "effort-5.1", "effort-o3",
        "effort-classic"])
def test_openai_refusals_in_the_real_words(oai: openai.OpenAI, kw: dict[str, Any], message: str,
                                          param: str, code: str) -> None:
    err = openai_refusal(oai, **kw)
    assert (err["message"], err["param"], err["code"]) == (message, param, code)


def test_openai_accepts_what_the_rules_allow(oai: openai.OpenAI) -> None:
    # The defaults are accepted; a classic model takes every sampling parameter.
    r = oai.chat.completions.create(model="gpt-5", messages=HI, temperature=1, top_p=1,
                                    max_completion_tokens=2000, reasoning_effort="high")
    details = r.usage.completion_tokens_details
    assert details is not None and details.reasoning_tokens > 0
    assert r.usage.completion_tokens > details.reasoning_tokens and r.choices[0].message.content
    r = oai.chat.completions.create(model="gpt-4o-mini", messages=HI, temperature=0.2, top_p=0.9,
                                    stop=["zzz"], max_tokens=50, presence_penalty=0.1)
    assert r.choices[0].message.content and r.usage.completion_tokens_details.reasoning_tokens == 0


def test_openai_effort_scales_the_reasoning(oai: openai.OpenAI) -> None:
    def reasoning(effort: str) -> int:
        r = oai.chat.completions.create(model="gpt-5.1", messages=HI, reasoning_effort=effort)  # type: ignore[arg-type]
        details = r.usage.completion_tokens_details
        assert details is not None
        return details.reasoning_tokens or 0

    assert reasoning("none") == 0 < reasoning("low") < reasoning("high")


def test_openai_reasoning_can_eat_the_whole_cap(oai: openai.OpenAI) -> None:
    r = oai.chat.completions.create(model="o4-mini", messages=HI, max_completion_tokens=20)
    assert r.choices[0].finish_reason == "length" and not r.choices[0].message.content
    assert r.usage.completion_tokens == r.usage.completion_tokens_details.reasoning_tokens == 20


# -- Azure: a reasoning deployment follows OpenAI's rules -----------------------------------


@pytest.fixture
def azure_reasoner(azure_sim: SimServer) -> Iterator[AzureEmulator]:
    emu = azure_sim.emulators["azure"]
    assert isinstance(emu, AzureEmulator)
    emu.add_deployment("reasoner", "o4-mini")
    emu.reset()
    yield emu
    emu.deployments.pop("reasoner", None)


def test_azure_reasoning_deployment(azure_sim: SimServer, azure_reasoner: AzureEmulator) -> None:
    c = openai.AzureOpenAI(api_key=CANARY_KEY, azure_endpoint=azure_sim.base_url("azure"),
                           api_version="2024-10-21", max_retries=0)
    with c, pytest.raises(openai.BadRequestError, match="Use 'max_completion_tokens' instead"):
        c.chat.completions.create(model="reasoner", messages=HI, max_tokens=50)
    ep = Endpoint("azure", "azure", azure_sim.base_url("azure"), key=Secret(CANARY_KEY),
                  api_version="2024-10-21", deployments={"reasoner": "o4-mini"}, simulated=True)
    with Dispatcher([ep], dotenv=False, retry=RetryPolicy.none()) as d, \
            pytest.warns(ParameterWarning, match="azure:o4-mini does not accept temperature"):
        r = d.send("Why is the sky blue?", "azure:reasoner", temperature=0.3, max_tokens=900,
                   reasoning="high")
    body = azure_reasoner.requests.chat()[-1].body
    assert body == {"model": "reasoner", "messages": [{"role": "user", "content":
                    "Why is the sky blue?"}], "max_completion_tokens": 900,
                    "reasoning_effort": "high"}
    assert r.text and r.usage.reasoning_tokens > 0


# -- Anthropic -------------------------------------------------------------------------------

DOCS = "Please consult our documentation at https://docs.claude.com/en/docs/build-with-claude/"


@pytest.fixture(scope="module")
def ant(anthropic_sim: SimServer) -> Iterator[anthropic.Anthropic]:
    c = anthropic.Anthropic(api_key=CANARY_KEY, base_url=anthropic_sim.base_url("anthropic"),
                            max_retries=0)
    yield c
    c.close()


@pytest.mark.parametrize(("kw", "message"), [
    ({"model": "claude-sonnet-4-5", "temperature": 0.2, "top_p": 0.9},
     "`temperature` and `top_p` cannot both be specified for this model. Please use only one."),
    ({"model": "claude-opus-4-7", "temperature": 0.2}, "`temperature` is deprecated for this model."),
    ({"model": "claude-sonnet-4-5", "thinking": {"type": "enabled", "budget_tokens": 500}},
     "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"),
    ({"model": "claude-sonnet-4-5", "max_tokens": 2000,
      "thinking": {"type": "enabled", "budget_tokens": 2000}},
     "`max_tokens` must be greater than `thinking.budget_tokens`. " + DOCS
     + "extended-thinking#max-tokens-and-context-window-size"),
    ({"model": "claude-haiku-4-5", "temperature": 0.5,
      "thinking": {"type": "enabled", "budget_tokens": 1024}},
     "`temperature` may only be set to 1 when thinking is enabled or in adaptive mode. " + DOCS
     + "extended-thinking#feature-compatibility"),
    ({"model": "claude-haiku-4-5", "top_k": 5,
      "thinking": {"type": "enabled", "budget_tokens": 1024}},
     "`top_k` must be unset when thinking is enabled. " + DOCS
     + "extended-thinking#feature-compatibility"),
    ({"model": "claude-opus-4-7", "thinking": {"type": "enabled", "budget_tokens": 1024}},
     "thinking.type.enabled is not supported for this model. Use thinking.type.adaptive and "
     "output_config.effort to control thinking behavior."),
], ids=["one-of", "deprecated", "budget-floor", "budget-cap", "thinking-temperature",
        "thinking-top_k", "enabled-on-adaptive"])
def test_anthropic_refusals_in_the_real_words(ant: anthropic.Anthropic, kw: dict[str, Any],
                                             message: str) -> None:
    kw.setdefault("max_tokens", 4096)
    # This SDK has dropped the sampling arguments from create(): they go as extra body.
    sampling = {k: kw.pop(k) for k in ("temperature", "top_p", "top_k") if k in kw}
    with pytest.raises(anthropic.BadRequestError) as info:
        ant.messages.create(messages=HI, extra_body=sampling, **kw)  # type: ignore[call-overload]
    body = info.value.body
    assert isinstance(body, dict)
    assert body["error"] == {"type": "invalid_request_error", "message": message}


def test_anthropic_thinking_usage_is_inside_output(ant: anthropic.Anthropic) -> None:
    m = ant.messages.create(model="claude-sonnet-4-5", max_tokens=3000, messages=HI,  # type: ignore[arg-type]
                            thinking={"type": "enabled", "budget_tokens": 2000})
    extra = m.usage.model_extra or {}
    details = getattr(m.usage, "output_tokens_details", None) or extra.get("output_tokens_details")
    thinking = details["thinking_tokens"] if isinstance(details, dict) else details.thinking_tokens
    assert 0 < thinking <= 2000 and m.usage.output_tokens > thinking
    assert m.content and m.content[0].type == "text"
    # One sampling control on a one-of model is fine.
    m = ant.messages.create(model="claude-sonnet-4-5", max_tokens=50, messages=HI,  # type: ignore[arg-type]
                            extra_body={"top_p": 0.9})
    assert m.content


def test_anthropic_stream_counts_thinking(ant: anthropic.Anthropic) -> None:
    with ant.messages.stream(model="claude-opus-4-7", max_tokens=4000, messages=HI,  # type: ignore[arg-type]
                             thinking={"type": "adaptive"}) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text and final.usage.output_tokens > len(text.split())


# -- Gemini ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gem(gemini_sim: SimServer) -> Iterator[Any]:
    c = genai.Client(api_key=CANARY_KEY, http_options=genai_types.HttpOptions(
        base_url=gemini_sim.base_url("google"), api_version="v1beta"))
    yield c
    c.close()


def gemini_config(**thinking: Any) -> genai_types.GenerateContentConfig:
    max_output = thinking.pop("max_output_tokens", None)
    return genai_types.GenerateContentConfig(
        max_output_tokens=max_output, thinking_config=genai_types.ThinkingConfig(**thinking))


@pytest.mark.parametrize(("model", "thinking", "message"), [
    ("gemini-3-pro-preview", {"thinking_budget": 1024, "thinking_level": "LOW"},
     "You can only set only one of thinking budget and thinking level."),
    ("gemini-2.5-flash", {"thinking_level": "LOW"}, "Thinking level is not supported for this model."),
    ("gemini-2.5-pro", {"thinking_budget": 0},
     "Budget 0 is invalid. This model only works in thinking mode."),
    ("gemini-2.5-flash", {"thinking_budget": 52428},
     "The thinking budget (52428) is invalid. Please choose a value between 1 and 24576."),
    ("gemini-2.0-flash", {"thinking_budget": 1024}, "Thinking is not supported for this model."),
], ids=["both", "level-on-2.5", "pro-off", "out-of-range", "not-a-thinker"])
def test_gemini_refusals(gem: Any, model: str, thinking: dict[str, Any], message: str) -> None:
    with pytest.raises(genai_errors.ClientError) as info:
        gem.models.generate_content(model=model, contents="hi", config=gemini_config(**thinking))
    assert info.value.code == 400 and info.value.status == "INVALID_ARGUMENT"
    assert info.value.message == message


def test_gemini_thinking_is_inside_max_output_tokens(gem: Any) -> None:
    # A small cap: the thinking takes all of it, the answer is empty, as on the real API.
    r = gem.models.generate_content(model="gemini-2.5-flash", contents="Explain tides.",
                                    config=gemini_config(max_output_tokens=40))
    (cand,) = r.candidates
    assert cand.finish_reason == genai_types.FinishReason.MAX_TOKENS and not r.text
    assert r.usage_metadata.thoughts_token_count == 40
    assert not r.usage_metadata.candidates_token_count
    # Room for both: thoughts + answer never pass the cap.
    for budget, cap in ((200, 300), (1024, 1064), (-1, 5000)):
        r = gem.models.generate_content(
            model="gemini-2.5-flash", contents="Explain tides.",
            config=gemini_config(thinking_budget=budget, max_output_tokens=cap))
        u = r.usage_metadata
        assert u.thoughts_token_count > 0 and (budget < 0 or u.thoughts_token_count <= budget)
        assert u.thoughts_token_count + (u.candidates_token_count or 0) <= cap
        assert u.total_token_count == u.prompt_token_count + u.thoughts_token_count + \
            (u.candidates_token_count or 0)
    r = gem.models.generate_content(model="gemini-2.5-flash", contents="Explain tides.",
                                    config=gemini_config(thinking_budget=0, max_output_tokens=40))
    assert not r.usage_metadata.thoughts_token_count and r.text


def test_gemini_3_levels(gem: Any) -> None:
    def thoughts(level: str) -> int:
        r = gem.models.generate_content(model="gemini-3-flash-preview", contents="Explain tides.",
                                        config=gemini_config(thinking_level=level))
        assert r.text
        return int(r.usage_metadata.thoughts_token_count or 0)

    assert thoughts("MINIMAL") < thoughts("HIGH")
    with pytest.raises(genai_errors.ClientError, match="Thinking level MEDIUM is not supported"):
        gem.models.generate_content(model="gemini-3-pro-preview", contents="hi",
                                    config=gemini_config(thinking_level="MEDIUM"))


def test_gemini_stream_through_the_sdk(gem: Any) -> None:
    chunks = list(gem.models.generate_content_stream(
        model="gemini-2.5-pro", contents="Explain tides.",
        config=gemini_config(thinking_budget=512, max_output_tokens=2000)))
    last = chunks[-1].usage_metadata
    assert 0 < last.thoughts_token_count <= 512
    assert json.dumps([c.text or "" for c in chunks])


def test_gemini_stream_whose_thinking_takes_the_cap(gem: Any) -> None:
    chunks = list(gem.models.generate_content_stream(
        model="gemini-2.5-flash", contents="Explain tides.", config=gemini_config(max_output_tokens=30)))
    assert not "".join(c.text or "" for c in chunks)
    assert chunks[-1].candidates[0].finish_reason == genai_types.FinishReason.MAX_TOKENS
    assert chunks[-1].usage_metadata.thoughts_token_count == 30
