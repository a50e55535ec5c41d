"""What-if routing, the trade-off table and chart, checked against a small case computed by
hand; then the same replay from ledger records of a real sweep."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest

from llmdispatch_nb import CallRecord, Dispatcher, Endpoint, Secret
from llmdispatch_nb.errors import ConfigurationError
from llmdispatch_nb.experiments import (
    contains,
    pareto_front,
    policy_picks,
    recommend,
    sweep,
    tradeoff_chart,
    tradeoff_table,
    what_if,
)
from llmdispatch_nb.ledger import Ledger
from llmdispatch_nb.resilience import RetryPolicy
from llmdispatch_nb.routing import Rule
from llmdispatch_nb.sim import SimServer, serve
from tests.conftest import CANARY_KEY

A, B, C = "v:a", "v:b", "v:c"
PROMPTS = {"c1": "Capital of France?", "c2": "Capital of Peru?", "c3": "Capital of Japan?",
           "c4": "Capital of Chile?"}
# (case, target, cost, latency, score); None = the run failed. A answers c1 twice.
RUNS = [
    ("c1", A, 0.001, 1.0, 1.0), ("c1", A, 0.001, 1.4, 1.0), ("c2", A, 0.001, 1.6, 0.0),
    ("c3", A, 0.001, 0.8, 1.0), ("c4", A, None, None, None),
    ("c1", B, 0.010, 0.5, 1.0), ("c2", B, 0.012, 0.7, 1.0), ("c3", B, 0.008, 0.6, 1.0),
    ("c4", B, 0.009, 0.9, 1.0),
    ("c1", C, 0.004, 2.0, 1.0), ("c2", C, None, None, None), ("c3", C, 0.004, 3.0, 0.0),
    ("c4", C, 0.004, 2.2, 1.0),
]


def frame() -> pd.DataFrame:
    rows = []
    for case, target, cost, latency, score in RUNS:
        rows.append({"case_id": case, "prompt": PROMPTS[case], "target": target,
                     "status": "error" if cost is None else "ok", "cost_usd": cost,
                     "latency_s": latency, "score": score})
    df = pd.DataFrame(rows).astype({"cost_usd": "float64", "latency_s": "float64",
                                    "score": "float64"})
    df.attrs["scores"] = ["score"]
    return df

# By hand. Per target over answered runs: A cost .001, median latency 1.2 (1.0 1.4 1.6 0.8),
# quality .75; B cost .00975, latency .65, quality 1; C cost .004, latency 2.2, quality 2/3.
# So cheapest = A, C, B; fastest = best = B, A, C. Per case, A's c1 is the mean of its two
# repeats (latency 1.2). Percentiles interpolate linearly between closest ranks.
EXPECTED = {
    # policy: (served, unserved, fell back, total cost, p50, p95, quality, picks)
    "cheapest": (4, 0, 1, 0.007, 1.4, 1.6 + 0.85 * 0.6, 0.75, {A: 3, C: 1}),
    "fastest": (4, 0, 0, 0.039, 0.65, 0.7 + 0.85 * 0.2, 1.0, {B: 4}),
    "best": (4, 0, 0, 0.039, 0.65, 0.7 + 0.85 * 0.2, 1.0, {B: 4}),
    "quality_at_least 0.7": (4, 0, 1, 0.012, 1.05, 1.2 + 0.85 * 0.4, 0.75, {A: 3, B: 1}),
    "quality_at_least 0.8": (4, 0, 0, 0.039, 0.65, 0.7 + 0.85 * 0.2, 1.0, {B: 4}),
    f"fixed:{C}": (3, 1, 0, 0.012, 2.2, 2.2 + 0.9 * 0.8, 2 / 3, {C: 3}),
    "rules (1)": (4, 0, 1, 0.016, 1.2, 1.6 + 0.85 * 0.6, 0.75, {A: 2, B: 1, C: 1}),
}
POLICIES: list[Any] = ["cheapest", "fastest", "best", ("quality_at_least", 0.7),
                       ("quality_at_least", 0.8), f"fixed:{C}", ("rules", [("France", B)])]


def test_what_if_matches_the_hand_computed_figures() -> None:
    table = what_if(frame(), POLICIES)
    assert list(table.index) == list(EXPECTED)
    for policy, (served, unserved, fell, total, p50, p95, quality, picks) in EXPECTED.items():
        row = table.loc[policy]
        assert (row["cases"], row["served"], row["unserved"], row["fell_back"]) == (
            4, served, unserved, fell), policy
        assert math.isclose(row["total_cost_usd"], total, rel_tol=1e-9), policy
        assert math.isclose(row["mean_cost_usd"], total / served, rel_tol=1e-9), policy
        assert math.isclose(row["latency_p50_s"], p50, rel_tol=1e-9), policy
        assert math.isclose(row["latency_p95_s"], p95, rel_tol=1e-9), policy
        assert math.isclose(row["quality"], quality, rel_tol=1e-9), policy
        got = dict(part.split(" x") for part in row["picks"].split(", "))
        assert {t: int(n) for t, n in got.items()} == picks, policy


def test_recommend_picks_the_cheapest_policy_that_meets_both_floors() -> None:
    # cheapest is cheaper but its p95 (2.11 s) is over 2 s; fixed:C leaves a case unserved.
    rec = recommend(frame(), POLICIES, min_quality=0.7, max_latency_s=2.0)
    assert rec.policy == "quality_at_least 0.7"
    t = rec.table
    assert t.index[0] == "quality_at_least 0.7" and t["recommended"].sum() == 1
    assert not t.loc["cheapest", "meets_latency"] and t.loc["cheapest", "meets_quality"]
    assert not t.loc[f"fixed:{C}", "eligible"] and t.loc[f"fixed:{C}", "unserved"] == 1
    assert "$0.012" in rec.reason and "quality >= 0.7" in rec.reason
    assert "quality_at_least 0.7" in rec._repr_html_()
    # Loosen the latency floor and the cheapest policy wins.
    assert recommend(frame(), POLICIES, min_quality=0.7, max_latency_s=2.2).policy == "cheapest"
    # On the median instead of p95, cheapest (p50 1.4 s) passes too.
    assert recommend(frame(), POLICIES, min_quality=0.7, max_latency_s=2.0,
                     latency_stat="p50").policy == "cheapest"
    none = recommend(frame(), POLICIES, min_quality=1.1)
    assert none.policy is None and "no policy meets" in none.reason
    assert not none.table["recommended"].any()


def test_default_policies_include_each_target_fixed() -> None:
    table = what_if(frame(), min_quality=0.8)
    assert list(table.index) == ["cheapest", "fastest", "best", "quality_at_least 0.8",
                                 f"fixed:{A}", f"fixed:{B}", f"fixed:{C}"]
    assert table.loc[f"fixed:{A}", "unserved"] == 1 and not table.loc[f"fixed:{A}", "eligible"]
    assert table.loc[f"fixed:{B}", "eligible"]


def test_picks_per_case_and_other_policy_shapes() -> None:
    def by_length(case: dict[str, Any]) -> list[str]:
        return [B] if len(case["prompt"]) > 17 else [A, C]

    peru = Rule(target=C, when=lambda req: "Peru" in req.messages[0].content)
    picks = policy_picks(frame(), {"mine": by_length, "peru": ("rules", [peru], f"fixed:{A}")})
    mine = picks[picks["policy"] == "mine"].set_index("case")
    # "Capital of Peru?" is 16 characters, "Capital of Chile?" 17: A, then C when A failed.
    assert mine["target"].to_dict() == {"c1": B, "c2": A, "c3": A, "c4": C}
    assert mine.loc["c4", "fell_back"] and mine.loc["c4", "cost_usd"] == 0.004
    peru = picks[picks["policy"] == "peru"].set_index("case")["target"]
    # C never answered Peru: a rule's target has no fallback; Chile's default is fixed A.
    assert peru.fillna("-").to_dict() == {"c1": A, "c2": "-", "c3": A, "c4": "-"}
    with pytest.raises(ConfigurationError, match="not one of the source's targets"):
        what_if(frame(), ["fixed:v:nope"])
    with pytest.raises(ConfigurationError, match="unknown policy"):
        what_if(frame(), ["priciest"])


def test_tradeoff_table_marks_the_pareto_front() -> None:
    table = tradeoff_table(frame())
    assert list(table.index) == [A, C, B]  # by cost
    assert table.loc[A, "cost_usd"] == pytest.approx(0.001)
    assert table.loc[B, "cost_usd"] == pytest.approx(0.00975)
    assert table.loc[C, "quality"] == pytest.approx(2 / 3)
    assert table.loc[A, "latency_p50_s"] == pytest.approx(1.2)
    assert table["pareto"].to_dict() == {A: True, C: False, B: True}  # A beats C on both
    assert pareto_front([1, 1, 2, float("nan")], [0.5, 0.6, 0.6, 1.0]) == [False, True, False,
                                                                            False]


def test_tradeoff_chart_draws_the_front() -> None:
    fig = tradeoff_chart(frame())
    front, points = fig.data[0], fig.data[1]
    assert front.name == "Pareto front" and list(front.x) == pytest.approx([0.001, 0.00975])
    assert list(points.text) == [A, C, B]
    assert list(points.marker.color) == pytest.approx([1.2, 2.2, 0.65])
    sized = tradeoff_chart(frame(), latency="size")
    assert sized.data[1].marker.size is not None
    with pytest.raises(ValueError, match="no column"):
        tradeoff_chart(frame(), quality="nope")


# -- from the ledger -----------------------------------------------------------------------


def record(prompt: str, vendor: str, model: str, cost: float, latency: float,
           text: str, status: str = "ok") -> CallRecord:
    return CallRecord(call_id=f"{vendor}{model}{prompt}", attempt=1, timestamp=0.0,
                      vendor=vendor, model_requested=model, model_served=model, status=status,
                      latency_s=latency, cost_usd=cost, prompt=prompt, response=text)


def test_what_if_from_ledger_records_grouped_by_prompt() -> None:
    records = [
        record("2+2?", "v", "a", 0.001, 1.0, "4"), record("2+2?", "v", "b", 0.010, 0.4, "4"),
        record("3+3?", "v", "a", 0.001, 1.2, "7"), record("3+3?", "v", "b", 0.010, 0.6, "6"),
        record("3+3?", "v", "a", 0.0, 0.0, "x", status="error"),  # failures are no answers
    ]
    right = {"right": lambda text, row: {"2+2?": "4", "3+3?": "6"}[row["prompt"]] == text}
    table = what_if(records, ["cheapest", "fastest"], evaluators=right)
    assert table.loc["cheapest", "total_cost_usd"] == pytest.approx(0.002)
    assert table.loc["cheapest", "quality"] == pytest.approx(0.5)
    assert table.loc["fastest", "total_cost_usd"] == pytest.approx(0.020)
    assert table.loc["fastest", "quality"] == pytest.approx(1.0)
    assert recommend(records, ["cheapest", "fastest"], evaluators=right,
                     min_quality=0.9).policy == "fastest"


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    with serve(["openai", "anthropic"], time_scale=0) as s:
        yield s


def test_a_sweep_and_its_ledger_replay_to_the_same_figures(sim: SimServer) -> None:
    eps = [Endpoint("openai", "openai", sim.base_url("openai"), key=Secret(CANARY_KEY)),
           Endpoint("anthropic", "anthropic", sim.base_url("anthropic"), key=Secret(CANARY_KEY))]
    ledger = Ledger.memory()
    with Dispatcher(eps, dotenv=False, ledger=ledger, retry=RetryPolicy.none()) as d:
        df = sweep("Capital of {c}?", ["openai:gpt-4o-mini", "anthropic:claude-haiku-4-5"],
                   vars={"c": ["France", "Peru", "Japan"]}, evaluators=[contains("simulated")],
                   dispatcher=d, max_tokens=40, progress=False)
        sent = sim.total_requests()
        from_frame = what_if(df, ["cheapest", "fastest"])
        from_ledger = what_if(d, ["cheapest", "fastest"], evaluators=[contains("simulated")])
    assert sim.total_requests() == sent  # replaying makes no call
    cols = ["cases", "served", "total_cost_usd", "latency_p50_s", "latency_p95_s", "quality"]
    pd.testing.assert_frame_equal(from_frame[cols], from_ledger[cols])
    assert from_frame.loc["cheapest", "picks"] == "openai:gpt-4o-mini x3"
