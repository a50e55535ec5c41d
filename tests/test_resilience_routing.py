"""Fallbacks and routing end to end, over loopback: the order candidates are tried in and
why (the response's attempt trail, the ledger's fell_back flags and route reasons) across
vendors, default and per-call fallbacks, groups, the context-window fallback before
sending and on the vendor's own context-length error, and the strategies (cheapest,
fastest, rules) as they pick real deployments.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from llmdispatch_nb.errors import (
    AllCandidatesFailedError,
    OverloadedError,
    RequestValidationError,
    ServerError,
)
from llmdispatch_nb.resilience import RetryPolicy
from llmdispatch_nb.routing import Rule
from llmdispatch_nb.sim import SimServer
from tests._resilience_support import (
    AZURE_MINI,
    FLASH,
    HAIKU,
    MINI,
    counts,
    dispatcher,
    fresh,
    records,
    start,
)

NO_RETRY = RetryPolicy.none()
CHAIN = {MINI: [HAIKU], HAIKU: [FLASH]}
# More tokens (at ~4 characters each) than any 128k window, well within Gemini's 1M.
LONG_PROMPT = "word " * 130_000


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    with start() as s:
        yield s


@pytest.fixture(autouse=True)
def _fresh(sim: SimServer) -> None:
    fresh(sim)


def trail(r: object) -> list[tuple[str, str, str | None]]:
    return [(a.vendor, a.status, a.error) for a in r.attempts]  # type: ignore[attr-defined]


def test_fallback_chain_across_vendors_in_order_with_reasons(sim: SimServer) -> None:
    sim.emulators["openai"].faults.script("500")
    sim.emulators["anthropic"].faults.script("529")
    with dispatcher(sim, retry=NO_RETRY, fallbacks=CHAIN) as d:
        r = d.send("Which vendor answers?", MINI)
        recs = records(d)
    assert r.vendor == "google" and r.model_requested == "gemini-2.5-flash"
    assert trail(r) == [("openai", "error", "ServerError"),
                        ("anthropic", "error", "OverloadedError"),
                        ("google", "ok", None)]
    assert [(x.vendor, x.attempt, x.status, x.fell_back, x.retried, x.route_reason)
            for x in recs] == [
        ("openai", 1, "error", False, False, "target"),
        ("anthropic", 2, "error", True, False, f"fallback for {MINI}"),
        ("google", 3, "ok", True, False, f"fallback for {HAIKU}")]
    assert len({x.call_id for x in recs}) == 1 and recs[0].call_id == r.call_id
    assert counts(sim) == {"openai": 1, "anthropic": 1, "google": 1, "azure": 0}


def test_retries_happen_on_each_candidate_before_falling_back(sim: SimServer) -> None:
    sim.emulators["openai"].faults.script("503", "503")
    with dispatcher(sim, retry=RetryPolicy(max_attempts=2, base_s=0.01, jitter=0.0),
                    fallbacks=CHAIN) as d:
        r = d.send("Retry, then move on.", MINI)
        recs = records(d)
    assert r.vendor == "anthropic"
    assert [(x.vendor, x.retried, x.fell_back) for x in recs] == [
        ("openai", False, False), ("openai", True, False), ("anthropic", False, True)]


def test_the_default_fallback_comes_after_the_targets_own(sim: SimServer) -> None:
    sim.emulators["openai"].faults.script("500")
    sim.emulators["anthropic"].faults.script("500")
    with dispatcher(sim, retry=NO_RETRY, fallbacks={MINI: [HAIKU]},
                    default_fallbacks=[AZURE_MINI]) as d:
        r = d.send("Default fallback.", MINI)
        recs = records(d)
    assert r.vendor == "azure"
    assert [x.route_reason for x in recs] == ["target", f"fallback for {MINI}", "default fallback"]
    assert counts(sim)["google"] == 0


def test_per_call_fallbacks(sim: SimServer) -> None:
    sim.emulators["openai"].faults.script("500", "500")
    with dispatcher(sim, retry=NO_RETRY) as d:
        r1 = d.send("Per-call list.", MINI, fallbacks=[AZURE_MINI, FLASH])
        r2 = d.send("Per-call string.", MINI, fallbacks=FLASH)
        recs = records(d)
    assert r1.vendor == "azure" and r2.vendor == "google"
    assert [x.route_reason for x in recs] == ["target", f"fallback {AZURE_MINI}",
                                              "target", f"fallback {FLASH}"]
    assert counts(sim) == {"openai": 2, "anthropic": 0, "google": 1, "azure": 1}


def test_when_every_candidate_fails_each_error_is_kept_in_order(sim: SimServer) -> None:
    sim.emulators["openai"].faults.script("500")
    sim.emulators["anthropic"].faults.script("529")
    sim.emulators["google"].faults.script("503")
    with dispatcher(sim, retry=NO_RETRY, fallbacks=CHAIN) as d:
        with pytest.raises(AllCandidatesFailedError) as caught:
            d.send("Nobody answers.", MINI)
        recs = records(d)
    assert [(type(e).__name__, e.vendor) for e in caught.value.errors] == [  # type: ignore[attr-defined]
        ("ServerError", "openai"), ("OverloadedError", "anthropic"), ("OverloadedError", "google")]
    assert isinstance(caught.value.last, OverloadedError)
    assert [x.status for x in recs] == ["error"] * 3
    assert sum(counts(sim).values()) == len(recs) == 3


def test_a_group_serves_the_same_model_from_openai_then_azure(sim: SimServer) -> None:
    with dispatcher(sim, retry=NO_RETRY, groups={"gpt4o": ["openai:gpt-4o", "azure:gpt-4o"]}) as d:
        first = d.send("Group, healthy.", "gpt4o")
        sim.emulators["openai"].faults.script("500")
        second = d.send("Group, openai down.", "gpt4o")
        recs = records(d)
    assert (first.vendor, first.model_requested) == ("openai", "gpt-4o")
    assert (second.vendor, second.model_requested) == ("azure", "gpt-4o")
    assert second.model.startswith("gpt-4o")
    assert trail(second) == [("openai", "error", "ServerError"), ("azure", "ok", None)]
    assert [(x.vendor, x.route_reason, x.fell_back) for x in recs[1:]] == [
        ("openai", "group gpt4o", False), ("azure", "group gpt4o", True)]


def test_a_prompt_too_long_for_a_window_skips_it_before_sending(sim: SimServer) -> None:
    with dispatcher(sim, retry=NO_RETRY, groups={"any": [MINI, AZURE_MINI, FLASH]}) as d:
        r = d.send(LONG_PROMPT, "any", max_tokens=8)
        with pytest.raises(RequestValidationError, match="context window"):
            d.send(LONG_PROMPT, MINI, max_tokens=8)  # nowhere to go: refused, nothing sent
    assert r.vendor == "google"
    skipped = [a for a in r.attempts if a.status == "skipped"]
    assert [(a.vendor, a.model) for a in skipped] == [("openai", "gpt-4o-mini"),
                                                      ("azure", "gpt-4o-mini")]
    assert all("context window 128000 <" in (a.error or "") for a in skipped)
    assert counts(sim) == {"openai": 0, "anthropic": 0, "google": 1, "azure": 0}


def test_a_context_length_error_moves_to_a_bigger_window(sim: SimServer) -> None:
    # The estimate says the prompt fits; the vendor says it does not. Azure's gpt-4o-mini
    # has the same 128k window, so it would refuse too: it is skipped, and Gemini serves.
    sim.emulators["openai"].faults.script("context-length")
    with dispatcher(sim, retry=RetryPolicy(max_attempts=3, base_s=0.01),
                    groups={"any": [MINI, AZURE_MINI, FLASH]}) as d:
        r = d.send("Short, but the vendor disagrees.", "any")
        recs = records(d)
    assert r.vendor == "google"
    assert trail(r)[0] == ("openai", "error", "ContextLengthError")
    assert r.attempts[1].vendor == "azure" and r.attempts[1].status == "skipped"
    assert "refused the prompt as too long" in (r.attempts[1].error or "")
    assert trail(r)[2] == ("google", "ok", None)
    assert counts(sim) == {"openai": 1, "anthropic": 0, "google": 1, "azure": 0}
    assert [(x.vendor, x.error_class, x.fell_back) for x in recs] == [
        ("openai", "ContextLengthError", False), ("google", None, True)]


def test_cheapest_picks_gpt_4o_mini_over_gpt_4o_through_a_group(sim: SimServer) -> None:
    group = {"gpt": ["openai:gpt-4o", "azure:gpt-4o", "openai:gpt-4o-mini"]}
    with dispatcher(sim, retry=NO_RETRY, strategy="cheapest", groups=group) as d:
        r = d.send("Cheapest, please.", "gpt", max_tokens=64)
        sim.emulators["openai"].faults.script("500")
        r2 = d.send("Cheapest is down.", "gpt", max_tokens=64)
        recs = records(d)
    assert (r.vendor, r.model_requested) == ("openai", "gpt-4o-mini")
    assert "cheapest #1" in (recs[0].route_reason or "")
    # The next cheapest (gpt-4o; OpenAI's and Azure's list prices tie, so the group's order).
    assert (r2.vendor, r2.model_requested) == ("openai", "gpt-4o")
    assert "cheapest #2" in (recs[-1].route_reason or "")
    assert [m.model for m in sim.emulators["openai"].requests.chat()] == [
        "gpt-4o-mini", "gpt-4o-mini", "gpt-4o"]


def test_cheapest_can_be_chosen_per_call(sim: SimServer) -> None:
    with dispatcher(sim, retry=NO_RETRY, groups={"gpt": ["openai:gpt-4o", MINI]}) as d:
        by_model = d.send("In the group's order.", "gpt")
        cheapest = d.send("Cheapest this time.", "gpt", strategy="cheapest")
    assert by_model.model_requested == "gpt-4o"
    assert cheapest.model_requested == "gpt-4o-mini"


def test_fastest_learns_from_observed_latency_and_explores(sim: SimServer) -> None:
    # Emulated pace: gpt-4.1 ~0.5 s to first token at 75 tokens/s, gpt-4.1-nano ~0.25 s
    # at 150 tokens/s; at time_scale 0.5 that is ~0.36 s against ~0.18 s per answer.
    sim.emulators["openai"].time_scale = 0.5
    group = {"g": ["openai:gpt-4.1", "openai:gpt-4.1-nano"]}
    with dispatcher(sim, retry=NO_RETRY, strategy="fastest", groups=group) as d:
        d.router.epsilon = 0.0  # the Dispatcher has no option for it (yet)
        served = [d.send(f"Fast {i}.", "g", max_tokens=16).model_requested for i in range(6)]
        recs = records(d)
        # Unobserved candidates go first, so both are tried once, then the faster wins.
        assert served[:2] == ["gpt-4.1", "gpt-4.1-nano"]
        assert served[2:] == ["gpt-4.1-nano"] * 4
        assert all("not yet observed" in (x.route_reason or "") for x in recs[:2])
        assert "fastest #1 (~" in (recs[-1].route_reason or "")
        # Exploration sends a call to the slower one now and then, so a vendor that
        # recovers is noticed (epsilon 1: every call explores).
        d.router.epsilon = 1.0
        explored = d.send("Explore.", "g", max_tokens=16)
        assert explored.model_requested == "gpt-4.1"
        assert "exploring" in (records(d)[-1].route_reason or "")


def test_rules_route_by_tag(sim: SimServer) -> None:
    rules = [Rule(target=HAIKU, when={"tags": "draft"}),
             Rule(target=FLASH, when={"tags": ["long", "cheap"]})]
    with dispatcher(sim, retry=NO_RETRY, rules=rules, default_target=MINI) as d:
        drafted = d.send("A draft.", tags=["draft"])
        long_cheap = d.send("Long and cheap.", tags=["cheap", "long"])
        only_long = d.send("Long only.", tags=["long"])
        recs = records(d)
    assert (drafted.vendor, long_cheap.vendor, only_long.vendor) == ("anthropic", "google", "openai")
    assert (recs[0].route_reason or "").startswith("rule #1")
    assert (recs[1].route_reason or "").startswith("rule #2")
    assert recs[2].route_reason == "target"
    assert recs[0].tags == ("draft",)
    assert counts(sim) == {"openai": 1, "anthropic": 1, "google": 1, "azure": 0}


def test_a_rule_target_still_falls_back(sim: SimServer) -> None:
    sim.emulators["anthropic"].faults.script("500")
    with dispatcher(sim, retry=NO_RETRY, rules=[Rule(target=HAIKU, when={"tags": "draft"})],
                    fallbacks={HAIKU: [FLASH]}) as d:
        r = d.send("A draft, anthropic down.", MINI, tags=["draft"])
    assert r.vendor == "google"
    assert trail(r)[0] == ("anthropic", "error", ServerError.__name__)
