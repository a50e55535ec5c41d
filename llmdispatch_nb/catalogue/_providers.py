"""Providers by their own key: every OpenAI-compatible provider the catalogue knows (Groq,
DeepSeek, OpenRouter, Mistral, xAI, Together, Fireworks, Cerebras, ...) becomes a vendor
once its key variable is set, with its base URL and its models; prices come from
genai-prices where it knows the provider, else from models.dev's list price.

    GROQ_API_KEY=...            -> vendor `groq`, target `groq:llama-3.3-70b-versatile`
    GROQ_BASE_URL=http://...    -> the same vendor at another address (a proxy, a test)

A provider whose URL needs a setting of its own (Cloudflare's account id) is configured
only once that is set too; until then `pending(env)` names the missing variable. The five
built-in vendors (and any provider sharing their key variables) keep their own
configuration in `_config.py`: `OLLAMA_API_KEY` does not turn on Ollama's cloud, say.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping
from typing import Any

from ..vendors._base import Endpoint, Secret
from ._model import ProviderInfo

log = logging.getLogger("llmdispatch_nb.catalogue")

# models.dev provider ids -> genai-prices provider ids, where they differ.
PRICE_PROVIDERS = {"xai": "x-ai", "togetherai": "together", "fireworks-ai": "fireworks",
                   "novita-ai": "novita", "cloudflare-workers-ai": "cloudflare"}
_GENAI_PRICES_SAME = frozenset({"cerebras", "deepseek", "groq", "mistral", "moonshotai", "openrouter",
                                "perplexity", "zai", "zhipuai", "baseten", "ovhcloud", "databricks"})

# Names other than a provider's id that people type.
PROVIDER_ALIASES = {"together": "togetherai", "fireworks": "fireworks-ai", "grok": "xai",
                    "x-ai": "xai", "cloudflare": "cloudflare-workers-ai"}


def price_provider(vendor: str) -> str | None:
    """The genai-prices provider id for a catalogue provider, if genai-prices has it."""
    if vendor in PRICE_PROVIDERS:
        return PRICE_PROVIDERS[vendor]
    return vendor if vendor in _GENAI_PRICES_SAME else None


def _builtin_taken() -> tuple[set[str], set[str]]:
    from .._config import VENDOR_ALIASES, VENDORS

    names = set(VENDORS) | set(VENDOR_ALIASES)
    keys = {v for spec in VENDORS.values() for v in (*spec.key_variables, *spec.base_url_variables)}
    return names, keys | {"AZURE_API_KEY", "GOOGLE_GENERATIVE_AI_API_KEY", "AZURE_OPENAI_AD_TOKEN"}


def compatible(catalogue: Any = None) -> list[ProviderInfo]:
    """The OpenAI-compatible providers that can become vendors by their key."""
    from . import CATALOGUE

    cat = catalogue or CATALOGUE
    names, keys = _builtin_taken()
    return [p for p in cat.providers() if p.openai_compatible and p.id not in names
            and p.key_variables and not set(p.key_variables) & keys]


def base_url_variable(provider_id: str) -> str:
    """`groq` -> GROQ_BASE_URL: where a provider's address can be overridden."""
    return provider_id.upper().replace("-", "_").replace(".", "_") + "_BASE_URL"


# $LLMDISPATCH_PROVIDERS: "none" turns no provider on by its key; a list of provider ids
# ("github-models,huggingface") turns those on by a general-purpose token as well.
PROVIDERS_VARIABLE = "LLMDISPATCH_PROVIDERS"


def _opted(env: Mapping[str, str]) -> set[str] | None:
    """Provider ids the user named; None when they turned discovery off."""
    text = env.get(PROVIDERS_VARIABLE, "").strip()
    if text.lower() in ("none", "off", "0", "false"):
        return None
    return {PROVIDER_ALIASES.get(t.strip(), t.strip()) for t in text.split(",") if t.strip()}


def _worth_reading(env: Mapping[str, str]) -> bool:
    if _opted(env) is None:
        return False
    return bool(env.get(PROVIDERS_VARIABLE, "").strip()) or any(
        k.endswith("_KEY") and v.strip() for k, v in env.items())


def _key(env: Mapping[str, str], p: ProviderInfo) -> tuple[str, str] | None:
    """(variable, value) of the first key variable set that may turn `p` on.

    A variable that ends in _KEY names a key for that service alone; a token such as
    GITHUB_TOKEN or HF_TOKEN is set for other reasons too (CI, model downloads), so it
    turns its provider on only when $LLMDISPATCH_PROVIDERS names the provider: a machine
    with GITHUB_TOKEN set must not leave demo mode for GitHub Models by surprise."""
    opted = _opted(env)
    if opted is None:
        return None
    for var in p.key_variables:
        value = env.get(var, "").strip()
        if value and (var.endswith("_KEY") or p.id in opted):
            return var, value
    return None


def _plain_key(value: str, variable: str) -> Secret:
    return Secret(value)


def _plain_url(value: str, variable: str) -> str:
    return value


def endpoints(env: Mapping[str, str], taken: Collection[str] = (), catalogue: Any = None, *,
              key: Callable[[str, str], Secret] = _plain_key,
              url: Callable[[str, str], str] = _plain_url) -> list[Endpoint]:
    """An endpoint for each compatible provider whose key (and any setting) `env` sets.

    `key(value, variable)` and `url(value, variable)` check what is read (the config's own
    checks: a bad one is an error naming its variable). Nothing is read from the
    catalogue unless some variable ending in _KEY is set (or $LLMDISPATCH_PROVIDERS), so a
    process with no provider keys never pays for the data."""
    if not _worth_reading(env):
        return []
    out: list[Endpoint] = []
    for p in compatible(catalogue):
        found = _key(env, p)
        if found is None or p.id in taken:
            continue
        variable = base_url_variable(p.id)
        base = env.get(variable, "").strip()
        if not base:
            base = p.base_url_for(dict(env)) or ""
            variable = " and ".join(p.setting_variables) or f"the catalogue's base URL of {p.id}"
        if not base:
            continue  # a setting is missing: `pending` says which
        models = _model_ids(p.id, catalogue)
        out.append(Endpoint(p.id, "compat", url(base, variable).rstrip("/"),
                            key=key(found[1], found[0]), models=models,
                            default_model=_default_model(p.id, models, catalogue)))
    return out


def pending(env: Mapping[str, str], catalogue: Any = None) -> dict[str, tuple[str, ...]]:
    """Providers whose key is set but that need another variable: {id: (variables,)}."""
    if not _worth_reading(env):
        return {}
    out = {}
    for p in compatible(catalogue):
        if _key(env, p) is not None and not env.get(base_url_variable(p.id), "").strip():
            missing = p.missing_settings(dict(env))
            if missing:
                out[p.id] = missing
    return out


def simulated(base_url: str, env: Mapping[str, str], key: Secret, taken: Collection[str] = (),
              catalogue: Any = None) -> list[Endpoint]:
    """Demo mode: the providers whose key is set, and those $LLMDISPATCH_PROVIDERS names
    (to try one with no key at all), served by the OpenAI-wire emulator at `base_url` (its
    `/providers/<id>/v1` paths), labelled as simulated."""
    real = {ep.name for ep in endpoints(env, taken, catalogue)} | set(pending(env, catalogue))
    real |= _opted(env) or set()
    if not real:
        return []  # no provider key: the catalogue is not read at all
    out = []
    for p in compatible(catalogue):
        if p.id in real:
            models = _model_ids(p.id, catalogue)
            out.append(Endpoint(p.id, "compat", f"{base_url.rstrip('/')}/providers/{p.id}/v1",
                                key=key, models=models, simulated=True,
                                default_model=_default_model(p.id, models, catalogue)))
    return out


def missing_key_variables(vendor: str, catalogue: Any = None) -> tuple[str, ...] | None:
    """What to set for a provider that is not configured (None: not a known provider)."""
    from . import CATALOGUE

    name = PROVIDER_ALIASES.get(vendor, vendor)
    names, keys = _builtin_taken()
    if name in names:
        return None
    p = (catalogue or CATALOGUE).provider(name)
    if p is None or not p.openai_compatible or not p.key_variables or set(p.key_variables) & keys:
        return None
    names_ = " or ".join(p.key_variables)
    if p.setting_variables:
        return (f"{names_} and {' and '.join(p.setting_variables)}",)
    return p.key_variables


def _model_ids(pid: str, catalogue: Any) -> tuple[str, ...]:
    from . import CATALOGUE

    return tuple(m.model for m in (catalogue or CATALOGUE).models(pid)
                 if "text" in m.output_modalities)


def _default_model(pid: str, models: tuple[str, ...], catalogue: Any) -> str | None:
    """The newest model that chats and calls tools, else the newest at all."""
    from . import CATALOGUE

    cat = catalogue or CATALOGUE
    for m in models:
        info = cat.lookup(pid, m, warn=False)
        if info.tools and info.status != "deprecated":
            return m
    return models[0] if models else None
