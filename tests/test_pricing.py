"""PriceBook: the fast path agrees with genai-prices to the cent-fraction, overrides win,
local servers are free, unknown is None (never $0)."""

from __future__ import annotations

import pytest
from genai_prices import Usage as GPUsage
from genai_prices import calc_price

from llmdispatch_nb import Price, PriceBook, Usage

MODELS = [("openai", "openai", "gpt-4o-mini"), ("openai", "openai", "gpt-4o"),
          ("anthropic", "anthropic", "claude-sonnet-4-5"), ("anthropic", "anthropic", "claude-haiku-4-5"),
          ("google", "google", "gemini-2.5-flash"), ("google", "google", "gemini-2.5-pro")]
USAGES = [Usage(1000, 500), Usage(1000, 500, cache_read_tokens=200), Usage(250_000, 100),
          Usage(3000, 10, cache_write_tokens=1000), Usage(0, 0), Usage(199_999, 1)]


@pytest.mark.parametrize(("vendor", "provider", "model"), MODELS)
@pytest.mark.parametrize("usage", USAGES)
def test_cost_matches_genai_prices(vendor: str, provider: str, model: str, usage: Usage) -> None:
    ours = PriceBook().cost(vendor, model, usage)
    ref = calc_price(GPUsage(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
                             cache_read_tokens=usage.cache_read_tokens or None,
                             cache_write_tokens=usage.cache_write_tokens or None),
                     model, provider_id=provider)
    assert ours.source == "genai-prices"
    assert ours.usd == pytest.approx(float(ref.total_price), rel=1e-12, abs=1e-15)


def test_overrides_win_per_model_and_per_vendor() -> None:
    pb = PriceBook()
    pb.set_price("openai", "gpt-4o-mini", Price.per_1k(0.001, 0.002))
    c = pb.cost("openai", "gpt-4o-mini", Usage(1000, 1000))
    assert (c.usd, c.source) == (pytest.approx(0.003), "override")
    pb.set_price("ollama", "*", Price(1.0, 2.0))
    assert pb.cost("ollama", "llama3.2", Usage(1_000_000, 0), free=True).usd == pytest.approx(1.0)


def test_local_servers_are_free_and_unknown_is_none_not_zero() -> None:
    pb = PriceBook()
    assert pb.cost("ollama", "llama3.2", Usage(10, 10), kind="compat", free=True).usd == 0.0
    unknown = pb.cost("openai", "no-such-model-x", Usage(10, 10))
    assert unknown.usd is None and unknown.source == "unknown" and not unknown.known
    assert pb.cost("local", "m", Usage(10, 10), kind="compat").usd is None


def test_estimate_uses_list_prices() -> None:
    pb = PriceBook()
    cheap = pb.estimate("openai", "gpt-4o-mini", 1000, 1000)
    dear = pb.estimate("openai", "gpt-4o", 1000, 1000)
    assert cheap is not None and dear is not None and cheap < dear
    assert pb.estimate("openai", "no-such-model-x", 1000, 1000) is None
