"""Streams under faults, end to end: a retry or a fallback before the first token is
invisible to the caller (they see only the attempt that succeeded: its text, its usage,
one finish), and a failure after the first token ends the stream with a MidStreamError
that keeps the partial text, with no retry and no fallback.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from llmdispatch_nb import Dispatcher, Finish, Response, TextDelta, UsageUpdate
from llmdispatch_nb.errors import MidStreamError
from llmdispatch_nb.resilience import RetryPolicy
from llmdispatch_nb.sim import Fault, SimServer
from tests._resilience_support import (
    AZURE_MINI,
    HAIKU,
    MINI,
    MODEL,
    counts,
    dispatcher,
    fresh,
    records,
    start,
)

RETRY = RetryPolicy(max_attempts=3, base_s=0.01, jitter=0.0)


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    with start() as s:
        yield s


@pytest.fixture(autouse=True)
def _fresh(sim: SimServer) -> None:
    fresh(sim)


def drain(d: Dispatcher, prompt: str, target: str) -> tuple[list[object], Response]:
    s = d.stream(prompt, target)
    events = list(s)
    assert s.response is not None
    return events, s.response


def text_of(events: list[object]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


@pytest.mark.parametrize("vendor", ["openai", "anthropic", "google", "azure"])
def test_a_retry_before_the_first_token_is_invisible(sim: SimServer, vendor: str) -> None:
    # The vendor's own error event before any text, then a 503 before the stream starts.
    sim.emulators[vendor].faults.script(Fault("midstream-error", after_tokens=0), "503")
    with dispatcher(sim, retry=RETRY) as d:
        events, r = drain(d, "Stream through the trouble.", MODEL[vendor])
        clean, _ = drain(d, "Stream through the trouble.", MODEL[vendor])  # no fault now
    assert [a.status for a in r.attempts] == ["error", "error", "ok"]
    # What a call with no trouble shows: the same text; usage held back until text
    # flows (at most the succeeding attempt's own opening count just before its first
    # text, none from the failed ones; Anthropic and Gemini send running counts and the
    # last is the answer's); one finish, last.
    assert text_of(events) == r.text == text_of(clean)
    first_text = next(i for i, e in enumerate(events) if isinstance(e, TextDelta))
    assert first_text <= 1 and all(isinstance(e, UsageUpdate) for e in events[:first_text])
    usage = [e for e in events if isinstance(e, UsageUpdate)]
    assert usage[-1] == UsageUpdate(r.usage)
    assert [i for i, e in enumerate(events) if isinstance(e, Finish)] == [len(events) - 1]
    assert counts(sim)[vendor] == 4


def test_a_fallback_before_the_first_token_is_invisible(sim: SimServer) -> None:
    sim.emulators["openai"].faults.script("503")
    sim.emulators["anthropic"].faults.script(Fault("midstream-error", after_tokens=0))
    with dispatcher(sim, retry=RetryPolicy.none(), fallbacks={MINI: [HAIKU, AZURE_MINI]}) as d:
        events, r = drain(d, "Fall back before text.", MINI)
        recs = records(d)
    assert r.vendor == "azure"
    assert text_of(events) == r.text and r.text.startswith("[simulated gpt-4o-mini]")
    assert [e for e in events if isinstance(e, UsageUpdate)] == [UsageUpdate(r.usage)]
    assert [(x.vendor, x.status, x.streamed, x.fell_back) for x in recs] == [
        ("openai", "error", True, False), ("anthropic", "error", True, True),
        ("azure", "ok", True, True)]


@pytest.mark.parametrize("kind", ["midstream-disconnect", "midstream-error"])
@pytest.mark.parametrize("vendor", ["openai", "anthropic", "google"])
def test_after_the_first_token_a_failure_is_a_midstream_error(sim: SimServer, vendor: str,
                                                              kind: str) -> None:
    sim.emulators[vendor].faults.script(Fault(kind, after_tokens=3))
    other = HAIKU if vendor != "anthropic" else MINI
    with dispatcher(sim, retry=RETRY, fallbacks={MODEL[vendor]: [other]}) as d:
        s = d.stream("Break after three.", MODEL[vendor])
        seen: list[str] = []
        with pytest.raises(MidStreamError) as caught:
            for ev in s:
                if isinstance(ev, TextDelta):
                    seen.append(ev.text)
        recs = records(d)
    err = caught.value
    assert len(seen) == 3
    assert err.partial_text == "".join(seen) == s.text
    assert err.retryable is False
    # No retry, no fallback: the caller already holds text from this attempt.
    assert counts(sim)[vendor] == 1 and sum(counts(sim).values()) == 1
    assert [(x.status, x.error_class, x.response) for x in recs] == [
        ("error", "MidStreamError", err.partial_text)]


def test_an_async_stream_falls_back_before_text_and_breaks_after(sim: SimServer) -> None:
    sim.emulators["openai"].faults.script("500")
    sim.emulators["anthropic"].faults.script(Fault("midstream-disconnect", after_tokens=2))
    with dispatcher(sim, retry=RetryPolicy.none(), fallbacks={MINI: [HAIKU]}) as d:

        async def main() -> tuple[str, BaseException | None]:
            s = d.astream("Async stream.", MINI)
            got: list[str] = []
            try:
                async for ev in s:
                    if isinstance(ev, TextDelta):
                        got.append(ev.text)
            except MidStreamError as exc:
                return "".join(got), exc
            return "".join(got), None

        got, err = asyncio.run(main())
    assert isinstance(err, MidStreamError) and err.vendor == "anthropic"
    assert err.partial_text == got and got.startswith("[simulated claude-haiku-4-5]")
    assert counts(sim) == {"openai": 1, "anthropic": 1, "google": 0, "azure": 0}
