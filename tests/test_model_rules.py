"""Per-model parameter rules, end to end: the adapters (vendors/_rules.py, read from the
catalogue) against the emulators over loopback. For each vendor a reasoning model, a classic
model and a model with a one-of rule: the exact JSON body the emulator received and the
warning. Then strict mode, the unified `reasoning=`, and `%%llm ... -t --top-p --reasoning`
in a real InteractiveShell."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from llmdispatch_nb import Dispatcher
from llmdispatch_nb._types import Request
from llmdispatch_nb.errors import RequestValidationError
from llmdispatch_nb.sim._core import Received
from llmdispatch_nb.vendors import Endpoint, adapter_for
from llmdispatch_nb.vendors._rules import STRICT_VARIABLE, ParameterWarning, parameters_for

from .test_magic_support import Notebook, nb, shell  # noqa: F401  (fixtures)

HI = [{"role": "user", "content": "hi"}]
PROMPT = "Say hello in five words."


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dispatcher]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLMDISPATCH_HOME", str(tmp_path_factory.mktemp("ldhome")))
        with Dispatcher(demo=True, dotenv=False, sim_time_scale=0) as d:
            yield d


@pytest.fixture
def d(demo: Dispatcher) -> Dispatcher:
    for emulator in demo.sim.emulators.values():
        emulator.reset()
    return demo


def received(d: Dispatcher, vendor: str) -> Received:
    """The last generation request `vendor`'s emulator received."""
    (last, *_) = reversed(d.sim.emulators[vendor].requests.chat())
    return last


def sent(d: Dispatcher, vendor: str, target: str, **params: Any) -> tuple[dict[str, Any], Any]:
    """Send PROMPT to `target` and return the body the emulator received and the response."""
    r = d.send(PROMPT, target, cache=False, **params)
    body = received(d, vendor).body
    assert isinstance(body, dict)
    return body, r


def user(prompt: str = PROMPT) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


# -- OpenAI --------------------------------------------------------------------------------


def test_openai_reasoning_model_gets_its_own_fields(d: Dispatcher) -> None:
    with pytest.warns(ParameterWarning) as seen:
        body, r = sent(d, "openai", "openai:gpt-5", temperature=0.2, top_p=0.9, stop=["END"],
                       max_tokens=2000, reasoning="high")
    assert body == {"model": "gpt-5", "messages": user(), "max_completion_tokens": 2000,
                    "reasoning_effort": "high"}
    texts = sorted({str(w.message).split(" (")[0] for w in seen})
    assert texts == ["openai:gpt-5 does not accept stop", "openai:gpt-5 does not accept temperature",
                     "openai:gpt-5 does not accept top_p"]
    assert r.text and r.usage.reasoning_tokens > 0
    assert r.usage.output_tokens > r.usage.reasoning_tokens  # reasoning is inside the output


def test_openai_reasoning_none_where_it_cannot_be_off(d: Dispatcher) -> None:
    # gpt-5 has no "none": its least effort is "minimal" (warned); gpt-5.1 takes "none".
    with pytest.warns(ParameterWarning, match=r"gpt-5: reasoning cannot be turned off; "
                                               r"it gets its least \(minimal\)"):
        body, _ = sent(d, "openai", "openai:gpt-5", reasoning="none")
    assert body["reasoning_effort"] == "minimal"
    body, r = sent(d, "openai", "openai:gpt-5.1", reasoning="none")
    assert body == {"model": "gpt-5.1", "messages": user(), "reasoning_effort": "none"}
    assert r.usage.reasoning_tokens == 0


def test_openai_budget_becomes_an_effort(d: Dispatcher) -> None:
    body, _ = sent(d, "openai", "openai:o3", reasoning=3000)
    assert body["reasoning_effort"] == "medium"
    # gpt-5-pro takes "high" only (not served by the emulator: the rules alone).
    with pytest.warns(ParameterWarning, match=r"'low' is not one of its levels \(high\)"):
        assert parameters_for(Request("hi", reasoning="low"), "openai", "gpt-5-pro").effort == "high"


def test_openai_classic_model_keeps_sampling_and_drops_reasoning(d: Dispatcher) -> None:
    with pytest.warns(ParameterWarning, match="openai:gpt-4o-mini does not accept reasoning"):
        body, r = sent(d, "openai", "openai:gpt-4o-mini", temperature=0.2, top_p=0.9,
                       stop=["END"], max_tokens=50, seed=3, reasoning="low")
    assert body == {"model": "gpt-4o-mini", "messages": user(), "max_completion_tokens": 50,
                    "temperature": 0.2, "top_p": 0.9, "stop": ["END"], "seed": 3}
    assert r.usage.reasoning_tokens == 0


def test_reasoning_none_on_a_classic_model_asks_nothing(d: Dispatcher) -> None:
    body, _ = sent(d, "openai", "openai:gpt-4o-mini", reasoning="none")
    assert body == {"model": "gpt-4o-mini", "messages": user()}


# -- Anthropic -----------------------------------------------------------------------------


def test_anthropic_one_of_model_keeps_temperature(d: Dispatcher) -> None:
    with pytest.warns(ParameterWarning, match=r"anthropic:claude-sonnet-4-5 does not accept "
                                               r"top_p \(it takes temperature or top_p, not "
                                               r"both; temperature is kept\)"):
        body, r = sent(d, "anthropic", "anthropic:claude-sonnet-4-5", temperature=0.2,
                       top_p=0.9)
    assert body == {"model": "claude-sonnet-4-5", "max_tokens": 4096, "messages": user(),
                    "temperature": 0.2}
    assert r.text
    body, _ = sent(d, "anthropic", "anthropic:claude-sonnet-4-5", top_p=0.9)  # one: as asked
    assert body["top_p"] == 0.9 and "temperature" not in body


def test_anthropic_thinking_budget_and_its_constraints(d: Dispatcher) -> None:
    with pytest.warns(ParameterWarning, match=r"claude-haiku-4-5 does not accept temperature "
                                               r"\(not while thinking; only 1 or unset\)"):
        body, r = sent(d, "anthropic", "anthropic:claude-haiku-4-5", temperature=0.2,
                       max_tokens=300, reasoning="medium")
    # max_tokens is the answer's: the cap sent is 300 + the 4096 budget (> budget_tokens).
    assert body == {"model": "claude-haiku-4-5", "max_tokens": 4396, "messages": user(),
                    "thinking": {"type": "enabled", "budget_tokens": 4096}}
    assert r.text and 0 < r.usage.reasoning_tokens <= 4096
    assert r.usage.output_tokens > r.usage.reasoning_tokens
    # A budget below Anthropic's floor of 1024 is raised to it (warned).
    with pytest.warns(ParameterWarning, match=r"budget of 200 is outside its range 1024-"):
        body, _ = sent(d, "anthropic", "anthropic:claude-haiku-4-5", reasoning=200)
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assert body["max_tokens"] == 4096 + 1024


def test_anthropic_adaptive_model_takes_no_sampling(d: Dispatcher) -> None:
    with pytest.warns(ParameterWarning, match="claude-opus-4-7 does not accept temperature"):
        body, r = sent(d, "anthropic", "anthropic:claude-opus-4-7", temperature=0.5,
                       reasoning="high")
    assert body == {"model": "claude-opus-4-7", "max_tokens": 4096, "messages": user(),
                    "thinking": {"type": "adaptive"}, "output_config": {"effort": "high"}}
    assert r.usage.reasoning_tokens > 0


def test_anthropic_streamed_thinking_is_counted(d: Dispatcher) -> None:
    s = d.stream(PROMPT, "anthropic:claude-sonnet-4-5", reasoning="low", cache=False)
    text = "".join(s.text_deltas())
    r = s.response
    assert text == r.text and r.text
    assert 0 < r.usage.reasoning_tokens <= 1024 < r.usage.output_tokens + 1024


# -- Gemini --------------------------------------------------------------------------------


def test_gemini_thinking_budget_raises_the_cap(d: Dispatcher) -> None:
    body, r = sent(d, "google", "google:gemini-2.5-flash", max_tokens=40, reasoning="low",
                   temperature=0.2, top_p=0.9)
    assert body == {"contents": [{"role": "user", "parts": [{"text": PROMPT}]}],
                    "generationConfig": {"maxOutputTokens": 40 + 1024, "temperature": 0.2,
                                         "topP": 0.9, "thinkingConfig": {"thinkingBudget": 1024}}}
    assert r.text and 0 < r.usage.reasoning_tokens <= 1024
    # The emulator billed the thinking inside the cap it was sent.
    assert r.usage.output_tokens <= 40 + 1024


def test_gemini_without_reasoning_pins_thinking_when_capped(d: Dispatcher) -> None:
    body, r = sent(d, "google", "google:gemini-2.5-pro", max_tokens=40)
    assert body["generationConfig"] == {"maxOutputTokens": 1064,
                                        "thinkingConfig": {"thinkingBudget": 1024}}
    assert r.text  # the thinking did not eat the answer
    body, _ = sent(d, "google", "google:gemini-2.5-pro")
    assert "generationConfig" not in body  # nothing capped: the model's own defaults


def test_gemini_3_takes_a_level(d: Dispatcher) -> None:
    with pytest.warns(ParameterWarning, match=r"gemini-3-pro-preview: reasoning 'minimal' is "
                                               r"not one of its levels \(low, high\); 'low'"):
        body, r = sent(d, "google", "google:gemini-3-pro-preview", reasoning="minimal",
                       max_tokens=100)
    assert body["generationConfig"] == {"maxOutputTokens": 100 + 1024,
                                        "thinkingConfig": {"thinkingLevel": "LOW"}}
    assert r.text and r.usage.reasoning_tokens > 0


def test_gemini_classic_model_drops_reasoning(d: Dispatcher) -> None:
    with pytest.warns(ParameterWarning, match="google:gemini-2.0-flash does not accept reasoning"):
        body, r = sent(d, "google", "google:gemini-2.0-flash", reasoning=2048, max_tokens=30,
                       temperature=0.2, top_p=0.9)
    assert body["generationConfig"] == {"maxOutputTokens": 30, "temperature": 0.2, "topP": 0.9}
    assert r.usage.reasoning_tokens == 0


def test_gemini_thinking_off_where_it_can_be(d: Dispatcher) -> None:
    body, r = sent(d, "google", "google:gemini-2.5-flash", reasoning="none", max_tokens=30)
    assert body["generationConfig"] == {"maxOutputTokens": 30,
                                        "thinkingConfig": {"thinkingBudget": 0}}
    assert r.usage.reasoning_tokens == 0
    with pytest.warns(ParameterWarning, match=r"gemini-2.5-pro: reasoning cannot be turned off; "
                                               r"it gets its least \(a budget of 128\)"):
        body, _ = sent(d, "google", "google:gemini-2.5-pro", reasoning="none")
    assert body["generationConfig"] == {"thinkingConfig": {"thinkingBudget": 128}}


# -- strict mode, the ledger ---------------------------------------------------------------


def test_strict_params_raises_and_sends_nothing(d: Dispatcher) -> None:
    with pytest.raises(RequestValidationError, match=r"openai:gpt-5 does not accept temperature "
                                                      r".*strict_params is on"):
        d.send(PROMPT, "openai:gpt-5", temperature=0.2, strict_params=True, cache=False)
    assert d.sim.emulators["openai"].requests.chat() == []


def test_strict_params_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(STRICT_VARIABLE, "1")
    with pytest.raises(RequestValidationError, match="claude-sonnet-4-5 does not accept top_p"):
        parameters_for(Request("hi", temperature=0.2, top_p=0.9), "anthropic",
                       "claude-sonnet-4-5")
    # What the model accepts is never an error.
    assert parameters_for(Request("hi", temperature=0.2), "anthropic",
                          "claude-sonnet-4-5").temperature == 0.2


def test_reasoning_is_validated_at_the_door(d: Dispatcher) -> None:
    for bad in ("hard", -5, True, 1.5):
        with pytest.raises(RequestValidationError, match="reasoning"):
            d.send(PROMPT, "openai:gpt-5", reasoning=bad)
    with pytest.raises(RequestValidationError, match="strict_params must be True or False"):
        d.send(PROMPT, "openai:gpt-5", strict_params="yes")


def test_ledger_keeps_reasoning_apart(d: Dispatcher) -> None:
    records: list[Any] = []
    d.on_record(records.append)
    r = d.send(PROMPT, "openai:gpt-5", reasoning="low", cache=False)
    (rec,) = [x for x in records if x.call_id == r.call_id]
    assert rec.reasoning_tokens == r.usage.reasoning_tokens > 0
    assert rec.output_tokens == r.usage.output_tokens > rec.reasoning_tokens
    assert rec.params.get("reasoning") == "low"


def test_unknown_model_is_sent_what_was_asked() -> None:
    ep = Endpoint("ollama", "compat", "http://127.0.0.1:11434/v1")
    req = Request("hi", temperature=0.2, top_p=0.9, stop=["x"], max_tokens=9, reasoning="high")
    body = json.loads(adapter_for("compat").build_request(req, "qwen3:8b", ep, stream=False).content)
    assert body == {"model": "qwen3:8b", "messages": HI, "max_tokens": 9, "temperature": 0.2,
                    "top_p": 0.9, "stop": ["x"], "reasoning_effort": "high"}


# -- the magic -----------------------------------------------------------------------------


def test_compare_with_temperature_and_top_p_fills_every_column(
        d: Dispatcher, nb: Notebook) -> None:  # noqa: F811
    import llmdispatch_nb

    llmdispatch_nb.set_default(d)
    try:
        with pytest.warns(ParameterWarning, match="claude-haiku-4-5 does not accept top_p"):
            run = nb.cell("gpt claude gemini -t 0.2 --top-p 0.9 --no-stream -o answer",
                          "Name three primes.")
        assert run.success, run.stdout + run.stderr
        result = nb.ns["answer"]
        assert [r.vendor for r in result.responses] == ["openai", "anthropic", "google"]
        assert all(r.text for r in result.responses)
        assert received(d, "openai").body["temperature"] == 0.2
        assert received(d, "openai").body["top_p"] == 0.9
        claude = received(d, "anthropic").body
        assert claude["temperature"] == 0.2 and "top_p" not in claude
        assert received(d, "google").body["generationConfig"] == {"temperature": 0.2,
                                                                  "topP": 0.9}
    finally:
        llmdispatch_nb.set_default(None)


def test_magic_reasoning_flag(d: Dispatcher, nb: Notebook) -> None:  # noqa: F811
    import llmdispatch_nb

    llmdispatch_nb.set_default(d)
    try:
        run = nb.cell("openai:gpt-5 --reasoning high -m 500 --no-stream -o answer", "Why?")
        assert run.success, run.stdout + run.stderr
        assert received(d, "openai").body["reasoning_effort"] == "high"
        text = json.dumps(run.last_data)
        assert "reasoning)" in text  # the footer says how much of the output was thinking
        bad = nb.cell("openai:gpt-5 --reasoning hard", "Why?")
        assert not bad.success and "not one of none, minimal, low, medium, high" in \
            bad.stdout + bad.stderr
    finally:
        llmdispatch_nb.set_default(None)


def test_panel_reasoning_control_reaches_the_call(d: Dispatcher) -> None:
    from llmdispatch_nb.notebook._panel import panel

    records: list[Any] = []
    d.on_record(records.append)
    p = panel(d)
    try:
        p.prompt.value = "Why is the sky blue?"
        p.targets.value = ("openai:gpt-5",)
        assert p.settings().call_params().get("reasoning") is None  # the model's default
        p.reasoning.value = "low"
        assert p.settings().call_params()["reasoning"] == "low"
        assert p.on_send()  # the slider's temperature 1 is gpt-5's default: no warning
        assert p.wait(30) and p.state == "idle"
        assert received(d, "openai").body["reasoning_effort"] == "low"
        assert "temperature" not in received(d, "openai").body
        assert [r.params.get("reasoning") for r in records] == ["low"]
    finally:
        p.close()


@pytest.mark.parametrize(("target", "params", "cap"), [
    ("google:gemini-2.5-flash", {"max_tokens": 40}, 40 + 1024),  # thinking pinned, cap raised
    ("google:gemini-2.5-flash", {"max_tokens": 40, "reasoning": 3000}, 40 + 3000),
    ("anthropic:claude-haiku-4-5", {"max_tokens": 300, "reasoning": "low"}, 300 + 1024),
    ("openai:gpt-5", {"max_tokens": 300, "reasoning": "high"}, 300),  # inside the cap sent
])
def test_the_budget_reserves_the_thinking_it_is_billed(
        d: Dispatcher, target: str, params: dict[str, Any], cap: int) -> None:
    request = Request(PROMPT, target, **params)
    (cand, *_) = d.plan(request).candidates
    worst = d.router.worst_case(request, cand)
    assert (worst.output_tokens, worst.capped) == (cap, True)
    r = d.send(PROMPT, target, cache=False, **params)
    assert r.usage.reasoning_tokens > 0 and r.usage.output_tokens <= worst.output_tokens
