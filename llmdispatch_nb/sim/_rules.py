"""Per-model parameter rules as the emulated APIs enforce them, in their own words.

What a model accepts comes from the model catalogue (the same rules the adapters apply,
vendors/_rules.py), so demo mode refuses what the real API refuses. Each function raises
`Refused` with the vendor's message; each emulator turns it into its own error body.
Texts are from vendor-protocols.md §11; where the reference marks one unknown (⚠), the
wording is the closest the vendor uses elsewhere.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..catalogue import ModelInfo

DOCS = "https://docs.claude.com/en/docs/build-with-claude/extended-thinking"


class Refused(Exception):
    """A request the model refuses: the message, and OpenAI's `param` and `code`."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.param, self.code = param, code


# -- OpenAI (and Azure) ----------------------------------------------------------------------


def openai_refusal(body: Mapping[str, Any], info: ModelInfo, model: str) -> None:
    """What OpenAI's reasoning models refuse (`info` says what `model` accepts), as the
    API words it (vendor-protocols.md §11.1)."""
    if info.max_completion_tokens and body.get("max_tokens") is not None:
        raise Refused("Unsupported parameter: 'max_tokens' is not supported with this "
                      "model. Use 'max_completion_tokens' instead.", "max_tokens",
                      "unsupported_parameter")
    for name, accepted in (("temperature", info.temperature), ("top_p", info.top_p)):
        v = body.get(name)
        if v is not None and v != 1 and not accepted:
            raise Refused(f"Unsupported value: '{name}' does not support {v} with this "
                          f"model. Only the default (1) value is supported.", name,
                          "unsupported_value")
    refused = [n for n in ("presence_penalty", "frequency_penalty", "logprobs",
                           "top_logprobs", "logit_bias") if body.get(n) is not None]
    if body.get("stop") is not None and not info.stop:
        refused.insert(0, "stop")
    if refused:
        raise Refused(f"Unsupported parameter: '{refused[0]}' is not supported with this "
                      f"model.", refused[0], "unsupported_parameter")
    effort = body.get("reasoning_effort")
    levels = info.reasoning_levels
    if effort is not None and levels and effort not in levels:
        quoted = [f"'{v}'" for v in levels]
        listed = quoted[0] if len(quoted) == 1 else \
            f"{', '.join(quoted[:-1])}{',' if len(quoted) > 2 else ''} and {quoted[-1]}"
        raise Refused(f"Unsupported value: '{effort}' is not supported with the "
                      f"'{model}' model. Supported values are: {listed}.",
                      "reasoning_effort", "unsupported_value")


# -- Anthropic -------------------------------------------------------------------------------


def anthropic_refusal(body: Mapping[str, Any], info: ModelInfo, served: str) -> None:
    """What an Anthropic model refuses (`info` says what `served` accepts), as the API
    words it (vendor-protocols.md §11.2)."""
    for name, accepted in (("temperature", info.temperature), ("top_p", info.top_p),
                           ("top_k", info.temperature)):
        if body.get(name) is not None and not accepted:
            raise Refused(f"`{name}` is deprecated for this model.")
    if info.sampling_one_of and body.get("temperature") is not None \
            and body.get("top_p") is not None:
        raise Refused("`temperature` and `top_p` cannot both be specified for this model. "
                      "Please use only one.")
    thinking = body.get("thinking")
    if thinking is None:
        return
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    if kind not in ("enabled", "adaptive", "disabled"):
        raise Refused("thinking: Input tag does not match any of the expected tags: "
                      "'enabled', 'adaptive', 'disabled'")
    if kind == "disabled":
        return
    if not info.reasoning or info.thinking is None:
        raise Refused(f"thinking: '{served}' does not support thinking.")
    if kind == "adaptive" and info.thinking != "adaptive":
        raise Refused("thinking.type.adaptive is not supported for this model. Use "
                      "thinking.type.enabled with budget_tokens.")
    if kind == "enabled" and info.thinking == "adaptive":
        raise Refused("thinking.type.enabled is not supported for this model. Use "
                      "thinking.type.adaptive and output_config.effort to control "
                      "thinking behavior.")
    if kind == "enabled":
        budget = thinking.get("budget_tokens")
        if not isinstance(budget, int) or isinstance(budget, bool):
            raise Refused("thinking.enabled.budget_tokens: Field required")
        if budget < 1024:
            raise Refused("thinking.enabled.budget_tokens: Input should be greater than or "
                          "equal to 1024")
        if isinstance(body.get("max_tokens"), int) and body["max_tokens"] <= budget:
            raise Refused("`max_tokens` must be greater than `thinking.budget_tokens`. "
                          f"Please consult our documentation at {DOCS}#max-tokens-and-context-window-size")
    temp = body.get("temperature")
    if temp is not None and temp != 1:
        raise Refused("`temperature` may only be set to 1 when thinking is enabled or in "
                      f"adaptive mode. Please consult our documentation at {DOCS}"
                      "#feature-compatibility")
    if body.get("top_k") is not None:
        raise Refused("`top_k` must be unset when thinking is enabled. Please consult our "
                      f"documentation at {DOCS}#feature-compatibility")
    top_p = body.get("top_p")
    if top_p is not None and top_p < 0.95:
        raise Refused("`top_p` must be greater than or equal to 0.95 or unset when thinking "
                      f"is enabled. Please consult our documentation at {DOCS}"
                      "#feature-compatibility")


def anthropic_thinking_tokens(body: Mapping[str, Any], prompt: str) -> int:
    """How long the model thinks (0 without thinking): a few hundred tokens for a short
    question, more at a higher effort, never past budget_tokens. Deterministic per prompt."""
    thinking = body.get("thinking")
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    if not isinstance(thinking, dict) or kind not in ("enabled", "adaptive"):
        return 0
    digest = int(hashlib.sha256(f"{kind}|{prompt}".encode()).hexdigest()[:6], 16)
    config = body.get("output_config")
    effort = config.get("effort") if isinstance(config, dict) else None
    scale = {"low": 0.5, "high": 2.0, "xhigh": 3.0, "max": 4.0}.get(str(effort), 1.0)
    thoughts = int((200 + digest % 600) * scale)
    budget = thinking.get("budget_tokens") if kind == "enabled" else None
    return min(thoughts, budget) if isinstance(budget, int) else thoughts


# -- Gemini ----------------------------------------------------------------------------------


def gemini_thinking_tokens(model: str, info: ModelInfo, config: Mapping[str, Any],
                           text: str) -> int:
    """How many tokens the model thinks for this request, refusing a thinkingConfig the
    model refuses (the catalogue's rules: budget range, levels, whether it can be off)."""
    thinking = config.get("thinkingConfig") or {}
    budget, level = thinking.get("thinkingBudget"), thinking.get("thinkingLevel")
    if budget is not None and level is not None:
        raise Refused("You can only set only one of thinking budget and thinking level.")
    if not info.reasoning:
        if level is not None or (budget is not None and budget != 0):
            raise Refused("Thinking is not supported for this model.")
        return 0
    if level is not None:
        levels = tuple(v.upper() for v in info.reasoning_levels)
        if info.thinking != "level":
            raise Refused("Thinking level is not supported for this model.")
        if str(level).upper() not in levels:
            raise Refused(f"Thinking level {level} is not supported for this model. "
                          f"Supported levels: {', '.join(levels)}.")
    if budget is not None:
        if not isinstance(budget, int) or isinstance(budget, bool):
            raise Refused("* GenerateContentRequest.generation_config.thinking_config."
                          "thinking_budget: must be an integer\n")
        low, high = info.thinking_budget or (1, info.max_output_tokens)
        if budget == 0 and not info.thinking_off:
            raise Refused("Budget 0 is invalid. This model only works in thinking mode.")
        if budget == 0:
            return 0
        if budget != -1 and not low <= budget <= high:
            raise Refused(f"The thinking budget ({budget}) is invalid. Please choose a value "
                          f"between {low} and {high}.")
    # As much as a real model thinks about a short question: a few hundred tokens, more at a
    # higher level; never past a budget. Deterministic per prompt, so replays agree.
    rng = random.Random(f"{model}|{level}|{budget}|{text}")
    spans = {"MINIMAL": (0, 64), "LOW": (150, 600), "MEDIUM": (300, 1500), "HIGH": (600, 3000)}
    lo, hi = spans.get(str(level).upper(), (150, 600))
    thoughts = rng.randint(lo, hi)
    return min(thoughts, budget) if isinstance(budget, int) and budget > 0 else thoughts
