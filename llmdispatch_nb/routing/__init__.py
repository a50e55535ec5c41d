"""Targets -> ordered candidates: which vendor and model serve a request, and in what order."""

from ._groups import (
    DEFAULT_MAX_TOKENS,
    ContextWindows,
    Rule,
    estimated_input_tokens,
    pricing_model,
    prompt_token_bound,
)
from ._strategies import STRATEGIES, LatencyTracker, Plan, Router, StrategyFn, WorstCase
from ._targets import BUILTIN_ALIASES, FAMILIES, Candidate, TargetResolver

__all__ = [
    "BUILTIN_ALIASES",
    "DEFAULT_MAX_TOKENS",
    "FAMILIES",
    "STRATEGIES",
    "Candidate",
    "ContextWindows",
    "LatencyTracker",
    "Plan",
    "Router",
    "Rule",
    "StrategyFn",
    "TargetResolver",
    "WorstCase",
    "estimated_input_tokens",
    "pricing_model",
    "prompt_token_bound",
]
