"""`%llm team` in a real InteractiveShell: two users' calls through dispatchers on a real
PostgreSQL ledger and a real Redis budget show per user, vendor and model, with the shared
budget's state; without them it says which variables set a team up."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

import llmdispatch_nb
from llmdispatch_nb import Dispatcher, Endpoint, Secret
from llmdispatch_nb.ledger import MemoryLedger
from llmdispatch_nb.ledger._postgres import PostgresLedger
from llmdispatch_nb.resilience import Budget
from llmdispatch_nb.sim import SimServer
from llmdispatch_nb.state import RedisState
from tests._team_servers import PostgresServer, RedisServer, start_postgres, start_redis

from .conftest import CANARY_KEY
from .test_magic_support import Notebook

pytest_plugins = ("tests.test_magic_support",)  # its fixtures: shell, nb


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    server = start_postgres()
    yield server
    server.close()


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = start_redis()
    yield server
    server.close()


def user_dispatcher(sim: SimServer, url: str, state: RedisState) -> Dispatcher:
    ep = Endpoint("openai", "openai", sim.base_url("openai"), key=Secret(CANARY_KEY),
                  simulated=True)
    return Dispatcher([ep], dotenv=False, cache=False,
                      ledger=PostgresLedger(url, user=state.user),
                      budget=Budget(1.0, state=state))


def test_team_shows_spend_per_user_and_the_shared_budget(
        openai_sim: SimServer, pg: PostgresServer, redis_server: RedisServer,
        nb: Notebook) -> None:
    url, team = pg.new_database(), "t" + uuid.uuid4().hex[:8]
    ana = user_dispatcher(openai_sim, url, RedisState(redis_server.url(), team=team, user="ana"))
    bob = user_dispatcher(openai_sim, url, RedisState(redis_server.url(), team=team, user="bob"))
    with ana, bob:
        for _ in range(2):
            ana.send("hello", "openai:gpt-4o-mini", max_tokens=8)
        bob.send("hello", "openai:gpt-4o", max_tokens=8)
        bob.ledger.flush()  # another kernel's records: on the server once its writer sends them
        llmdispatch_nb.set_default(ana)
        run = nb.run("%llm team")
    assert run.success, run.stdout + run.stderr
    spend, budget = (p.data["text/plain"] for p in run.published[-2:])
    rows = {tuple(line.split()[:3]): line.split() for line in spend.splitlines()[3:]}
    assert rows[("ana", "openai", "gpt-4o-mini")][3] == "2"
    assert rows[("bob", "openai", "gpt-4o")][3] == "1"
    assert spend.splitlines()[-1].split()[:2] == ["all", "3"]
    lines = {line.split()[0] + " " + line.split()[1]: line for line in budget.splitlines()[3:]}
    assert "the team" in lines and "user ana" in lines and "user bob" in lines
    assert lines["the team"].split()[2] == "$1.0000"  # the limit this kernel sets


def test_team_without_servers_says_how_to_set_one_up(openai_sim: SimServer,
                                                     nb: Notebook) -> None:
    ep = Endpoint("openai", "openai", openai_sim.base_url("openai"), key=Secret(CANARY_KEY),
                  simulated=True)
    with Dispatcher([ep], dotenv=False, cache=False, ledger=MemoryLedger(),
                    budget=Budget(1.0, state=False)) as d:
        llmdispatch_nb.set_default(d)
        run = nb.run("%llm team")
    assert run.success
    assert "LLMDISPATCH_LEDGER=postgresql://" in run.stdout
    assert "LLMDISPATCH_STATE=redis://" in run.stdout
