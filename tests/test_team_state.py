"""Limits, breaker and budget shared through a real Redis server (started on loopback by the
fixtures): two OS processes firing concurrent calls at the OpenAI emulator never overspend
one budget together; a shared `Limit(rpm=...)` spaces their arrivals at the emulator; a
breaker opened in one refuses in the other; a process SIGKILLed holding a reservation does
not hold it past its expiry; an unreachable Redis is the stated policy (local, or refuse)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from llmdispatch_nb.errors import BudgetExceededError
from llmdispatch_nb.resilience import Budget, CircuitBreaker, Limit, RateLimiter
from llmdispatch_nb.resilience.limits import LimitWaitTimeoutError
from llmdispatch_nb.sim import SimServer
from llmdispatch_nb.state import RedisState, SharedStateUnavailableError
from llmdispatch_nb.state._shared import SharedBudget
from tests._team_servers import RedisServer, start_redis

MINI = "openai:gpt-4o-mini"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = start_redis()
    yield server
    server.close()


@pytest.fixture
def team() -> str:
    return "t" + uuid.uuid4().hex[:10]  # each test its own keys on the one server


def run_processes(script: str, argvs: list[list[str]], timeout: float = 120,
                  when_ready: Callable[[], None] | None = None) -> list[dict]:
    """Run `script` in one OS process per argv at once; each prints one JSON line. With
    `when_ready`: each prints "ready" and waits for a line on stdin; once all are ready,
    `when_ready()` runs, then they are told to go."""
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), *argv], cwd=ROOT,
                              stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
             for argv in argvs]
    if when_ready is not None:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        when_ready()
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
    out = []
    deadline = time.monotonic() + timeout
    for p in procs:
        stdout, _ = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
        assert p.returncode == 0, stdout
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


DISPATCHER = """
    import asyncio, json, sys
    from llmdispatch_nb import Dispatcher, Endpoint, Secret
    from llmdispatch_nb.ledger import MemoryLedger
    from llmdispatch_nb.state import RedisState
    url, team, base = sys.argv[1], sys.argv[2], sys.argv[3]
    state = RedisState(url, team=team, user=sys.argv[4])
    ep = Endpoint("openai", "openai", base, key=Secret("sk-test"), simulated=True)
"""


def test_two_processes_never_overspend_one_budget(
        redis_server: RedisServer, openai_sim: SimServer, team: str) -> None:
    limit = 0.002
    script = DISPATCHER + f"""
    from llmdispatch_nb.resilience import Budget
    from llmdispatch_nb.errors import BudgetExceededError
    d = Dispatcher([ep], dotenv=False, ledger=MemoryLedger(), cache=False,
                   budget=Budget({limit}, state=state))
    async def main():
        calls = [d.asend(f"question {{i}} " * 20, "{MINI}", max_tokens=64) for i in range(100)]
        return await asyncio.gather(*calls, return_exceptions=True)
    done = asyncio.run(main())
    ok = [r for r in done if not isinstance(r, BaseException)]
    refused = [r for r in done if isinstance(r, BudgetExceededError)]
    print(json.dumps({{"ok": len(ok), "refused": len(refused),
                      "cost": sum(r.cost.usd or 0 for r in ok), "local": d.budget.spent}}))
    d.close()
    """
    emu = openai_sim.emulators["openai"]
    emu.reset()
    results = run_processes(script, [[redis_server.url(), team, openai_sim.base_url("openai"),
                                      who] for who in ("ana", "bob")])
    spent, reserved = SharedBudget(RedisState(redis_server.url(), team=team)).read(["*"])["*"]
    assert reserved == 0
    assert spent / 1e9 <= limit
    # Each process alone stayed under the limit, and together they never passed it.
    assert sum(r["cost"] for r in results) <= limit + 1e-12
    assert spent / 1e9 == pytest.approx(sum(r["local"] for r in results), abs=1e-9)
    # The limit did bind: some calls went, the rest were refused before sending.
    assert sum(r["ok"] for r in results) == len(emu.requests.chat()) > 0
    assert sum(r["refused"] for r in results) > 0
    assert all(r["ok"] + r["refused"] == 100 for r in results)


def test_a_shared_rate_limit_spaces_both_processes_arrivals(
        redis_server: RedisServer, openai_sim: SimServer, team: str) -> None:
    rpm = 120  # one request back every 0.5 s once the minute's allowance is used
    state = RedisState(redis_server.url(), team=team)
    drain = RateLimiter({"openai": Limit(rpm=rpm)}, state=state)

    async def use_the_allowance() -> None:
        for _ in range(rpm):
            (await drain.acquire(["openai"])).release()

    import asyncio

    script = DISPATCHER + f"""
    from llmdispatch_nb.resilience import Limit
    d = Dispatcher([ep], dotenv=False, ledger=MemoryLedger(), cache=False,
                   limits={{"openai": Limit(rpm={rpm})}}, budget=None)
    d.send("warm up", "{MINI}", max_tokens=8)  # the first call's one-off setup, not timed
    d.limiter = type(d.limiter)({{"openai": Limit(rpm={rpm})}}, state=state)
    print("ready", flush=True)
    sys.stdin.readline()
    for f in [d.submit(f"q{{i}}", "{MINI}", max_tokens=8) for i in range(4)]:
        f.result()
    print(json.dumps({{"ok": 4}}))
    d.close()
    """
    emu = openai_sim.emulators["openai"]

    def go() -> None:
        emu.reset()  # the warm-up calls are not counted
        asyncio.run(use_the_allowance())

    run_processes(script, [[redis_server.url(), team, openai_sim.base_url("openai"), who]
                           for who in ("ana", "bob")], when_ready=go)
    arrivals = sorted(r.at for r in emu.requests.chat())
    assert len(arrivals) == 8
    # Eight requests from a bucket just emptied, refilling twice a second: about 7 refills
    # from first to last (each process alone, with its own full bucket, would have sent
    # its four at once). Bounded at 3, so processes slow to start after "go" on a loaded
    # machine (the bucket refilling meanwhile) do not fail it.
    assert arrivals[-1] - arrivals[0] >= 3 * 60 / rpm


def test_a_breaker_opened_in_one_dispatcher_refuses_in_the_other(
        redis_server: RedisServer, team: str) -> None:
    one = CircuitBreaker(cooldown_s=0.3, state=RedisState(redis_server.url(), team=team))
    two = CircuitBreaker(cooldown_s=0.3, state=RedisState(redis_server.url(), team=team))
    key = "openai:gpt-4o"
    assert two.allow(key)
    two.record(key, True)
    one.trip(key)
    assert not two.allow(key) and two.state(key) == "open"
    # Half-open: one probe for the team, not one per kernel.
    deadline = time.monotonic() + 10
    while two.state(key) != "half_open" or one.state(key) != "half_open":
        assert time.monotonic() < deadline, "the circuits never half-opened"
        time.sleep(0.05)
    assert one.allow(key)
    assert not two.allow(key)
    one.record(key, True)  # the probe answered: closed for the team
    assert one.state(key) == "closed"
    assert two.allow(key)


def test_a_killed_process_does_not_hold_its_reservation_past_expiry(
        redis_server: RedisServer, team: str) -> None:
    script = f"""
    import sys, time
    from llmdispatch_nb.resilience import Budget
    from llmdispatch_nb.state import RedisState
    state = RedisState({redis_server.url()!r}, team={team!r}, reservation_ttl_s=1.0)
    budget = Budget(1.0, state=state)
    budget.reserve(0.75)
    print("reserved", flush=True)
    time.sleep(600)
    """
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "reserved"
        budget = Budget(1.0, state=RedisState(redis_server.url(), team=team))
        with pytest.raises(BudgetExceededError, match="team"):
            budget.reserve(0.5)  # 0.75 of 1.00 is held by the other kernel
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 15
        while True:  # its hold lapses with its expiry (1 s): then there is room again
            try:
                budget.reserve(0.5).settle(0.5)
                break
            except BudgetExceededError:
                assert time.monotonic() < deadline, "the dead kernel's reservation never lapsed"
                time.sleep(0.1)
        spent, reserved = SharedBudget(budget.shared.state).read(["*"])["*"]
        assert (spent, reserved) == (500_000_000, 0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_an_unreachable_redis_is_the_stated_policy(caplog: pytest.LogCaptureFixture) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    url = f"redis://127.0.0.1:{port}/0"
    caplog.set_level(logging.WARNING, logger="llmdispatch_nb.state")
    local = Budget(1.0, state=RedisState(url, unreachable="local", timeout_s=0.5))
    local.reserve(0.4).settle(0.4)
    assert local.spent == pytest.approx(0.4)  # this kernel's own budget still holds
    with pytest.raises(BudgetExceededError):
        local.reserve(0.7)
    assert sum("cannot be reached" in r.getMessage() for r in caplog.records) == 1
    refusing = Budget(1.0, state=RedisState(url, unreachable="refuse", timeout_s=0.5))
    with pytest.raises(SharedStateUnavailableError, match="refused until it answers"):
        refusing.reserve(0.1)
    assert refusing.spent == 0 and refusing.reserved == 0


def test_a_killed_process_does_not_hold_its_concurrency_slot_past_expiry(
        redis_server: RedisServer, team: str) -> None:
    import asyncio

    script = f"""
    import asyncio, time
    from llmdispatch_nb.resilience import Limit, RateLimiter
    from llmdispatch_nb.state import RedisState
    state = RedisState({redis_server.url()!r}, team={team!r}, lease_ttl_s=1.0)
    limiter = RateLimiter({{"openai": Limit(concurrent=1)}}, state=state)
    lease = asyncio.run(limiter.acquire(["openai"]))
    print("holding", flush=True)
    time.sleep(600)
    """
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    limiter = RateLimiter({"openai": Limit(concurrent=1)},
                          state=RedisState(redis_server.url(), team=team))
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "holding"

        async def take(within: float) -> object:
            return await limiter.acquire(["openai"], deadline=limiter.clock() + within)

        with pytest.raises(LimitWaitTimeoutError):  # the other kernel holds the team's one slot
            asyncio.run(take(0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        lease = asyncio.run(take(15.0))  # its slot lapses with its expiry (1 s)
        lease.release()  # type: ignore[attr-defined]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_a_call_without_max_tokens_is_fitted_to_the_team_s_room(
        redis_server: RedisServer, team: str) -> None:
    ana = Budget(1.0, state=RedisState(redis_server.url(), team=team, user="ana"))
    bob = Budget(1.0, state=RedisState(redis_server.url(), team=team, user="bob"))
    ana.reserve(0.9).settle(0.9)  # bob's own budget still sees $1.00 free; the team $0.10
    r = bob.reserve_worst(0.01, 0.0005, 1000)  # a $0.51 worst case: fitted to $0.10
    assert r.output_tokens is not None and 16 <= r.output_tokens < 200
    assert r.amount_usd <= 0.1
    r.release()
    with pytest.raises(BudgetExceededError, match="team"):
        bob.reserve_worst(0.01, 0.0005, 1000, fit=False)  # max_tokens set: never lowered
