"""The OpenAI-compatible providers of the catalogue (Groq, DeepSeek, OpenRouter, ...),
emulated by the OpenAI-wire emulator under `/providers/<id>/v1/...`.

Each provider serves the models the catalogue lists for it, with the catalogue's limits
and an ordinary pace; the path says which provider a request is for, kept in a context
variable for the length of the request so the emulator's model lookups see it.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from ._core import Profile

# The provider the current request's path names (None: the emulator's own models).
CURRENT_PROVIDER: ContextVar[str | None] = ContextVar("llmdispatch_sim_provider", default=None)

_PACE = {"ttft_s": 0.30, "tokens_per_s": 150.0}  # a fast hosted open-weights model


def provider_profile(provider: str, model: str) -> Profile | None:
    """The profile of `model` as `provider` serves it, or None if the catalogue lacks it."""
    from ..catalogue import CATALOGUE

    if not CATALOGUE.knows(provider, model):
        return None
    info = CATALOGUE.lookup(provider, model)
    created = _created(info.release_date)
    return Profile(model, _PACE["ttft_s"], _PACE["tokens_per_s"], created=created,
                   vendor=provider, model=model)


def provider_cards(provider: str) -> list[dict[str, Any]]:
    from ..catalogue import CATALOGUE

    return [{"id": m.model, "object": "model", "created": _created(m.release_date),
             "owned_by": provider} for m in CATALOGUE.models(provider)]


def known_provider(provider: str) -> bool:
    from ..catalogue import CATALOGUE

    p = CATALOGUE.provider(provider)
    return p is not None and p.openai_compatible


def _created(date: str | None) -> int:
    from datetime import UTC, datetime

    try:
        return int(datetime.fromisoformat(date or "").replace(tzinfo=UTC).timestamp())
    except ValueError:
        return 1_715_000_000
