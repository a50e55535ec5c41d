"""What the catalogue says about one model (`ModelInfo`) and one provider (`ProviderInfo`).

Both are frozen records: a lookup hands out the same answer to adapters, emulators,
the router and the budget, and an override makes a new record rather than editing one
that another thread may be reading.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

# An unknown model gets these (and one warning). Each is on the safe side of what it
# guards: the output cap is large so a budget reserves enough, the rest claim nothing the
# model may lack (no tools, no images, no structured output) except plain sampling, which
# nearly every chat model takes. The context window is only a guess: the router treats an
# unknown model's window as "fits" and lets the vendor's own context error decide.
DEFAULT_CONTEXT_WINDOW = 128_000
DEFAULT_MAX_OUTPUT_TOKENS = 32_768


@dataclass(frozen=True)
class ModelInfo:
    """One model of one vendor, as the catalogue knows it.

    Token figures are tokens; prices are US dollars per million tokens (models.dev's list
    price, used only where genai-prices has none). `source` says where the record came from:
    "models.dev", "override" (yours, merged over the data), or "default" (an unknown model:
    the conservative defaults above)."""

    vendor: str  # our vendor name: openai, anthropic, google, groq, ...
    model: str
    name: str = ""  # the display name ("GPT-5")
    context_window: int = DEFAULT_CONTEXT_WINDOW  # prompt and answer together
    max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS  # answer plus any reasoning tokens
    max_input_tokens: int | None = None  # where the vendor caps the prompt below the window
    reasoning: bool = False  # thinks before answering (and bills those tokens as output)
    temperature: bool = True  # accepts `temperature`
    top_p: bool = True  # accepts `top_p`
    sampling_one_of: bool = False  # takes temperature or top_p, not both in one request
    # Request rules models.dev does not carry (kept in _source.PARAMETER_RULES; the adapters
    # and emulators both read them, vendor-protocols.md §11):
    stop: bool = True  # accepts stop sequences (OpenAI's reasoning models refuse them)
    max_completion_tokens: bool = False  # refuses `max_tokens`: the cap is max_completion_tokens
    # How reasoning is steered: "effort" (OpenAI reasoning_effort), "budget" (a token budget:
    # Anthropic thinking.budget_tokens, Gemini 2.5 thinkingBudget), "adaptive" (Anthropic
    # adaptive thinking + output_config.effort), "level" (Gemini 3 thinkingLevel); None: not.
    thinking: str | None = None
    reasoning_levels: tuple[str, ...] = ()  # the effort/level values accepted, lowest first
    thinking_budget: tuple[int, int] | None = None  # accepted budget range, in tokens
    thinking_off: bool = True  # reasoning can be turned off (0 budget, effort "none", ...)
    tools: bool = False  # tool (function) calling
    structured_output: bool | None = None  # JSON-schema output; None = not stated
    attachments: bool = False  # files/images in the prompt
    input_modalities: tuple[str, ...] = ("text",)
    output_modalities: tuple[str, ...] = ("text",)
    release_date: str | None = None  # ISO date, as published
    knowledge: str | None = None  # training cut-off, as published
    family: str | None = None
    open_weights: bool | None = None
    status: str | None = None  # "deprecated", "beta", ... or None
    price_input: float | None = None  # $/1M, from models.dev (genai-prices is the price source)
    price_output: float | None = None
    source: str = "models.dev"
    extra: tuple[tuple[str, Any], ...] = field(default=(), compare=False)  # your own fields

    @property
    def key(self) -> str:
        return f"{self.vendor}:{self.model}"

    @property
    def known(self) -> bool:
        """False for an unknown model described by the defaults."""
        return self.source != "default"

    @property
    def images(self) -> bool:
        return "image" in self.input_modalities

    def get(self, name: str, default: Any = None) -> Any:
        """A field, or one of the extra fields given to `add(...)`."""
        if name in _FIELD_NAMES:
            return getattr(self, name)
        return dict(self.extra).get(name, default)

    def merged(self, changes: dict[str, Any], source: str = "override") -> ModelInfo:
        """This record with `changes` over it (unknown names go to `extra`)."""
        own = {k: v for k, v in changes.items() if k in _FIELD_NAMES and k not in ("vendor", "model")}
        extra = dict(self.extra)
        extra.update({k: v for k, v in changes.items() if k not in _FIELD_NAMES})
        for name in ("input_modalities", "output_modalities", "reasoning_levels", "thinking_budget"):
            if name in own and own[name] is not None:
                own[name] = tuple(own[name])
        return replace(self, **own, extra=tuple(sorted(extra.items())), source=source)


_FIELD_NAMES = frozenset(f.name for f in fields(ModelInfo))
MODEL_FIELDS = tuple(f.name for f in fields(ModelInfo) if f.name not in ("vendor", "model", "source",
                                                                         "extra"))


@dataclass(frozen=True)
class ProviderInfo:
    """A provider as the catalogue knows it: how to reach it and what it serves.

    `key_variables` are alternative names for its key (the first one set wins);
    `setting_variables` must be set as well (an account id in its URL); `base_url` may hold
    `${VARIABLE}` for them. `openai_compatible` providers become vendors by their key alone."""

    id: str  # the models.dev id, also our vendor name (groq, deepseek, openrouter, ...)
    name: str
    key_variables: tuple[str, ...]
    setting_variables: tuple[str, ...] = ()
    base_url: str | None = None
    openai_compatible: bool = False
    doc: str | None = None
    model_count: int = 0

    def base_url_for(self, env: dict[str, str]) -> str | None:
        """The base URL with its `${VARIABLE}`s filled from `env`; None if one is unset."""
        if self.base_url is None:
            return None
        url = self.base_url
        for var in self.setting_variables:
            token = "${" + var + "}"
            if token in url:
                value = env.get(var, "").strip()
                if not value:
                    return None
                url = url.replace(token, value)
        return url.rstrip("/")

    def missing_settings(self, env: dict[str, str]) -> tuple[str, ...]:
        return tuple(v for v in self.setting_variables if not env.get(v, "").strip())
