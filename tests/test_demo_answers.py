"""Demo answers read as answers of the shape asked for: the whole latest user turn quoted,
no sentence twice, a list, a fenced code block or valid JSON when one is asked for, the
same text for the same request and another for another model or seed, and max_tokens,
stops and billing as before. The shapes are checked from `generate()` and over loopback
through each emulator (OpenAI, Anthropic, Gemini), the dispatcher and the magic."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator

import httpx
import pytest

from llmdispatch_nb import Dispatcher
from llmdispatch_nb.notebook import fenced_code
from llmdispatch_nb.sim._answers import Question, quote, requested_shape
from llmdispatch_nb.sim._core import count_tokens, generate

from .test_magic_support import Notebook

pytest_plugins = ("tests.test_magic_support",)  # its fixtures: shell, nb, demo, d

PROMPTS = [
    "hi",
    "Name three rivers.",
    "In three sentences: why do notebooks suit experiments with language models?",
    "Explain recursion with one short analogy.",
    "Write a Python function that reverses a string.",
    "List five uses of a paperclip as a bulleted list.",
    "Give me the capitals of France and Spain as JSON.",
    "Which is cheaper, $5 or $10?",
    "Summarise this:\n\n" + "A long paragraph about tides and the moon. " * 20,
]
MODELS = [("openai", "gpt-4o-mini"), ("anthropic", "claude-haiku-4-5"),
          ("google", "gemini-2.5-flash"), ("openai", "o4-mini")]
TARGETS = ["gpt", "claude", "gemini"]
SENTENCE_END = re.compile(r"(?<=[.!?:])\s+|\n+")


def sentences(text: str) -> list[str]:
    """The answer's own sentences (the quoted question is the user's)."""
    own = re.sub(r"“.*?”", "", text, flags=re.DOTALL)
    return [s.strip() for s in SENTENCE_END.split(own) if len(s.strip()) > 3]


def items(text: str) -> list[str]:
    return re.findall(r"^\d+\. .+$", text, re.MULTILINE)


# -- the text ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("vendor", "model"), MODELS)
def test_no_sentence_is_repeated_in_any_answer(vendor: str, model: str) -> None:
    for prompt, seed in itertools.product(PROMPTS, [None, 1, 2, 3, 42]):
        text = generate(prompt, model, vendor=vendor, seed=seed).text
        said = sentences(text)
        assert len(said) == len(set(said)), (prompt, seed, text)


def test_the_whole_question_is_quoted_and_a_long_one_is_shortened() -> None:
    question = "Explain tides with this code: d = {'a': {'b': 1}} and say why."
    assert f"You asked: “{question}”" in generate(question, "gpt-4o", vendor="openai").text
    long = "Summarise this: " + "the moon pulls the sea " * 30
    shown = quote(long)
    assert shown.endswith("…") and len(shown) <= 201 and long.startswith(shown[:-1])
    assert f"“{shown}”" in generate(long, "gpt-4o", vendor="openai").text


def test_a_list_when_a_list_is_asked_for() -> None:
    for vendor, model in MODELS:
        text = generate("Name three rivers.", model, vendor=vendor).text
        assert len(items(text)) == 3 and "River 1" in text, text
    assert len(items(generate("List 7 fruits.", "gpt-4o", vendor="openai").text)) == 7
    bullets = generate("Give ideas for a party as a bulleted list.", "gpt-4o", vendor="openai")
    assert 3 <= len(items(bullets.text)) <= 5


def test_prose_keeps_to_the_number_of_sentences_asked_for() -> None:
    text = generate(PROMPTS[2], "gpt-4o-mini", vendor="openai").text
    assert len(sentences(text)) == 4, text  # "[simulated ...] You asked:" and three


def test_a_fenced_code_block_when_code_is_asked_for() -> None:
    for vendor, model in MODELS:
        for seed in range(4):
            text = generate("Write a Python function that reverses a string.", model,
                            vendor=vendor, seed=seed).text
            code = fenced_code(text)
            assert code is not None and "```python\n" in text, text
            compile(code, "<answer>", "exec")  # what -f code inserts runs as a cell
    sql = generate("Write a SQL query that counts orders.", "gpt-4o", vendor="openai").text
    assert "```sql\n" in sql and fenced_code(sql)
    told = generate("Sort a list", "gpt-4o", vendor="openai",
                    question=Question("Sort a list", "Put the code of your answer in a fenced "
                                                     "code block."))
    assert fenced_code(told.text) is not None


def test_valid_json_when_json_is_asked_for() -> None:
    for vendor, model in MODELS:
        for seed in range(4):
            value = json.loads(generate("Give me the capitals of France and Spain as JSON.",
                                        model, vendor=vendor, seed=seed).text)
            assert value["simulated"] is True and value["model"] == model
    declared = generate("Name three rivers.", "gpt-4o", vendor="openai",
                        question=Question("Name three rivers.", shape="json"))
    assert len(json.loads(declared.text)["items"]) == 3


def test_shapes_are_read_from_the_words_of_the_request() -> None:
    assert requested_shape("Name three rivers.") == "list"
    assert requested_shape("In three sentences: why?") == "prose"  # a count is not a list
    assert requested_shape("Explain tides with this code: d = {}") == "prose"
    assert requested_shape("Write a function that adds two numbers") == "code"
    assert requested_shape("hi", "Reply with JSON only.") == "json"


def test_the_same_request_gives_the_same_text_another_model_or_seed_another() -> None:
    for prompt in PROMPTS:
        a = generate(prompt, "gpt-4o-mini", vendor="openai", seed=7)
        assert a == generate(prompt, "gpt-4o-mini", vendor="openai", seed=7)
        assert a.text != generate(prompt, "gpt-4o-mini", vendor="openai", seed=8).text
        assert a.text != generate(prompt, "gpt-4o", vendor="openai", seed=7).text


def test_max_tokens_and_stop_sequences_cut_the_text() -> None:
    for prompt in PROMPTS:
        full = generate(prompt, "gpt-4o", vendor="openai")
        assert full.finish == "stop" and full.input_tokens == count_tokens(prompt)
        cut = generate(prompt, "gpt-4o", vendor="openai", max_tokens=5)
        assert cut.finish == "length" and cut.tokens == full.tokens[:5]
    full = generate("Name three rivers.", "gpt-4o", vendor="openai").text
    stopped = generate("Name three rivers.", "gpt-4o", vendor="openai", stop=["2."]).text
    assert stopped == full[: full.index("2.")]


# -- through the emulators, the dispatcher and the magic --------------------------------------


@pytest.mark.parametrize("target", TARGETS)
def test_a_follow_up_quotes_the_latest_turn_never_the_previous_answer(
        demo: Dispatcher, target: str) -> None:
    first = demo.send("Name three rivers.", target, cache=False)
    follow = demo.send([{"role": "user", "content": "Name three rivers."},
                        {"role": "assistant", "content": first.text},
                        {"role": "user", "content": "And which is the longest?\nOne word."}],
                       target, system="Be brief.", cache=False)
    # The whole turn (both lines), on one line; the emulator read it from the request's
    # last user message, not from the joined prompt's last line.
    assert "You asked: “And which is the longest? One word.”" in follow.text
    assert "Name three rivers" not in follow.text and "River 2" not in follow.text


@pytest.mark.parametrize("target", TARGETS)
def test_max_tokens_is_honoured_and_billed(demo: Dispatcher, target: str) -> None:
    # Thinking off: max_tokens is then the whole cap sent. (With thinking, Gemini's cap sent
    # is max_tokens + the thinking budget, since thinking counts inside maxOutputTokens:
    # tests/test_model_rules.py.)
    r = demo.send("Write a Python function that reverses a string.", target, max_tokens=7,
                  cache=False, reasoning="none")
    assert r.finish_reason == "length"
    assert r.usage.output_tokens - (r.usage.reasoning_tokens or 0) == 7


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as client:
        yield client


def test_openai_response_format_json_gets_json(demo: Dispatcher, http: httpx.Client) -> None:
    url = demo.sim.base_url("openai") + "/chat/completions"
    body = {"model": "gpt-4o-mini", "response_format": {"type": "json_object"},
            "messages": [{"role": "user", "content": "Name three rivers."}]}
    r = http.post(url, json=body, headers={"authorization": "Bearer sk-test"})
    assert r.status_code == 200, r.text
    value = json.loads(r.json()["choices"][0]["message"]["content"])
    assert value["question"] == "Name three rivers." and len(value["items"]) == 3


def test_gemini_response_mime_type_json_gets_json(demo: Dispatcher, http: httpx.Client) -> None:
    url = demo.sim.base_url("google") + "/v1beta/models/gemini-2.5-flash:generateContent"
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
            "generationConfig": {"responseMimeType": "application/json"}}
    r = http.post(url, json=body, headers={"x-goog-api-key": "test"})
    assert r.status_code == 200, r.text
    parts = r.json()["candidates"][0]["content"]["parts"]
    assert json.loads(parts[-1]["text"])["simulated"] is True


@pytest.mark.parametrize("target", TARGETS)
def test_format_json_in_the_magic_asks_for_json_and_gets_it(d: Dispatcher, nb: Notebook,
                                                            target: str) -> None:
    run = nb.cell(f"{target} -f json --no-cache", "Name three rivers.")
    assert run.success
    result = nb.ns["_llm"]
    assert result.json_error is None and len(result.json["items"]) == 3
    assert "application/json" in run.last_data


def test_a_chat_follow_up_in_the_magic_quotes_only_the_new_turn(d: Dispatcher,
                                                                 nb: Notebook) -> None:
    assert nb.cell("claude --chat rivers", "Name three rivers.").success
    first = nb.ns["_llm"].text
    assert nb.cell("--chat rivers -f json", "Which is longest?").success
    follow = nb.ns["_llm"]
    assert follow.json["question"] == "Which is longest?" and first not in follow.text
    assert nb.magics.chats.find("rivers").system is None  # the format's hint is not kept


def test_format_code_in_the_magic_asks_for_a_code_block(d: Dispatcher, nb: Notebook) -> None:
    nb.shell.rl_next_input = None
    run = nb.cell("gemini -f code --no-cache", "Sort the rows by date.")  # no "code" in it
    assert run.success
    inserted = nb.shell.rl_next_input
    assert inserted and inserted == fenced_code(nb.ns["_llm"].text)
    compile(inserted, "<cell>", "exec")
