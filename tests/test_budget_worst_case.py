"""A budget reserves what the vendor can bill: the prompt's upper bound (UTF-8 bytes) plus
the answer cap actually sent, or the model's output cap where none is sent; a call whose
worst case does not fit is sent with a max_tokens that fits (policy "fit") or refused.

Concurrent calls with no max_tokens and prompts of Chinese, emoji and digits never spend
past a small budget, counted against the usage the emulators reported, including a server
of this test's own that bills every UTF-8 byte of the prompt as a token."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from llmdispatch_nb import Dispatcher, Request, Response
from llmdispatch_nb.catalogue import DEFAULT_MAX_OUTPUT_TOKENS
from llmdispatch_nb.errors import BudgetExceededError, ConfigurationError, LLMDispatchError
from llmdispatch_nb.ledger import MemoryLedger
from llmdispatch_nb.pricing import PriceBook
from llmdispatch_nb.resilience import Budget, RetryPolicy
from llmdispatch_nb.resilience.budget import MIN_FITTED_TOKENS
from llmdispatch_nb.routing import estimated_input_tokens, prompt_token_bound
from llmdispatch_nb.sim import SimServer
from llmdispatch_nb.sim._openai_wire import Chat
from llmdispatch_nb.sim.openai import OpenAIEmulator
from llmdispatch_nb.vendors import Endpoint, Secret, adapter_for
from tests._resilience_support import dispatcher, fresh, start

from .conftest import CANARY_KEY

HOSTILE = ["汉字的提示" * 120, "🙂🚀👩‍💻" * 90, "31415926535897932384" * 40,
           "日本語のテキストです。" * 80, "mixed 中文 and emoji 🎉 and 0123456789 " * 30]


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    with start() as s:
        yield s


@pytest.fixture(autouse=True)
def _fresh(sim: SimServer) -> None:
    fresh(sim)


def billed(responses: list[Any]) -> float:
    """Dollars the vendors billed: each answer's reported usage at list price."""
    book = PriceBook()
    total = 0.0
    for r in responses:
        if isinstance(r, Response):
            usd = book.cost(r.vendor, r.model, r.usage).usd
            assert usd is not None
            total += usd
    return total


def gather(d: Dispatcher, prompts: list[str], target: str, **params: object) -> list[Any]:
    async def main() -> list[Any]:
        return await asyncio.gather(*(d.asend(p, target, **params) for p in prompts),
                                    return_exceptions=True)

    return asyncio.run(main())


# -- the bound and the worst case -----------------------------------------------------------


@pytest.mark.parametrize("text", [*HOSTILE, "plain English words " * 50, "x"])
def test_the_prompt_bound_holds_where_four_characters_a_token_does_not(text: str) -> None:
    request = Request(text, "openai:gpt-4o")
    bound = prompt_token_bound(request)
    # One token per byte is the most any byte-level or byte-fallback tokenizer makes.
    assert bound >= len(text.encode("utf-8")) >= len(text)
    if text in HOSTILE[:3]:
        assert estimated_input_tokens(request) < len(text)  # the routing estimate undercounts


def test_the_worst_case_is_the_cap_sent_or_the_models_output_cap(sim: SimServer) -> None:
    with dispatcher(sim) as d:
        def worst(target: str, **params: Any) -> Any:
            request = d.request("hi", target, **params)
            return d.router.worst_case(request, d.plan(request).candidates[0])

        mini = worst("openai:gpt-4o-mini")  # OpenAI: nothing sent, the model's cap bounds it
        assert (mini.output_tokens, mini.capped) == (16_384, False)
        assert worst("openai:o4-mini").output_tokens == 100_000  # reasoning bills inside it
        assert (worst("openai:gpt-4o-mini", max_tokens=50).output_tokens,
                worst("openai:gpt-4o-mini", max_tokens=50).capped) == (50, True)
        haiku = worst("anthropic:claude-haiku-4-5")  # the adapter sends its own default
        assert haiku.capped and haiku.output_tokens == 4096
        assert worst("google:gemini-2.5-flash").output_tokens == 65_536
        # Gemini: whatever maxOutputTokens the adapter sends (room for thinking included).
        request = d.request("hi", "google:gemini-2.5-flash", max_tokens=70)
        cand = d.plan(request).candidates[0]
        body = json.loads(adapter_for("gemini").build_request(request, cand.model, cand.endpoint,
                                                              stream=False).content)
        sent = body["generationConfig"]["maxOutputTokens"]
        assert sent >= 70 and worst("google:gemini-2.5-flash", max_tokens=70).output_tokens == sent
        assert mini.usd is not None and mini.usd == pytest.approx(
            (mini.prompt_tokens * 0.15 + 16_384 * 0.60) / 1e6)


def test_an_unknown_model_reserves_the_stated_default(sim: SimServer) -> None:
    with dispatcher(sim) as d:
        d.prices.set_price("openai", "gpt-from-the-future", d.prices.price_of("openai", "gpt-4o"))
        request = d.request("hi", "openai:gpt-from-the-future")
        worst = d.router.worst_case(request, d.plan(request).candidates[0])
        assert (worst.output_tokens, worst.capped) == (DEFAULT_MAX_OUTPUT_TOKENS, False)


# -- the policy -------------------------------------------------------------------------------


def test_fit_reserves_what_room_is_left_and_refuses_below_the_minimum() -> None:
    b = Budget(0.01)
    r = b.reserve_worst(0.001, 1e-6, 100_000)  # $0.101 worst case into $0.01
    assert r.output_tokens is not None and 8_990 < r.output_tokens < 9_000
    assert b.reserved <= 0.01
    with pytest.raises(BudgetExceededError):
        b.reserve_worst(0.0, 1e-6, 100_000)  # fewer than 16 tokens of room left
    r.settle(0.009)  # the answer was shorter: $0.001 is free again
    r2 = b.reserve_worst(0.0, 1e-6, 100_000)
    assert r2.output_tokens is not None and MIN_FITTED_TOKENS <= r2.output_tokens < 1_000
    assert b.spent + b.reserved <= 0.01
    r2.release()
    assert b.reserve_worst(0.0, 1e-6, 500).output_tokens == 500  # fits whole: not lowered


def test_a_callers_own_max_tokens_is_never_lowered_and_refuse_refuses() -> None:
    with pytest.raises(BudgetExceededError):
        Budget(0.01).reserve_worst(0.001, 1e-6, 100_000, fit=False)
    with pytest.raises(BudgetExceededError):
        Budget(0.01, policy="refuse").reserve_worst(0.001, 1e-6, 100_000)
    fits = Budget(0.01, policy="refuse").reserve_worst(0.001, 1e-6, 1_000)
    assert fits.output_tokens == 1_000
    with pytest.raises(ConfigurationError, match="policy"):
        Budget(1.0, policy="shrink")


def test_max_cost_fits_a_call_too() -> None:
    r = Budget().reserve_worst(0.0001, 1e-5, 16_384, max_cost=0.001)
    assert r.output_tokens is not None and r.output_tokens <= 90
    assert r.amount_usd <= 0.001


def test_a_fitted_call_is_sent_with_that_max_tokens_and_says_so(
        sim: SimServer, caplog: pytest.LogCaptureFixture) -> None:
    budget = Budget(0.0005)  # gpt-4o-mini's 16k-token worst case is ~$0.0098
    with dispatcher(sim, budget=budget) as d, caplog.at_level(logging.WARNING):
        r = d.send("Name three rivers.", "openai:gpt-4o-mini")
    said = [x.getMessage() for x in caplog.records if "sent with max_tokens=" in x.getMessage()]
    assert len(said) == 1 and "openai:gpt-4o-mini" in said[0] and "policy='refuse'" in said[0]
    fitted = int(said[0].split("max_tokens=")[1].split()[0])
    assert r.usage.output_tokens <= fitted < 16_384
    assert budget.spent <= 0.0005 and budget.reserved == 0
    with dispatcher(sim, budget=Budget(0.0005, policy="refuse")) as d, \
            pytest.raises(BudgetExceededError):
        d.send("Name three rivers.", "openai:gpt-4o-mini")


# -- concurrent calls never overspend -----------------------------------------------------------


@pytest.mark.parametrize("target", ["openai:gpt-4o-mini", "openai:o4-mini",
                                    "anthropic:claude-haiku-4-5"])
def test_forty_concurrent_calls_without_max_tokens_never_overspend(sim: SimServer,
                                                                   target: str) -> None:
    limit = 0.02
    budget = Budget(limit)
    prompts = [HOSTILE[i % len(HOSTILE)] + f" #{i}" for i in range(40)]
    with dispatcher(sim, budget=budget, retry=RetryPolicy.none()) as d:
        out = gather(d, prompts, target)
    answered = [r for r in out if isinstance(r, Response)]
    assert all(isinstance(r, Response | BudgetExceededError) for r in out), \
        [r for r in out if not isinstance(r, Response | LLMDispatchError)]
    assert answered
    assert billed(out) <= limit
    assert budget.spent <= limit and budget.reserved == 0
    assert budget.spent == pytest.approx(billed(out), abs=1e-9)


class BytesBillingServer(OpenAIEmulator):
    """A server of this test's own that bills every UTF-8 byte of the prompt as a token:
    the most any tokenizer can make of a text (the 4-characters estimate undercounts it)."""

    def usage(self, chat: Chat, completion: int, reasoning: int, cached: int) -> dict[str, Any]:
        u = super().usage(chat, completion, reasoning, cached)
        u["prompt_tokens"] = len(chat.prompt.encode("utf-8"))
        u["total_tokens"] = u["prompt_tokens"] + completion
        return u


@pytest.fixture(scope="module")
def byte_server() -> Iterator[SimServer]:
    server = SimServer({"openai": BytesBillingServer(time_scale=0)}).start()
    try:
        yield server
    finally:
        server.close()


def test_a_server_billing_each_byte_cannot_overspend_forty_concurrent_calls(
        byte_server: SimServer) -> None:
    limit = 0.05
    budget = Budget(limit)
    ep = Endpoint("openai", "openai", byte_server.base_url("openai"), key=Secret(CANARY_KEY))
    prompts = [HOSTILE[i % 3] * 3 + f" #{i}" for i in range(40)]
    with Dispatcher([ep], dotenv=False, budget=budget, retry=RetryPolicy.none(), cache=False,
                    ledger=MemoryLedger()) as d:
        out = gather(d, prompts, "openai:gpt-4o")
    answered = [r for r in out if isinstance(r, Response)]
    assert answered and all(isinstance(r, Response | BudgetExceededError) for r in out)
    for r in answered:  # the server billed about three times the 4-characters estimate
        assert r.usage.input_tokens > 2 * estimated_input_tokens(Request(prompts[0]))
    assert billed(out) <= limit
    assert budget.spent <= limit and budget.reserved == 0


def test_a_fitted_cap_leaves_room_the_adapter_adds_for_thinking(
        sim: SimServer, caplog: pytest.LogCaptureFixture) -> None:
    target = "google:gemini-2.5-flash"
    with dispatcher(sim, budget=Budget(0.004)) as d, caplog.at_level(logging.WARNING):
        request = d.request("Name three rivers.", target)
        cand = d.plan(request).candidates[0]
        room = 1500
        fitted = d.router.fit_to(request, cand, room)
        assert fitted is not None and fitted.max_tokens is not None
        body = json.loads(adapter_for("gemini").build_request(fitted, cand.model, cand.endpoint,
                                                              stream=False).content)
        assert fitted.max_tokens <= body["generationConfig"]["maxOutputTokens"] <= room
        r = d.send("Name three rivers.", target)
        assert d.budget.spent <= 0.004 and d.budget.reserved == 0
    said = [x.getMessage() for x in caplog.records if "sent with max_tokens=" in x.getMessage()]
    assert len(said) == 1 and r.usage.output_tokens > 0
    with dispatcher(sim, budget=Budget(0.002)) as d, \
            pytest.raises(BudgetExceededError, match="room its request keeps for thinking"):
        d.send("Name three rivers.", target)
    assert d.budget.reserved == 0


def test_each_adapters_output_cap_is_the_cap_its_body_sends() -> None:
    # The budget asks adapter.output_cap before every attempt instead of building the body;
    # it must name exactly the cap the body carries (Adapter.output_cap is the body-reading
    # fallback), for every kind of model and parameter the rules treat differently.
    import itertools
    import warnings

    from llmdispatch_nb._types import Request
    from llmdispatch_nb.vendors import Adapter, Endpoint, adapter_for

    cases = {
        "openai": ["gpt-4o-mini", "gpt-5", "o3", "o4-mini", "gpt-4.1", "no-such-model"],
        "azure": ["gpt-4o", "o4-mini", "prod-deployment"],
        "anthropic": ["claude-haiku-4-5", "claude-sonnet-4-5", "claude-opus-4-7", "claude-x"],
        "gemini": ["gemini-2.5-flash", "gemini-2.5-pro", "gemini-3-pro-preview", "gemini-2.0-flash"],
        "compat": ["qwen3:8b", "llama3.2"],
    }
    params = [{}, {"max_tokens": 100}, {"max_tokens": 5000, "reasoning": "high"},
              {"reasoning": 2048}, {"reasoning": "none", "max_tokens": 64},
              {"temperature": 0.2, "top_p": 0.9, "max_tokens": 10}]
    checked = 0
    for kind, models in cases.items():
        adapter = adapter_for(kind)
        for version in ("2024-10-21", "2024-06-01") if kind == "azure" else (None,):
            ep = Endpoint(kind, kind, "http://127.0.0.1:9/v1", api_version=version,
                          route="deployments" if kind == "azure" else "default",
                          deployments={"prod-deployment": "gpt-4o-mini"})
            for model, p in itertools.product(models, params):
                request = Request("Hello", None, **p)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    try:
                        from_body = Adapter.output_cap(adapter, request, model, ep)
                    except Exception:
                        continue  # a request the adapter refuses to build: no cap to compare
                    asked = adapter.output_cap(request, model, ep)
                assert asked == from_body, (kind, version, model, p)
                checked += 1
    assert checked >= 100
