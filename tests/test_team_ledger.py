"""The team ledger on a real PostgreSQL server (started on loopback by the fixtures): every
attempt of a real Dispatcher against the OpenAI emulator lands (counted against the
emulator's own request count), through a server stopped and restarted mid-burst (records
spill to the local SQLite file and are uploaded when it returns); two OS processes write
one ledger; `calls()` filters on the server give what the SQLite ledger gives for the same
calls; the user comes from the environment or the argument."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from llmdispatch_nb import Dispatcher, Endpoint, Secret
from llmdispatch_nb._types import CallRecord
from llmdispatch_nb.analysis import calls, summary
from llmdispatch_nb.ledger import Ledger
from llmdispatch_nb.ledger._postgres import PostgresLedger, shown_url
from llmdispatch_nb.resilience import CircuitBreaker, RetryPolicy
from llmdispatch_nb.sim import SimServer
from tests._team_servers import PostgresServer, start_postgres
from tests.conftest import CANARY_KEY

MINI = "openai:gpt-4o-mini"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    server = start_postgres()
    yield server
    server.close()


@pytest.fixture
def url(pg: PostgresServer) -> str:
    return pg.new_database()


def dispatcher(sim: SimServer, ledger: object, **kw: object) -> Dispatcher:
    ep = Endpoint("openai", "openai", sim.base_url("openai"), key=Secret(CANARY_KEY),
                  simulated=True)
    return Dispatcher([ep], dotenv=False, ledger=ledger, cache=False,
                      retry=RetryPolicy(max_attempts=3, base_s=0.001, max_backoff_s=0.002),
                      breaker=CircuitBreaker(threshold=1.0, min_calls=1000, window=1000),
                      timeout=httpx.Timeout(5.0, connect=5.0), **kw)  # type: ignore[arg-type]


def record(i: int, *, session: str = "s", tags: tuple[str, ...] = (), at: float | None = None,
           cost: float = 0.01) -> CallRecord:
    return CallRecord(call_id=f"call-{i}", attempt=1, timestamp=at if at is not None else 1e9 + i,
                      vendor="openai", model_requested="gpt-4o-mini", model_served="gpt-4o-mini",
                      status="ok", session=session, tags=tags, cost_usd=cost, latency_s=0.1,
                      prompt=f"question {i}", response=f"answer {i}")


def test_every_attempt_lands_through_a_server_restart_mid_burst(
        openai_sim: SimServer, pg: PostgresServer, url: str) -> None:
    emu = openai_sim.emulators["openai"]
    emu.reset()
    emu.faults.rate(0.2, "500", model="gpt-4o-mini", seed=7)  # retried attempts count too
    attempts: list[CallRecord] = []
    ledger = PostgresLedger(url, user="ana", buffer_s=0.2)
    with dispatcher(openai_sim, ledger) as d:
        d.on_record(attempts.append)
        futures = [d.submit(f"question {i}", MINI, max_tokens=8) for i in range(40)]
        for f in futures[:10]:
            f.exception()  # waits; a call whose three attempts all failed is still recorded
        pg.stop()  # mid-burst: the rest land while the server is away
        futures += [d.submit(f"more {i}", MINI, max_tokens=8) for i in range(40)]
        for f in futures:
            f.exception()
        ledger._writer.flush(30)  # on the server or spilled: nothing only in memory
        assert ledger.spilled > 0 and ledger.spill.count() == ledger.spilled
        pg.start()
        d.send("after the restart", MINI, max_tokens=8)
        ledger.flush()
    assert ledger.uploaded == ledger.spilled
    assert ledger.spill.count() == 0
    assert ledger.count() == len(attempts) == len(emu.requests.chat())
    assert {(r.call_id, r.attempt) for r in ledger.records()} == \
        {(r.call_id, r.attempt) for r in attempts}
    assert ledger.count(user="ana") == len(attempts)


def test_a_batch_sent_twice_is_kept_once(url: str) -> None:
    ledger = PostgresLedger(url, user="ana")
    for i in range(50):
        ledger.write(record(i))
    ledger.flush()
    # The spill path uploads what the server may already hold (an acknowledgement lost):
    # the same attempts again are no new rows.
    for i in range(50):
        ledger.spill.write(record(i))
    assert ledger.upload_spilled() == 50
    assert ledger.count() == 50


def test_filters_run_on_the_server_and_match_the_sqlite_ledger(
        url: str, tmp_path: Path) -> None:
    team = PostgresLedger(url, user="ana")
    local = Ledger(tmp_path / "local.db")
    base = 1.7e9
    recs = [record(i, session="a" if i % 3 else "b",
                   tags=("eval",) if i % 2 else ("eval", "nightly"), at=base + i)
            for i in range(300)]
    for r in recs:
        team.write(r)
        local.write(r)
    team.flush()
    local.flush()
    for kw in ({"session": "a"}, {"tags": "nightly"}, {"since": base + 120},
               {"session": "b", "tags": ["eval", "nightly"], "since": base + 30}):
        got = calls(team, **kw)  # type: ignore[arg-type]
        want = calls(local, **kw)  # type: ignore[arg-type]
        assert len(got) == len(want) > 0, kw
        assert list(got["call_id"].astype(str)) == list(want["call_id"].astype(str)), kw
        assert set(got["user"]) == {"ana"}
    # A time range, closed at the top, and a user that is not there.
    assert len(calls(team, since=base + 100, until=base + 110)) == 10
    assert len(calls(team, user="bob")) == 0
    with pytest.raises(ValueError, match="team ledger"):
        calls(local, user="ana")
    # The server counted only the matching rows out: a filtered read returns no more rows
    # than match, whatever the table holds.
    assert team.count(session="b", tags="nightly") == len(calls(team, session="b",
                                                                 tags="nightly"))
    local.close()
    team.close()


def test_user_comes_from_the_environment_or_the_argument(
        url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMDISPATCH_USER", "chidi")
    from_env = PostgresLedger(url)
    given = PostgresLedger(url, user="eleanor")
    from_env.write(record(1))
    given.write(record(2, cost=0.5))
    given.flush()  # another ledger's writer: its record is on the server once flushed
    by_user = summary(calls(from_env), by="user")
    assert set(by_user.frame["user"]) == {"chidi", "eleanor"}
    spend = {row["user"]: row["cost_usd"] for row in from_env.spend()}
    assert spend == pytest.approx({"chidi": 0.01, "eleanor": 0.5})


def test_the_password_is_never_shown(pg: PostgresServer) -> None:
    url = pg.url().replace("postgres@", "postgres:hunter2secret@")
    ledger = PostgresLedger(url)
    assert "hunter2secret" not in repr(ledger)
    assert shown_url(url) == f"postgresql://postgres:***@127.0.0.1:{pg.port}/postgres"


def test_the_environment_variable_gives_dispatchers_the_team_ledger(
        openai_sim: SimServer, url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMDISPATCH_LEDGER", url)
    monkeypatch.setenv("LLMDISPATCH_USER", "tahani")
    with dispatcher(openai_sim, None) as d:
        assert isinstance(d.ledger, PostgresLedger)
        d.send("hello", MINI, max_tokens=8)
        frame = calls(d)  # this dispatcher's session, filtered on the server
        assert len(frame) >= 1 and set(frame["user"]) == {"tahani"}
        assert calls()["call_id"].nunique() == frame["call_id"].nunique()
        assert d.stats()["calls"] == 1


def test_two_processes_write_one_ledger(openai_sim: SimServer, url: str) -> None:
    emu = openai_sim.emulators["openai"]
    emu.reset()
    script = textwrap.dedent(f"""
        import sys
        from llmdispatch_nb import Dispatcher, Endpoint, Secret
        from llmdispatch_nb.ledger._postgres import PostgresLedger
        ledger = PostgresLedger({url!r}, user=sys.argv[1])
        ep = Endpoint("openai", "openai", {openai_sim.base_url("openai")!r},
                      key=Secret("sk-test"), simulated=True)
        with Dispatcher([ep], dotenv=False, ledger=ledger, cache=False) as d:
            for f in [d.submit(f"q{{i}}", "{MINI}", max_tokens=8) for i in range(30)]:
                f.result()
        ledger.close()
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, who], cwd=ROOT)
             for who in ("ana", "bob")]
    deadline = time.monotonic() + 120
    for p in procs:
        assert p.wait(max(1.0, deadline - time.monotonic())) == 0
    ledger = PostgresLedger(url)
    assert ledger.count() == len(emu.requests.chat()) >= 60
    assert {row["user"] for row in ledger.spend()} == {"ana", "bob"}


def test_the_analysis_notebook_reads_a_team_ledger_when_one_is_set(
        url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import nbformat

    from llmdispatch_nb import analysis
    from llmdispatch_nb.ledger import _postgres

    nb = nbformat.read(ROOT / "notebooks" / "cost_latency_analysis.ipynb", as_version=4)
    source = next(c.source for c in nb.cells if c.get("id") == "team")
    shown: list[object] = []
    # Without a team ledger: how to set one up.
    exec(source, {"analysis": analysis, "display": shown.append})
    assert "LLMDISPATCH_LEDGER=postgresql://" in capsys.readouterr().out and not shown
    # With one: the team's summary per user, vendor and model.
    ledger = PostgresLedger(url, user="ana")
    for i in range(3):
        ledger.write(record(i))
    ledger.flush()
    monkeypatch.setenv("LLMDISPATCH_LEDGER", url)
    monkeypatch.setenv("LLMDISPATCH_USER", "ana")
    monkeypatch.setattr(_postgres, "_shared", {})  # this test's own process-wide ledger
    exec(source, {"analysis": analysis, "display": shown.append})
    (table,) = shown
    frame = table.frame  # type: ignore[attr-defined]
    assert list(frame["user"]) == ["ana"] and list(frame["calls"]) == [3]


def test_the_same_attempt_written_twice_is_kept_once(url: str) -> None:
    ledger = PostgresLedger(url, user="ana")
    for i in (1, 2, 1, 3, 2):  # a sink that delivered twice: the batch is resent, deduplicated
        ledger.write(record(i))
    ledger.flush()
    assert ledger.count() == 3 and ledger.spilled == 0
