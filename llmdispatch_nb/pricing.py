"""What a call cost: genai-prices' kept-current list prices behind a small `PriceBook`.

User overrides win; Azure deployments are priced through the model they map to; local
servers are free unless priced; an unknown price is `None` (source "unknown"), never $0.
genai-prices is imported on the first price asked for, not with the package.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from ._types import Cost, Usage


@dataclass(frozen=True)
class Price:
    """US dollars per million tokens."""

    input: float
    output: float
    cache_read: float | None = None
    cache_write: float | None = None

    @classmethod
    def per_1k(cls, input: float, output: float, cache_read: float | None = None,
               cache_write: float | None = None) -> Price:
        k = 1000.0
        return cls(input * k, output * k, None if cache_read is None else cache_read * k,
                   None if cache_write is None else cache_write * k)

    def cost(self, u: Usage) -> float:
        cr = self.cache_read if self.cache_read is not None else self.input
        cw = self.cache_write if self.cache_write is not None else self.input
        fresh = max(0, u.input_tokens - u.cache_read_tokens - u.cache_write_tokens)
        return (fresh * self.input + u.cache_read_tokens * cr + u.cache_write_tokens * cw
                + u.output_tokens * self.output) / 1e6


def price_provider(vendor: str) -> str | None:
    """genai-prices' id for a provider of the model catalogue (groq, deepseek, ...)."""
    from .catalogue._providers import price_provider as of_catalogue

    return of_catalogue(vendor)


def listed_cost(vendor: str, model: str, usage: Usage) -> Cost:
    """Where genai-prices has no price: the model catalogue's list price (models.dev's),
    source "models.dev"; else unknown."""
    from .catalogue import CATALOGUE

    try:
        info = CATALOGUE.lookup(vendor, model, warn=False)
    except Exception:  # a catalogue problem must never fail the call it prices
        return Cost(None, "unknown")
    if not info.known or info.price_input is None or info.price_output is None:
        return Cost(None, "unknown")
    return Cost(Price(info.price_input, info.price_output).cost(usage), "models.dev")


# Our vendor names -> genai-prices provider ids.
PROVIDERS = {"openai": "openai", "azure": "openai", "anthropic": "anthropic", "google": "google",
             "gemini": "google"}


class PriceBook:
    def __init__(self, overrides: dict[tuple[str, str], Price] | None = None) -> None:
        self._overrides: dict[tuple[str, str], Price] = dict(overrides or {})
        self._memo: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    def set_price(self, vendor: str, model: str, price: Price) -> None:
        """Price `vendor:model` yourself (`model="*"` prices every model of a vendor)."""
        with self._lock:
            self._overrides[(vendor, model)] = price
            self._memo.clear()

    def _override(self, vendor: str, model: str) -> Price | None:
        return self._overrides.get((vendor, model)) or self._overrides.get((vendor, "*"))

    def cost(self, vendor: str, model: str, usage: Usage, *, kind: str | None = None,
             free: bool = False) -> Cost:
        """Price `usage` for `model` (already mapped from any deployment name)."""
        override = self._override(vendor, model)
        if override is not None:
            return Cost(override.cost(usage), "override")
        if free:
            return Cost(0.0, "free")
        provider = PROVIDERS.get(kind or vendor) or PROVIDERS.get(vendor) or price_provider(vendor)
        if provider is None:
            return listed_cost(vendor, model, usage)
        fast = self._fast_cost(provider, model, usage)
        if fast is not None:
            return Cost(fast, "genai-prices")
        try:
            from genai_prices import Usage as GPUsage
            from genai_prices import calc_price

            result = calc_price(
                GPUsage(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
                        cache_read_tokens=usage.cache_read_tokens or None,
                        cache_write_tokens=usage.cache_write_tokens or None),
                model, provider_id=provider)
        except LookupError:
            return listed_cost(vendor, model, usage)
        except Exception:  # a price table problem must never fail the call it prices
            return Cost(None, "unknown")
        return Cost(float(result.total_price), "genai-prices")

    def _fast_cost(self, provider: str, model: str, u: Usage) -> float | None:
        """The same figure genai-prices gives, from its rates cached per model.

        Its full `calc_price` costs ~0.2 ms a call (unit registry work), as much as a
        loopback round trip. For flat per-token rates the arithmetic is all there is; tiered
        rates below their first tier use the base rate; anything else (a tier reached, a
        cache rate the model lacks, an unknown model) returns None and takes the full path.
        """
        rates = self._rates(provider, model)
        if rates is None:
            return None
        inp, out, cr, cw, first_tier = rates
        if inp is None or out is None or (first_tier is not None and u.input_tokens >= first_tier):
            return None
        if (u.cache_read_tokens and cr is None) or (u.cache_write_tokens and cw is None):
            return None
        fresh = u.input_tokens - u.cache_read_tokens - u.cache_write_tokens
        if fresh < 0:
            return None
        return (fresh * inp + u.cache_read_tokens * (cr or 0.0) + u.cache_write_tokens * (cw or 0.0)
                + u.output_tokens * out) / 1e6

    _RATES_TTL_S = 3600.0  # prices can change by date; re-read the snapshot hourly

    def _rates(self, provider: str, model: str) -> tuple[Any, ...] | None:
        import time as _time

        key = ("rates", provider + ":" + model)
        hit = self._memo.get(key)
        if hit is not None and _time.monotonic() - hit[0] < self._RATES_TTL_S:
            cached: tuple[Any, ...] | None = hit[1]
            return cached
        rates: tuple[Any, ...] | None = None
        try:
            from datetime import datetime

            from genai_prices import data_snapshot

            _, info = data_snapshot.get_snapshot().find_provider_model(model, None, provider, None)
            mp = info.get_prices(datetime.now(UTC))
            tiers: list[int] = []

            def rate(name: str) -> float | None:
                v = getattr(mp, name, None)
                if v is None:
                    return None
                base = getattr(v, "base", None)
                if base is not None:  # TieredPrices
                    tiers.extend(t.start for t in v.tiers)
                    return float(base)
                return float(v)

            rates = (rate("input_mtok"), rate("output_mtok"), rate("cache_read_mtok"),
                     rate("cache_write_mtok"), min(tiers) if tiers else None)
        except Exception:  # unknown model, or a snapshot shape we do not know: full path
            rates = None
        with self._lock:
            self._memo[key] = (_time.monotonic(), rates)
        return rates

    def warm(self, pairs: Iterable[tuple[str, str]] = ()) -> None:
        """Load the price table (about 0.4 s, once per process) and the rates of `pairs`
        ((vendor, model)) now, so the first call does not pay for it on the event loop."""
        try:
            from genai_prices import data_snapshot

            data_snapshot.get_snapshot()
        except Exception:  # pricing then falls back to "unknown", as on any lookup error
            return
        for vendor, model in pairs:
            provider = PROVIDERS.get(vendor)
            if provider is not None:
                self._rates(provider, model)

    def price_of(self, vendor: str, model: str, *, kind: str | None = None,
                 free: bool = False) -> Price | None:
        """Per-million list price, for estimates before sending (None when unknown)."""
        override = self._override(vendor, model)
        if override is not None:
            return override
        if free:
            return Price(0.0, 0.0)
        key = (vendor, model)
        if key in self._memo:
            return self._memo[key]
        million = Usage(input_tokens=1_000_000, output_tokens=0)
        c_in = self.cost(vendor, model, million, kind=kind)
        c_out = self.cost(vendor, model, Usage(input_tokens=0, output_tokens=1_000_000), kind=kind)
        price = None
        if c_in.usd is not None and c_out.usd is not None:
            price = Price(c_in.usd, c_out.usd)
        self._memo[key] = price
        return price

    def estimate(self, vendor: str, model: str, input_tokens: int, max_output_tokens: int, *,
                 kind: str | None = None, free: bool = False) -> float | None:
        p = self.price_of(vendor, model, kind=kind, free=free)
        if p is None:
            return None
        return (input_tokens * p.input + max_output_tokens * p.output) / 1e6
