"""Per-model parameter rules: what one model is sent of what the user asked, in one place.

Every adapter asks `parameters_for(request, vendor, model)` before it spells a body, and
the catalogue (`llmdispatch_nb.catalogue`) says what the model accepts. The policy:

- A parameter the model does not accept is dropped, with one `ParameterWarning` naming the
  model and the parameter (Python shows each distinct warning once). With
  `strict_params=True` on the call (or $LLMDISPATCH_STRICT_PARAMS=1) it is a
  `RequestValidationError` instead, and nothing is sent.
- A model that takes only one of temperature/top_p gets the one the user set; both set:
  temperature is kept, top_p dropped (warned).
- `reasoning=` ("none"/"minimal"/"low"/"medium"/"high", or a thinking budget in tokens)
  becomes the model's own knob: an effort (OpenAI `reasoning_effort`, Anthropic adaptive
  `output_config.effort`, Gemini 3 `thinkingLevel`) or a budget (Anthropic
  `thinking.budget_tokens`, Gemini 2.5 `thinkingBudget`). A level the model lacks becomes
  its nearest one, a budget outside its range the nearest bound (warned); a model that
  does not reason drops it (warned), except "none", which asks for nothing.
- Thinking is billed as output and counted inside the cap the vendor is sent. Where a
  budget is known (Anthropic, Gemini), `max_tokens` means the visible answer: the cap sent
  is max_tokens + the budget (at most the model's output cap). On Gemini a `max_tokens`
  without `reasoning=` pins the thinking to `DEFAULT_THINKING` so that it cannot eat the
  answer. OpenAI's reasoning_effort has no token figure: there max_tokens caps both.
  (So on Gemini and Anthropic an answer may run past max_tokens when the model thinks less
  than its budget; the vendor still bills at most the cap sent, which the budget reserves,
  since routing reads the cap from the body the adapter builds.)
- Anthropic's thinking wants temperature unset (or 1) and top_p >= 0.95: others are
  dropped (warned) while it is on.

A model the catalogue does not know is sent what was asked (the server decides), with
`reasoning=` as the wire's usual knob.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field

from .._types import REASONING_LEVELS, Request
from ..catalogue import ModelInfo, lookup
from ..errors import RequestValidationError

STRICT_VARIABLE = "LLMDISPATCH_STRICT_PARAMS"

# Levels in order, so a level a model lacks becomes its nearest one.
LEVEL_ORDER = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
# A level as a thinking budget (for budget-steered models), and back (for level-steered).
LEVEL_BUDGETS = {"none": 0, "minimal": 512, "low": 1024, "medium": 4096, "high": 16384}
# Gemini with max_tokens but no reasoning=: thinking pinned to this, so the answer keeps
# its max_tokens (Gemini's own default is dynamic thinking inside the same cap).
DEFAULT_THINKING = "low"
# Anthropic's top_p floor while thinking (its budget floor, 1024, is in the catalogue).
ANTHROPIC_THINKING_MIN_TOP_P = 0.95


class ParameterWarning(UserWarning):
    """A parameter was not sent because the model does not accept it (or was adjusted)."""


@dataclass
class Parameters:
    """What one model is sent, in our words; each adapter spells it on its wire."""

    vendor: str
    model: str
    max_tokens: int | None  # the cap to send (answer + any thinking budget), None: none
    max_tokens_field: str  # OpenAI wire: "max_completion_tokens" or "max_tokens"
    temperature: float | None
    top_p: float | None
    stop: tuple[str, ...]
    effort: str | None = None  # reasoning_effort / adaptive effort / thinkingLevel
    budget: int | None = None  # budget_tokens / thinkingBudget (0: thinking off)
    thinking: str | None = None  # how `effort`/`budget` are to be spelt ("effort", ...)
    notes: list[str] = field(default_factory=list)  # what was dropped or adjusted


def strict(request: Request) -> bool:
    return request.strict_params or os.environ.get(STRICT_VARIABLE, "").strip() in ("1", "true")


def parameters_for(request: Request, vendor: str, model: str, *, max_tokens_field: str = "max_tokens",
                   default_max_tokens: int | None = None, quiet: bool = False) -> Parameters:
    """The parameters `vendor`'s `model` is sent for `request` (see the module docstring).

    `vendor` is the catalogue's name (openai, azure, anthropic, google, groq, ...);
    `default_max_tokens` is a cap the wire requires when the user gave none (Anthropic).
    `quiet`: only asking (the budget reads the cap before the request is built), so a drop
    is noted but neither warned nor, in strict mode, raised: building the request does that."""
    info = lookup(vendor, model, warn=False)
    out = Parameters(vendor, model, request.max_tokens, max_tokens_field, request.temperature,
                     request.top_p, request.stop)
    rules = _Rules(out, request, quiet)
    if not info.known:
        if request.reasoning is not None:
            _generic_reasoning(out, request.reasoning, vendor)
        out.max_tokens = out.max_tokens if out.max_tokens is not None else default_max_tokens
        return out
    if info.max_completion_tokens:
        out.max_tokens_field = "max_completion_tokens"
    # A model that takes only the default gets nothing sent; asking for the default itself
    # (1, as a panel slider left alone does) loses nothing, so it is not warned about.
    if not info.temperature and out.temperature is not None:
        if out.temperature != 1:
            rules.drop("temperature", "it takes only its default")
        out.temperature = None
    if not info.top_p and out.top_p is not None:
        if out.top_p != 1:
            rules.drop("top_p", "it takes only its default")
        out.top_p = None
    if info.sampling_one_of and out.temperature is not None and out.top_p is not None:
        rules.drop("top_p", "it takes temperature or top_p, not both; temperature is kept")
        out.top_p = None
    if not info.stop and out.stop:
        rules.drop("stop", "it does not take stop sequences")
        out.stop = ()
    _reasoning(out, rules, info, request, default_max_tokens)
    if out.max_tokens is None:
        out.max_tokens = default_max_tokens
    return out


class _Rules:
    """Drops and adjustments for one request: warned, or raised in strict mode."""

    def __init__(self, out: Parameters, request: Request, quiet: bool = False) -> None:
        self.out, self.strict, self.quiet = out, strict(request), quiet

    def drop(self, name: str, why: str) -> None:
        self.say(f"{self.out.vendor}:{self.out.model} does not accept {name} ({why}); "
                 f"it was not sent")

    def adjust(self, text: str) -> None:
        self.say(f"{self.out.vendor}:{self.out.model}: {text}")

    def say(self, text: str) -> None:
        if self.quiet:
            self.out.notes.append(text)
            return
        if self.strict:
            raise RequestValidationError(f"{text.replace('; it was not sent', '')}; "
                                         f"strict_params is on, so nothing was sent")
        self.out.notes.append(text)
        warnings.warn(f"{text} (strict_params=True makes this an error)", ParameterWarning,
                      stacklevel=2)


def _generic_reasoning(out: Parameters, reasoning: str | int, vendor: str) -> None:
    """An uncatalogued model: the wire's usual knob, as asked."""
    if isinstance(reasoning, int):
        out.budget, out.effort = reasoning, _level_of_budget(reasoning)
    else:
        out.effort, out.budget = reasoning, LEVEL_BUDGETS[reasoning]
    out.thinking = "generic"


def _level_of_budget(budget: int) -> str:
    for level in ("none", "minimal", "low", "medium"):
        if budget <= LEVEL_BUDGETS[level]:
            return level
    return "high"


def _nearest(level: str, accepted: tuple[str, ...]) -> str:
    rank = LEVEL_ORDER.index(level) if level in LEVEL_ORDER else LEVEL_ORDER.index("medium")
    return min(accepted, key=lambda a: (abs(LEVEL_ORDER.index(a) - rank) if a in LEVEL_ORDER
                                        else 99, -LEVEL_ORDER.index(a) if a in LEVEL_ORDER else 0))


def _reasoning(out: Parameters, rules: _Rules, info: ModelInfo, request: Request,
               default_max_tokens: int | None) -> None:
    asked = request.reasoning
    gemini = info.vendor in ("google", "gemini") and info.thinking in ("budget", "level")
    pinned = asked is None and gemini and request.max_tokens is not None
    if pinned:
        asked = DEFAULT_THINKING
    if asked is None:
        return
    off = asked == 0 or asked == "none"
    if not info.reasoning or info.thinking is None:
        if not off and info.reasoning:
            _generic_reasoning(out, asked, info.vendor)  # reasons, steered some other way
        elif not off:
            rules.drop("reasoning", "it does not reason")
        return
    if off and not info.thinking_off:
        least = info.reasoning_levels[0] if info.reasoning_levels else \
            f"a budget of {info.thinking_budget[0] if info.thinking_budget else 1}"
        rules.adjust(f"reasoning cannot be turned off; it gets its least ({least})")
    reserve = 0  # thinking tokens to add to the cap, so max_tokens stays the answer's
    if info.thinking in ("effort", "level", "adaptive"):
        level = asked if isinstance(asked, str) else _level_of_budget(asked)
        if off and info.thinking_off:
            if info.thinking == "effort":
                out.thinking, out.effort = "effort", "none"
            return  # Anthropic/Gemini: thinking off is simply not asked for
        accepted = info.reasoning_levels or ("low", "medium", "high")
        if level not in accepted:
            near = _nearest(level, accepted)
            if not off:
                rules.adjust(f"reasoning {level!r} is not one of its levels "
                             f"({', '.join(accepted)}); {near!r} was sent")
            level = near
        out.thinking, out.effort = info.thinking, level
        if gemini:  # a level has no token figure: its budget's worth is set aside
            reserve = LEVEL_BUDGETS.get(level, LEVEL_BUDGETS["high"])
    else:  # a thinking budget (Anthropic, Gemini 2.5)
        budget = asked if isinstance(asked, int) else LEVEL_BUDGETS[asked]
        low, high = info.thinking_budget or (1, info.max_output_tokens - 1)
        if budget == 0 and info.thinking_off:
            if not gemini:
                return  # Anthropic: thinking is off unless asked for
            out.thinking, out.budget = "budget", 0
            return
        if not low <= budget <= high:
            bound = min(max(budget, low), high)
            if not off:
                rules.adjust(f"a thinking budget of {budget} is outside its range "
                             f"{low}-{high}; {bound} was sent")
            budget = bound
        out.thinking, out.budget = "budget", budget
        reserve = budget
    answer = request.max_tokens if request.max_tokens is not None else default_max_tokens
    if reserve and answer is not None:
        # max_tokens is the visible answer: the cap sent makes room for the thinking too.
        out.max_tokens = min(answer + reserve, info.max_output_tokens)
        if out.budget and out.max_tokens <= out.budget:  # no room under the model's cap
            low = info.thinking_budget[0] if info.thinking_budget else 1
            out.budget = max(low, out.max_tokens // 2)
    if pinned:
        out.notes.append(f"thinking set to {DEFAULT_THINKING!r} so that max_tokens stays the "
                         f"answer's")
    if info.vendor == "anthropic" and out.thinking is not None:
        if out.temperature is not None and out.temperature != 1:
            rules.drop("temperature", "not while thinking; only 1 or unset")
            out.temperature = None
        if out.top_p is not None and out.top_p < ANTHROPIC_THINKING_MIN_TOP_P:
            rules.drop("top_p", f"below {ANTHROPIC_THINKING_MIN_TOP_P} while thinking")
            out.top_p = None


__all__ = ["DEFAULT_THINKING", "LEVEL_BUDGETS", "REASONING_LEVELS", "STRICT_VARIABLE",
           "ParameterWarning", "Parameters", "parameters_for", "strict"]
