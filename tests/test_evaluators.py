"""Evaluators: the built-ins, errors kept as data in a sweep, and the LLM judge against
the emulators (whose text holds no score) plus its score parser."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest

from llmdispatch_nb import Dispatcher, Endpoint, Secret
from llmdispatch_nb.errors import ConfigurationError
from llmdispatch_nb.experiments import (
    ScoreParseError,
    contains,
    cost_under,
    equals,
    json_schema,
    latency_under,
    length_between,
    llm_judge,
    parse_score,
    regex,
    sweep,
    valid_json,
)
from llmdispatch_nb.experiments._evaluators import as_score, named_evaluators
from llmdispatch_nb.ledger import Ledger
from llmdispatch_nb.resilience import RetryPolicy
from llmdispatch_nb.sim import SimServer, serve
from tests.conftest import CANARY_KEY

OPENAI = "openai:gpt-4o-mini"
CLAUDE = "anthropic:claude-haiku-4-5"
ROW: dict[str, Any] = {"latency_s": 0.8, "cost_usd": 0.002}


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    with serve(["openai", "anthropic"], time_scale=0) as s:
        yield s


@pytest.fixture
def d(sim: SimServer) -> Iterator[Dispatcher]:
    for emu in sim.emulators.values():
        emu.reset()
    eps = [Endpoint("openai", "openai", sim.base_url("openai"), key=Secret(CANARY_KEY),
                    simulated=True),
           Endpoint("anthropic", "anthropic", sim.base_url("anthropic"),
                    key=Secret(CANARY_KEY), simulated=True)]
    with Dispatcher(eps, dotenv=False, ledger=Ledger.memory(), retry=RetryPolicy.none()) as disp:
        yield disp


# -- built-ins -----------------------------------------------------------------------------


def test_text_checks() -> None:
    assert contains("Paris")("The capital is Paris.", ROW) is True
    assert contains("paris")("The capital is Paris.", ROW) is False
    assert contains("paris", case=False)("The capital is Paris.", ROW) is True
    assert regex(r"^\d{4}$")("2024", ROW) and not regex(r"^\d{4}$")("in 2024", ROW)
    assert equals("Paris")("  Paris\n", ROW) and not equals("Paris")("Paris.", ROW)
    assert equals("paris", case=False)("PARIS", ROW)
    assert not equals("Paris", strip=False)(" Paris", ROW)
    assert length_between(3, 5)("abcd", ROW) and not length_between(3, 5)("abcdef", ROW)
    assert length_between(lo=2, unit="words")("two words", ROW)
    assert not length_between(hi=1, unit="words")("two words", ROW)
    with pytest.raises(ConfigurationError):
        length_between(1, 2, unit="tokens")


def test_json_checks_accept_a_fenced_answer() -> None:
    assert valid_json()('{"a": 1}', ROW)
    assert valid_json()('```json\n{"a": 1}\n```', ROW)
    assert not valid_json()("{'a': 1}", ROW) and not valid_json()("Sure! {\"a\": 1}", ROW)
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    check = json_schema(schema)
    assert check('```\n{"a": 1}\n```', ROW)
    assert not check('{"a": "one"}', ROW) and not check("{}", ROW) and not check("nope", ROW)
    with pytest.raises(ConfigurationError, match="schema is invalid"):
        json_schema({"type": "no-such-type"})


def test_latency_and_cost_thresholds_read_the_row() -> None:
    assert latency_under(1)("x", ROW) and not latency_under(0.5)("x", ROW)
    assert cost_under(0.002)("x", ROW) and not cost_under(0.001)("x", ROW)
    # Unknown figures give no score, not a pass or a fail.
    assert latency_under(1)("x", {}) is None and cost_under(1)("x", {"cost_usd": None}) is None


def test_names_and_scores() -> None:
    def polite(text: str, row: Any) -> bool:
        return "please" in text

    pairs = named_evaluators([contains("a"), contains("a"), polite, lambda t, r: 1])
    assert [n for n, _ in pairs] == ["contains:a", "contains:a_2", "polite", "eval"]
    assert [n for n, _ in named_evaluators({"x": polite})] == ["x"]
    with pytest.raises(ConfigurationError):
        named_evaluators({"x": "not a function"})
    assert as_score(True) == 1.0 and as_score(0) == 0.0 and as_score(None) is None
    with pytest.raises(TypeError):
        as_score("high")


# -- in a sweep: errors as data ------------------------------------------------------------


def test_an_evaluator_that_raises_leaves_its_error_as_data(d: Dispatcher) -> None:
    def boom(text: str, row: Any) -> float:
        raise RuntimeError(f"cannot grade {row['country']}")

    async def slow_len(text: str, row: Any) -> float:
        await asyncio.sleep(0)
        return len(text) / 1000

    df = sweep("Capital of {country}?", [OPENAI], vars={"country": ["France", "Peru"]},
               evaluators={"sim": contains("simulated"), "boom": boom, "size": slow_len,
                           "word": lambda t, r: "many"},
               dispatcher=d, progress=False)
    assert (df["status"] == "ok").all()
    assert df["sim"].tolist() == [1.0, 1.0]
    assert df["boom"].isna().all()
    assert df["boom_error"].tolist() == ["RuntimeError: cannot grade France",
                                         "RuntimeError: cannot grade Peru"]
    assert df["word_error"].str.startswith("TypeError: an evaluator must return").all()
    assert (df["size"] > 0).all() and "sim_error" not in df.columns
    # `score` is the mean of the scores there are.
    expected = df[["sim", "size"]].mean(axis=1)
    assert df["score"].tolist() == pytest.approx(expected.tolist())


def test_evaluators_see_the_run_and_its_vars(d: Dispatcher) -> None:
    seen: list[dict[str, Any]] = []

    def look(text: str, row: Any) -> bool:
        seen.append(dict(row))
        return row["expected"] in row["prompt"]

    prompts = pd.DataFrame({"prompt": ["Is {expected} a city?"], "expected": ["Paris"]})
    df = sweep(prompts, [OPENAI], evaluators=[look], dispatcher=d, progress=False)
    assert df["look"].tolist() == [1.0] and df["expected"].tolist() == ["Paris"]
    row = seen[0]
    assert row["prompt"] == "Is Paris a city?" and row["target"] == OPENAI
    assert row["text"] and row["latency_s"] > 0 and row["cost_usd"] > 0


def test_errored_runs_are_not_evaluated(d: Dispatcher, sim: SimServer) -> None:
    sim.emulators["openai"].faults.script("400")
    calls: list[str] = []
    df = sweep("Q{i}", [OPENAI], vars={"i": [1, 2]}, concurrency=1, dispatcher=d,
               evaluators=[lambda t, r: calls.append(t) or True], progress=False)
    assert df["status"].tolist() == ["error", "ok"] and len(calls) == 1
    assert math.isnan(df["eval"].iloc[0]) and df["eval"].iloc[1] == 1.0


# -- the judge -----------------------------------------------------------------------------


@pytest.mark.parametrize(("reply", "score"), [
    ("Score: 7/10", 0.7),
    ("Score: 7/10\nClear and correct.", 0.7),
    ("**Score:** 8", 0.8),
    ("score = 6.5 / 10 because ...", 0.65),
    ("Rating: 4 out of 5", 0.8),
    ("I would give it 9 out of 10.", 0.9),
    ("85/100", 0.85),
    ("7", 0.7),
    (" **10**. ", 1.0),
    ("Score: 0/10 - wrong city", 0.0),
])
def test_parse_score_reads_common_shapes(reply: str, score: float) -> None:
    assert parse_score(reply) == pytest.approx(score)


@pytest.mark.parametrize("reply", [
    "Looks good to me.",
    "[simulated gpt-4o-mini] You asked: “Rubric”.",  # a number in a model name is no score
    "Score: 11/10",
    "Score: -1",
    "Items 1, 2 and 3 are right.",
    "",
])
def test_parse_score_refuses_replies_without_a_score(reply: str) -> None:
    with pytest.raises(ScoreParseError):
        parse_score(reply)


def test_judge_against_the_emulator_keeps_its_unreadable_reply_as_data(
        d: Dispatcher, sim: SimServer) -> None:
    judge = llm_judge(CLAUDE, "Names the right capital city, in one word.")
    df = sweep("Capital of {country}?", [OPENAI], vars={"country": ["France", "Peru"]},
               evaluators=[judge, contains("simulated")], dispatcher=d, progress=False)
    assert (df["status"] == "ok").all()
    assert df[judge.name].isna().all()
    assert df[f"{judge.name}_error"].str.startswith("ScoreParseError: the judge's reply has no "
                                                    "score").all()
    assert df["contains:simulated"].tolist() == [1.0, 1.0]
    # The judge's calls went through the dispatcher and are in the ledger, tagged.
    assert sim.emulators["anthropic"].count == 2
    judged = d.ledger.records(tags="judge")
    assert len(judged) == 2 and all(r.cost_usd and r.cost_usd > 0 for r in judged)
    assert {next(t for t in r.tags if t.startswith("cell:")) for r in judged} == {
        f"cell:{c}" for c in df["cell_id"]}
    assert all(r.vendor == "anthropic" for r in judged)
    # Resuming does not count the judge's answers as the sweep's runs.
    before = sim.emulators["openai"].count
    again = sweep("Capital of {country}?", [OPENAI], vars={"country": ["France", "Peru"]},
                  dispatcher=d, progress=False)
    assert again["resumed"].all() and again["vendor"].tolist() == ["openai", "openai"]
    assert sim.emulators["openai"].count == before


def test_judge_reads_a_score_when_the_reply_has_one(d: Dispatcher) -> None:
    # The emulator's reply begins by quoting the prompt's first words: with instructions
    # that begin with a score, its reply carries one, end to end through the parser.
    judge = llm_judge(OPENAI, "Any answer.", system="Score: 7/10 is the only grade you give.",
                      dispatcher=d)
    row = {"prompt": "Capital of France?"}
    assert judge("Paris", row) == pytest.approx(0.7)
    df = sweep("Capital of France?", [CLAUDE], evaluators=[judge], dispatcher=d,
               progress=False)
    assert df[judge.name].tolist() == [pytest.approx(0.7)] and "score" in df.columns


def test_judge_needs_a_rubric() -> None:
    with pytest.raises(ConfigurationError, match="rubric"):
        llm_judge(OPENAI, "  ")
