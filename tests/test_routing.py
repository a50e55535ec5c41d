"""Routing: groups, fallbacks, strategies, rules and context-window fit.

Pure planning: endpoints are configured but nothing is sent. Prices and context windows
are the real ones from genai-prices.
"""

from __future__ import annotations

import collections

import pytest

from llmdispatch_nb._types import Request
from llmdispatch_nb.errors import (
    ConfigurationError,
    MissingKeyError,
    RequestValidationError,
    UnknownTargetError,
)
from llmdispatch_nb.pricing import Price, PriceBook
from llmdispatch_nb.routing import (
    Candidate,
    ContextWindows,
    LatencyTracker,
    Plan,
    Router,
    Rule,
    TargetResolver,
)
from llmdispatch_nb.vendors import Endpoint

ENDPOINTS = {
    "openai": Endpoint("openai", "openai", "http://127.0.0.1:1/v1", default_model="gpt-4o-mini"),
    "azure": Endpoint("azure", "azure", "http://127.0.0.1:2",
                      deployments={"prod-4o": "gpt-4o", "old-4": "gpt-4"}),
    "anthropic": Endpoint("anthropic", "anthropic", "http://127.0.0.1:3"),
    "google": Endpoint("google", "gemini", "http://127.0.0.1:4"),
    "ollama": Endpoint("ollama", "compat", "http://127.0.0.1:5/v1", priced=False,
                       models=("llama3.2",)),
}


def resolver(**kw: object) -> TargetResolver:
    return TargetResolver(ENDPOINTS, **kw)  # type: ignore[arg-type]


def keys(cands: list[Candidate]) -> list[str]:
    return [c.key for c in cands]


def prompt_of(tokens: int) -> str:
    # The estimate is 4 characters a token, over `Request.prompt_text`, which puts a
    # newline after the (empty) system prompt: one character less makes it exact.
    return "x" * (tokens * 4 - 1)


# -- targets and groups -------------------------------------------------------------------


def test_plain_targets_still_resolve() -> None:
    r = resolver()
    assert keys(r.resolve("openai:gpt-4o")) == ["openai:gpt-4o"]
    assert keys(r.resolve("gpt-4o")) == ["openai:gpt-4o", "azure:gpt-4o"]
    assert r.resolve("claude")[0].reason == "alias claude"
    assert keys(r.resolve("llama3.2")) == ["ollama:llama3.2"]


def test_group_expands_to_its_members_in_order() -> None:
    plan = Router(resolver(), groups={"gpt4o": ["openai:gpt-4o", "azure:prod-4o"]}).plan(
        Request("hi", "gpt4o"))
    assert keys(plan.candidates) == ["openai:gpt-4o", "azure:prod-4o"]
    assert [c.reason for c in plan.candidates] == ["group gpt4o", "group gpt4o"]
    assert plan.target == "gpt4o"


def test_groups_nest_through_aliases_and_deduplicate() -> None:
    r = resolver(aliases={"fast": "cheap"},
                 groups={"cheap": ["openai:gpt-4o-mini", "gemini"],
                         "all": ["cheap", "openai:gpt-4o-mini", "claude"]})
    assert keys(r.resolve("fast")) == ["openai:gpt-4o-mini", "google:gemini-2.5-flash"]
    assert keys(r.resolve("all")) == ["openai:gpt-4o-mini", "google:gemini-2.5-flash",
                                      "anthropic:claude-haiku-4-5"]


def test_group_loop_is_reported() -> None:
    r = resolver(groups={"a": ["b"], "b": ["openai:gpt-4o", "a"]})
    with pytest.raises(UnknownTargetError, match="loop"):
        r.resolve("a")


def test_group_member_on_an_unconfigured_vendor_is_left_out() -> None:
    only_openai = TargetResolver({"openai": ENDPOINTS["openai"]},
                                 groups={"gpt4o": ["openai:gpt-4o", "azure:gpt-4o"]})
    assert keys(only_openai.resolve("gpt4o")) == ["openai:gpt-4o"]
    only_azure_missing = TargetResolver({"openai": ENDPOINTS["openai"]},
                                        groups={"az": ["azure:gpt-4o"]})
    with pytest.raises(MissingKeyError):
        only_azure_missing.resolve("az")


def test_group_with_a_typo_is_an_error_that_lists_groups() -> None:
    r = resolver(groups={"g": ["openai:gpt-4o", "nosuchvendor:model"]})
    with pytest.raises(UnknownTargetError, match="nosuchvendor"):
        r.resolve("g")
    with pytest.raises(UnknownTargetError, match="groups: g"):
        r.resolve("nothing-like-this")


def test_group_beats_a_builtin_alias_but_not_a_user_alias() -> None:
    r = resolver(groups={"gpt": ["azure:prod-4o"]})
    assert keys(r.resolve("gpt")) == ["azure:prod-4o"]
    r2 = resolver(aliases={"gpt": "openai:gpt-4.1"}, groups={"gpt": ["azure:prod-4o"]})
    assert keys(r2.resolve("gpt")) == ["openai:gpt-4.1"]


@pytest.mark.parametrize("name,members", [("", ["openai:gpt-4o"]), ("a:b", ["openai:gpt-4o"]),
                                          ("empty", [])])
def test_bad_groups_are_refused(name: str, members: list[str]) -> None:
    with pytest.raises(ConfigurationError):
        resolver(groups={name: members})


# -- fallbacks ----------------------------------------------------------------------------


def test_fallbacks_follow_the_target_in_the_given_order() -> None:
    router = Router(resolver(), fallbacks={"openai:gpt-4o": ["anthropic:claude-sonnet-4-5",
                                                             "google:gemini-2.5-pro"]})
    plan = router.plan(Request("hi", "openai:gpt-4o"))
    assert keys(plan.candidates) == ["openai:gpt-4o", "anthropic:claude-sonnet-4-5",
                                     "google:gemini-2.5-pro"]
    assert [c.reason for c in plan.candidates] == [
        "target", "fallback for openai:gpt-4o", "fallback for openai:gpt-4o"]


def test_default_fallbacks_come_last_without_duplicates() -> None:
    router = Router(resolver(), fallbacks={"smart": ["anthropic:claude-sonnet-4-5"]},
                    default_fallbacks=["anthropic:claude-sonnet-4-5", "openai:gpt-4o",
                                       "ollama:llama3.2"],
                    groups={"smart": ["openai:gpt-4o", "azure:prod-4o"]})
    plan = router.plan(Request("hi", "smart"))
    assert keys(plan.candidates) == ["openai:gpt-4o", "azure:prod-4o",
                                     "anthropic:claude-sonnet-4-5", "ollama:llama3.2"]
    assert plan.candidates[-1].reason == "default fallback"


def test_fallbacks_of_fallbacks_are_followed_and_loops_end() -> None:
    router = Router(resolver(), fallbacks={
        "openai:gpt-4o": ["azure:prod-4o"],
        "azure:prod-4o": ["anthropic:claude-sonnet-4-5", "openai:gpt-4o"],
        "anthropic:claude-sonnet-4-5": ["azure:prod-4o", "openai:gpt-4o", "gemini"],
        "gemini": ["openai:gpt-4o"],
    })
    plan = router.plan(Request("hi", "openai:gpt-4o"))
    assert keys(plan.candidates) == ["openai:gpt-4o", "azure:prod-4o",
                                     "anthropic:claude-sonnet-4-5", "google:gemini-2.5-flash"]
    assert len(set(keys(plan.candidates))) == len(plan.candidates)
    assert plan.candidates[3].reason == "fallback for anthropic:claude-sonnet-4-5"


def test_fallbacks_are_found_by_candidate_key_too() -> None:
    # The request names an alias; the fallback is configured for the model it points to.
    router = Router(resolver(aliases={"main": "openai:gpt-4o"}),
                    fallbacks={"openai:gpt-4o": ["claude"]})
    plan = router.plan(Request("hi", "main"))
    assert keys(plan.candidates) == ["openai:gpt-4o", "anthropic:claude-haiku-4-5"]


def test_a_fallback_on_a_vendor_without_a_key_is_noted_not_fatal() -> None:
    r = TargetResolver({"openai": ENDPOINTS["openai"]})
    plan = Router(r, default_fallbacks=["anthropic:claude-haiku-4-5"]).plan(
        Request("hi", "openai:gpt-4o"))
    assert keys(plan.candidates) == ["openai:gpt-4o"]
    assert "anthropic" in plan.notes[0] and "ANTHROPIC_API_KEY" in plan.notes[0]


def test_default_target_is_used_when_the_request_names_none() -> None:
    plan = Router(resolver()).plan(Request("hi"))
    assert keys(plan.candidates) == ["openai:gpt-4o-mini"]


# -- strategies ---------------------------------------------------------------------------


def test_model_strategy_keeps_the_target_order() -> None:
    plan = Router(resolver()).plan(Request("hi", "gpt-4o"))
    assert keys(plan.candidates) == ["openai:gpt-4o", "azure:gpt-4o"]
    assert plan.strategy == "model"


def test_cheapest_uses_real_list_prices() -> None:
    router = Router(resolver(), strategy="cheapest",
                    groups={"pool": ["openai:gpt-4o", "anthropic:claude-haiku-4-5",
                                     "openai:gpt-4o-mini", "openai:my-finetune-xyz",
                                     "google:gemini-2.5-flash"]})
    plan = router.plan(Request("hello there", "pool", max_tokens=500))
    assert keys(plan.candidates) == ["openai:gpt-4o-mini", "google:gemini-2.5-flash",
                                     "anthropic:claude-haiku-4-5", "openai:gpt-4o",
                                     "openai:my-finetune-xyz"]
    assert plan.candidates[0].reason.startswith("group pool; cheapest #1 (~$")
    assert plan.candidates[-1].reason.endswith("cheapest #5 (price unknown)")
    mini = router.estimate_cost(Request("hello there", max_tokens=500), plan.candidates[0])
    big = router.estimate_cost(Request("hello there", max_tokens=500), plan.candidates[3])
    assert mini is not None and big is not None and mini < big
    # 3 prompt tokens + 500 answer tokens at gpt-4o-mini's $0.15 / $0.60 per million.
    assert mini == pytest.approx((3 * 0.15 + 500 * 0.60) / 1e6)


def test_cheapest_assumes_1024_answer_tokens_when_max_tokens_is_unset() -> None:
    router = Router(resolver())
    cand = Candidate(ENDPOINTS["openai"], "gpt-4o")
    assert router.estimate_cost(Request("hi"), cand) == pytest.approx((1 * 2.5 + 1024 * 10.0) / 1e6)


def test_cheapest_prefers_a_free_local_server_and_honours_overrides() -> None:
    prices = PriceBook()
    prices.set_price("anthropic", "claude-haiku-4-5", Price(0.01, 0.01))
    router = Router(resolver(), strategy="cheapest", prices=prices,
                    groups={"pool": ["openai:gpt-4o-mini", "anthropic:claude-haiku-4-5",
                                     "ollama:llama3.2"]})
    assert keys(router.plan(Request("hi", "pool")).candidates) == [
        "ollama:llama3.2", "anthropic:claude-haiku-4-5", "openai:gpt-4o-mini"]


def test_azure_deployments_are_priced_as_their_model() -> None:
    router = Router(resolver(), strategy="cheapest",
                    groups={"pool": ["azure:prod-4o", "openai:gpt-4o-mini"]})
    plan = router.plan(Request("hi", "pool"))
    assert keys(plan.candidates) == ["openai:gpt-4o-mini", "azure:prod-4o"]
    assert "price unknown" not in plan.candidates[1].reason


def test_fastest_puts_unobserved_first_then_by_moving_average() -> None:
    tracker = LatencyTracker()
    router = Router(resolver(), strategy="fastest", tracker=tracker, epsilon=0,
                    groups={"pool": ["openai:gpt-4o", "azure:prod-4o", "anthropic:claude-haiku-4-5",
                                     "google:gemini-2.5-flash"]})
    tracker.observe("openai:gpt-4o", 2.0, 0.9)
    tracker.observe("azure:prod-4o", 1.0, 0.8)
    tracker.observe("anthropic:claude-haiku-4-5", 1.5, 0.2)
    plan = router.plan(Request("hi", "pool"))
    assert keys(plan.candidates) == ["google:gemini-2.5-flash", "azure:prod-4o",
                                     "anthropic:claude-haiku-4-5", "openai:gpt-4o"]
    assert "not yet observed" in plan.candidates[0].reason
    # A stream cares about the first token.
    streamed = router.plan(Request("hi", "pool"), stream=True)
    assert keys(streamed.candidates)[1:] == ["anthropic:claude-haiku-4-5", "azure:prod-4o",
                                             "openai:gpt-4o"]


def test_fastest_notices_a_slow_vendor_recovering() -> None:
    tracker = LatencyTracker(alpha=0.5)
    router = Router(resolver(), strategy="fastest", tracker=tracker, epsilon=0,
                    groups={"pool": ["openai:gpt-4o", "azure:prod-4o"]})
    tracker.observe("openai:gpt-4o", 8.0)
    tracker.observe("azure:prod-4o", 1.0)
    assert keys(router.plan(Request("hi", "pool")).candidates)[0] == "azure:prod-4o"
    for _ in range(4):
        tracker.observe("openai:gpt-4o", 0.5)  # observed through exploration
    assert tracker.latency("openai:gpt-4o") == pytest.approx(0.5 + 7.5 / 16)
    assert keys(router.plan(Request("hi", "pool")).candidates)[0] == "openai:gpt-4o"


def test_fastest_explores_at_the_epsilon_rate() -> None:
    tracker = LatencyTracker()
    for key, s in (("openai:gpt-4o", 1.0), ("azure:prod-4o", 2.0), ("google:gemini-2.5-flash", 3.0)):
        tracker.observe(key, s)
    router = Router(resolver(), strategy="fastest", tracker=tracker, epsilon=0.05, seed=1,
                    groups={"pool": ["openai:gpt-4o", "azure:prod-4o", "google:gemini-2.5-flash"]})
    firsts = collections.Counter(
        router.plan(Request("hi", "pool")).candidates[0].key for _ in range(4000))
    explored = 4000 - firsts["openai:gpt-4o"]
    assert 120 <= explored <= 280  # 5% of 4000 = 200; both others get tried
    assert firsts["azure:prod-4o"] > 0 and firsts["google:gemini-2.5-flash"] > 0
    always = Router(resolver(), strategy="fastest", tracker=tracker, epsilon=1.0, seed=1,
                    groups={"pool": ["openai:gpt-4o", "azure:prod-4o"]})
    plan = always.plan(Request("hi", "pool"))
    assert keys(plan.candidates) == ["azure:prod-4o", "openai:gpt-4o"]
    assert "exploring" in plan.candidates[0].reason


def test_weighted_shuffle_follows_the_weights() -> None:
    router = Router(resolver(), strategy="weighted", seed=3,
                    weights={"openai": 3.0, "azure:prod-4o": 1.0, "google": 0.0},
                    groups={"pool": ["google:gemini-2.5-flash", "openai:gpt-4o", "azure:prod-4o"]})
    firsts: collections.Counter[str] = collections.Counter()
    for _ in range(4000):
        plan = router.plan(Request("hi", "pool"))
        firsts[plan.candidates[0].key] += 1
        assert plan.candidates[-1].key == "google:gemini-2.5-flash"  # weight 0: always last
    assert 0.70 <= firsts["openai:gpt-4o"] / 4000 <= 0.80
    assert "weighted #1 (weight " in router.plan(Request("hi", "pool")).candidates[0].reason


def test_a_user_function_orders_the_candidates() -> None:
    def reverse(request: Request, cands: list[Candidate]) -> list[Candidate]:
        return list(reversed(cands))

    router = Router(resolver(), strategy=reverse, fallbacks={"gpt-4o": ["claude"]})
    plan = router.plan(Request("hi", "gpt-4o"))
    assert keys(plan.candidates) == ["azure:gpt-4o", "openai:gpt-4o", "anthropic:claude-haiku-4-5"]
    assert plan.candidates[0].reason == "model family; reverse #1"
    assert plan.strategy == "reverse"
    with pytest.raises(ConfigurationError, match="not Candidate"):
        Router(resolver(), strategy=lambda r, c: ["openai:gpt-4o"]).plan(Request("hi", "gpt-4o"))  # type: ignore[list-item]


def test_strategy_can_be_chosen_per_plan_and_unknown_ones_are_refused() -> None:
    router = Router(resolver(), groups={"pool": ["openai:gpt-4o", "openai:gpt-4o-mini"]})
    assert keys(router.plan(Request("hi", "pool"), strategy="cheapest").candidates)[0] == \
        "openai:gpt-4o-mini"
    with pytest.raises(ConfigurationError, match="cheapest"):
        Router(resolver(), strategy="random")


# -- rules ----------------------------------------------------------------------------------


def test_first_matching_rule_wins() -> None:
    router = Router(resolver(), rules=[
        Rule(when={"tokens": ">=10000"}, target="gemini"),
        Rule(when={"tags": "batch"}, target="openai:gpt-4o-mini"),
        Rule(when={"tags": ["batch", "urgent"]}, target="openai:gpt-4o"),
    ], fallbacks={"gemini": ["claude"]})
    big = router.plan(Request(prompt_of(12000), "openai:gpt-4o", tags=["batch"]))
    assert keys(big.candidates) == ["google:gemini-2.5-flash", "anthropic:claude-haiku-4-5"]
    assert big.rule == "rule #1: tokens >=10000 -> gemini"
    assert big.candidates[0].reason == "rule #1; alias gemini"
    batch = router.plan(Request("hi", "openai:gpt-4o", tags=["batch", "urgent"]))
    assert keys(batch.candidates) == ["openai:gpt-4o-mini"]
    assert batch.rule is not None and batch.rule.startswith("rule #2")
    plain = router.plan(Request("hi", "openai:gpt-4o"))
    assert keys(plain.candidates) == ["openai:gpt-4o"] and plain.rule is None


def test_rule_conditions_on_model_temperature_user_and_metadata() -> None:
    rules = [
        Rule(when={"model": "gpt-4o*", "temperature": "<=0.2"}, target="azure:prod-4o"),
        Rule(when={"user": ["alice", "bob"]}, target="claude"),
        Rule(when={"metadata": {"tier": "free"}}, target="ollama:llama3.2"),
        Rule(when={"max_tokens": ">4000"}, target="google:gemini-2.5-pro"),
        Rule(when=lambda r: r.seed == 42, target="openai:gpt-4.1", name="seeded"),
    ]
    router = Router(resolver(), rules=rules)

    def first(**kw: object) -> str:
        return router.plan(Request("hi", **kw)).candidates[0].key  # type: ignore[arg-type]

    assert first(target="openai:gpt-4o", temperature=0.0) == "azure:prod-4o"
    assert first(target="gpt-4o-mini", temperature=0.1) == "azure:prod-4o"
    assert first(target="openai:gpt-4o", temperature=0.7) == "openai:gpt-4o"
    assert first(target="openai:gpt-4o") == "openai:gpt-4o"  # no temperature: no match
    assert first(target="claude-sonnet-4-5", temperature=0.0) == "anthropic:claude-sonnet-4-5"
    assert first(target="openai:gpt-4o", user="bob") == "anthropic:claude-haiku-4-5"
    assert first(target="openai:gpt-4o", metadata={"tier": "free"}) == "ollama:llama3.2"
    assert first(target="openai:gpt-4o", max_tokens=8000) == "google:gemini-2.5-pro"
    assert first(target="openai:gpt-4o", seed=42) == "openai:gpt-4.1"
    assert router.plan(Request("hi", seed=42)).rule == "rule #5: seeded"
    # "model" is checked against the default target when the request names none.
    assert first(temperature=0.0) == "azure:prod-4o"


@pytest.mark.parametrize("when", [{"colour": "red"}, {"tokens": "about 5"}, {"temperature": "~1"}])
def test_bad_rules_are_refused(when: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        Rule(when=when, target="gpt")


# -- context windows ------------------------------------------------------------------------


def test_context_windows_come_from_genai_prices_then_profiles_then_nowhere() -> None:
    windows = ContextWindows({"anthropic:claude-haiku-4-5": 1234})
    assert windows(Candidate(ENDPOINTS["openai"], "gpt-4")) == 8192
    assert windows(Candidate(ENDPOINTS["openai"], "gpt-4o-mini")) == 128_000
    assert windows(Candidate(ENDPOINTS["azure"], "old-4")) == 8192  # the deployment's model
    assert windows(Candidate(ENDPOINTS["ollama"], "llama3.2")) == 131_072  # emulator profile
    assert windows(Candidate(ENDPOINTS["openai"], "my-finetune-xyz")) is None
    assert windows(Candidate(ENDPOINTS["anthropic"], "claude-haiku-4-5")) == 1234


def test_too_long_prompt_skips_small_windows_with_the_reason() -> None:
    router = Router(resolver(), strategy="cheapest",
                    groups={"pool": ["openai:gpt-4", "openai:gpt-4o-mini", "openai:my-finetune-xyz"]},
                    default_fallbacks=["azure:old-4"])
    plan = router.plan(Request(prompt_of(12000), "pool"))
    assert keys(plan.candidates) == ["openai:gpt-4o-mini", "openai:my-finetune-xyz"]  # unknown fits
    assert [(c.key, why) for c, why in plan.skipped] == [
        ("openai:gpt-4", "context window 8192 < estimated 12000 tokens (prompt ~12000)"),
        ("azure:old-4", "context window 8192 < estimated 12000 tokens (prompt ~12000)"),
    ]
    assert plan.input_tokens == 12000
    text = plan.describe()
    assert "skipped openai:gpt-4: context window 8192" in text


def test_max_tokens_counts_toward_the_window() -> None:
    router = Router(resolver())
    fits = router.plan(Request(prompt_of(7000), "openai:gpt-4"))
    assert keys(fits.candidates) == ["openai:gpt-4"]
    too_big = router.plan(Request(prompt_of(7000), "openai:gpt-4", max_tokens=2000))
    assert too_big.candidates == []
    assert too_big.skipped[0][1] == ("context window 8192 < estimated 9000 tokens "
                                     "(prompt ~7000 + max_tokens 2000)")
    with pytest.raises(RequestValidationError, match="context window 8192"):
        too_big.raise_if_empty()
    fits.raise_if_empty()


def test_context_fallback_moves_to_the_next_candidate_that_fits() -> None:
    router = Router(resolver(), groups={"pool": [
        "openai:gpt-4o", "azure:prod-4o", "openai:gpt-4", "openai:my-finetune-xyz",
        "anthropic:claude-sonnet-4-5", "google:gemini-2.5-pro"]})
    plan = router.plan(Request("a prompt whose size we misjudged", "pool"))
    failed = plan.candidates[0]
    rest = router.context_fallback(plan, failed)
    assert keys(rest) == ["openai:my-finetune-xyz", "anthropic:claude-sonnet-4-5",
                          "google:gemini-2.5-pro"]
    assert keys(plan.candidates) == ["openai:gpt-4o", *keys(rest)]
    assert [(c.key, why) for c, why in plan.skipped] == [
        ("azure:prod-4o", "context window 128000 <= 128000 of openai:gpt-4o, which refused "
                          "the prompt as too long"),
        ("openai:gpt-4", "context window 8192 <= 128000 of openai:gpt-4o, which refused "
                         "the prompt as too long"),
    ]
    # A candidate whose window is unknown tells nothing: every later candidate stays.
    unknown = Plan("x", [Candidate(ENDPOINTS["openai"], "my-finetune-xyz"),
                         Candidate(ENDPOINTS["openai"], "gpt-4")])
    assert keys(router.context_fallback(unknown, unknown.candidates[0])) == ["openai:gpt-4"]


# -- the tracker ------------------------------------------------------------------------------


def test_latency_tracker_moving_averages() -> None:
    t = LatencyTracker(alpha=0.25)
    t.observe("a:b", 4.0, 1.0)
    t.observe("a:b", 8.0)
    assert t.latency("a:b") == 5.0 and t.ttft("a:b") == 1.0 and t.count("a:b") == 2
    assert t.score("a:b", stream=True) == 1.0 and t.score("a:b") == 5.0
    assert t.score("c:d") is None
    assert t.snapshot() == {"a:b": {"latency_s": 5.0, "ttft_s": 1.0, "observed": 2}}
    with pytest.raises(ConfigurationError):
        LatencyTracker(alpha=0)
