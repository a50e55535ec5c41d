"""Experiments: sweeps over prompts x targets x vars, evaluators, views, what-if routing.

    from llmdispatch_nb.experiments import sweep, contains, llm_judge, pivot, recommend
    df = sweep(["Capital of {country}? One word."], ["openai:gpt-4o-mini", "claude"],
               vars={"country": ["France", "Peru"]}, evaluators=[contains("Paris")])
    pivot(df)                                  # mean score, cost, latency per target
    tradeoff_chart(df)                         # cost vs quality, Pareto front marked
    recommend(df, min_quality=0.8, max_latency_s=2).table

pandas and plotly are imported when a function first needs them, not with this module.
"""

from __future__ import annotations

from ._evaluators import (
    Check,
    LLMJudge,
    ScoreParseError,
    contains,
    cost_under,
    equals,
    field_equals,
    json_schema,
    latency_under,
    length_between,
    llm_judge,
    parse_score,
    regex,
    schema_valid,
    tool_called,
    valid_json,
)
from ._sweep import asweep, describe, sweep
from ._views import pareto_front, pivot, tradeoff_chart, tradeoff_table
from ._whatif import Recommendation, policy_picks, recommend, what_if

__all__ = [
    "Check",
    "LLMJudge",
    "Recommendation",
    "ScoreParseError",
    "asweep",
    "contains",
    "cost_under",
    "describe",
    "equals",
    "field_equals",
    "json_schema",
    "latency_under",
    "length_between",
    "llm_judge",
    "pareto_front",
    "parse_score",
    "pivot",
    "policy_picks",
    "recommend",
    "regex",
    "schema_valid",
    "sweep",
    "tool_called",
    "tradeoff_chart",
    "tradeoff_table",
    "valid_json",
    "what_if",
]
