"""The ledger behind a real Dispatcher, over loopback against the OpenAI emulator: one
record per attempt (failed, retried and fallen-back ones included, counted against the
emulator's own request count), stats() agreeing with the analysis frame, and no key in
any byte of the database files or an exported pack."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import httpx
import pytest

from llmdispatch_nb import Dispatcher, Endpoint, Secret
from llmdispatch_nb.analysis import calls, summary
from llmdispatch_nb.errors import AuthenticationError, LLMDispatchError
from llmdispatch_nb.ledger import Ledger, export_pack, load_pack
from llmdispatch_nb.resilience import CircuitBreaker, RetryPolicy
from llmdispatch_nb.sim import SimServer
from tests.conftest import CANARY_KEY, assert_no_canary

MINI = "openai:gpt-4o-mini"
BIG = "openai:gpt-4o"


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger(tmp_path / "project") as lg:
        yield lg


def dispatcher(sim: SimServer, ledger: Ledger, **kw: object) -> Dispatcher:
    ep = Endpoint("openai", "openai", sim.base_url("openai"), key=Secret(CANARY_KEY),
                  simulated=True)
    # A breaker that never opens: these tests count attempts, not circuits.
    return Dispatcher([ep], dotenv=False, ledger=ledger, cache=False,
                      retry=RetryPolicy(max_attempts=3, base_s=0.001, max_backoff_s=0.002),
                      breaker=CircuitBreaker(threshold=1.0, min_calls=1000, window=1000),
                      timeout=httpx.Timeout(2.0, connect=2.0), **kw)  # type: ignore[arg-type]


def test_every_attempt_is_recorded_failed_retried_and_fallen_back(
        openai_sim: SimServer, ledger: Ledger) -> None:
    emu = openai_sim.emulators["openai"]
    emu.reset()
    with dispatcher(openai_sim, ledger) as d:
        # Two server errors, then an answer: retried on the same model.
        emu.faults.script("500", "503", None, model="gpt-4o-mini")
        assert d.send("first question", MINI, max_tokens=20).text
        # gpt-4o-mini keeps failing; the call falls back to gpt-4o.
        emu.faults.clear()
        emu.faults.script(*["500"] * 3, model="gpt-4o-mini")
        assert d.send("second question", MINI, max_tokens=20, fallbacks=[BIG]).text
        emu.faults.clear()
        # A stream.
        assert "".join(getattr(ev, "text", "") for ev in d.stream("third", MINI, max_tokens=20))
        # Refused outright: the call fails.
        emu.faults.script("401", model="gpt-4o-mini")
        with pytest.raises(AuthenticationError):
            d.send("fourth question", MINI, max_tokens=20)
        session = d.session
        stats = d.stats()

    records = ledger.records(session=session)
    sent = emu.requests.chat()
    assert len(records) == emu.count == ledger.count() == stats["attempts"]
    # One record per request the emulator saw, in order, failed exactly where it failed.
    assert [(r.model_requested, r.status == "error") for r in records] == [
        (q.model, q.fault is not None) for q in sent]
    calls_seen = list(dict.fromkeys(r.call_id for r in records))
    assert len(calls_seen) == 4 == stats["calls"]
    first, second, third, fourth = ([r for r in records if r.call_id == c] for c in calls_seen)
    assert [r.status for r in first] == ["error", "error", "ok"]
    assert [r.attempt for r in first] == [1, 2, 3] and [r.retried for r in first] == [
        False, True, True]
    assert second[-1].fell_back and second[-1].model_requested == "gpt-4o"
    assert second[-1].status == "ok" and not any(r.fell_back for r in second[:-1])
    assert third[0].streamed and third[0].ttft_s is not None and third[0].chunks
    assert [r.status for r in fourth] == ["error"]
    assert fourth[0].error_class == "AuthenticationError" and fourth[0].http_status == 401
    assert all(r.session == session and r.vendor == "openai" for r in records)
    ok = [r for r in records if r.status == "ok"]
    assert all(r.response and r.prompt and r.cache_key and r.output_tokens for r in ok)
    assert (stats["successes"], stats["failures"]) == (3, 1)
    assert stats["retries"] == sum(r.retried for r in records) >= 2
    assert stats["fallbacks"] == sum(r.fell_back for r in records) >= 1


def test_stats_and_the_analysis_summary_agree(openai_sim: SimServer, ledger: Ledger) -> None:
    emu = openai_sim.emulators["openai"]
    emu.reset()
    with dispatcher(openai_sim, ledger) as d:
        emu.faults.rate(0.3, "500", model="gpt-4o-mini", seed=3)
        for i in range(30):
            target = MINI if i % 3 else BIG
            try:
                if i % 2:
                    d.send(f"question {i}", target, max_tokens=30)
                else:
                    list(d.stream(f"question {i}", target, max_tokens=30))
            except LLMDispatchError:
                pass
        stats = d.stats()
        frame = calls(d)
    assert len(frame) == emu.count == stats["attempts"]
    table = summary(frame)
    for row in table.itertuples():
        expected = stats["per_model"][f"{row.vendor}:{row.model}"]
        assert (row.calls, row.attempts, row.successes) == (
            expected["calls"], expected["attempts"], expected["successes"])
        assert math.isclose(row.latency_p50_s, expected["latency_s"]["p50"], rel_tol=1e-9)
        assert math.isclose(row.latency_p95_s, expected["latency_s"]["p95"], rel_tol=1e-9)
        assert math.isclose(row.total_cost_usd, expected["cost_usd"], rel_tol=1e-9)
        assert row.output_tokens == expected["output_tokens"]
    totals = summary(frame, by=()).iloc[0]
    assert totals["calls"] == stats["calls"] and totals["retries"] == stats["retries"]


def test_no_key_in_any_database_file_or_pack(openai_sim: SimServer, tmp_path: Path) -> None:
    emu = openai_sim.emulators["openai"]
    emu.reset()
    ledger = Ledger(tmp_path / "canary")
    with dispatcher(openai_sim, ledger) as d:
        emu.faults.script("401", "429-no-retry", "500", None, model="gpt-4o-mini")
        for prompt in ("one", "two", "three"):
            try:
                d.send(prompt, MINI, max_tokens=10, temperature=0)
            except LLMDispatchError as exc:
                assert_no_canary(str(exc))
        list(d.stream("four", MINI, max_tokens=10, temperature=0))
        d.send("five", MINI, max_tokens=10, tags=["demo"], temperature=0)
    pack = tmp_path / "pack.jsonl"
    assert export_pack(pack, ledger) >= 2
    ledger.close()
    files = [p for p in (tmp_path / "canary").iterdir() if p.name.startswith("ledger.db")]
    assert files and any(p.stat().st_size > 0 for p in files)
    for p in [*files, pack]:
        data = p.read_bytes()
        assert CANARY_KEY.encode() not in data, p
        assert b"Bearer" not in data and b"authorization" not in data.lower(), p
    # And in every column of every row, read back as text.
    with closing(sqlite3.connect(tmp_path / "canary" / "ledger.db")) as conn, conn:
        for table in ("calls", "cache"):
            for row in conn.execute(f"SELECT * FROM {table}"):
                assert_no_canary(repr(row))
    assert len(load_pack(pack)) >= 2
