"""A broken LLMDISPATCH_HOME (read-only, a file where the folder should be, a garbage or
truncated database, a full disk) never costs a call its answer: cached calls (temperature
0, a seed) still answer, the trouble is one warning saying what is wrong and what to do,
a corrupt file is set aside (renamed, its bytes kept) and a new ledger started, and the
readers (`d.stats()`, `%llm calls`) answer at once, with that same message when they
cannot read. A read-only place and a full disk are real: tiny tmpfs mounts when the
tests run as root (root writes through permission bits), permission bits otherwise."""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import httpx
import pytest

import llmdispatch_nb
from llmdispatch_nb import Dispatcher, Endpoint, Secret
from llmdispatch_nb._types import CallRecord
from llmdispatch_nb.ledger import Ledger, LedgerError
from llmdispatch_nb.resilience import RetryPolicy
from llmdispatch_nb.sim import SimServer
from tests.conftest import CANARY_KEY
from tests.test_magic_support import Notebook, one_error_line

pytest_plugins = ("tests.test_magic_support",)  # its fixtures: shell, nb

TARGET = "openai:gpt-4o-mini"
ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _mount(where: Path, *options: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(where)],
                          capture_output=True, check=False)
    return done.returncode == 0


def _unmount(where: Path) -> None:
    subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)


@pytest.fixture
def read_only_home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "ro"
    if ROOT:
        if not _mount(home, "size=1m", "ro"):
            pytest.skip("root, but cannot mount a read-only tmpfs here")
        yield home
        _unmount(home)
    else:
        home.mkdir()
        home.chmod(0o500)
        yield home
        home.chmod(0o700)


@pytest.fixture
def full_home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "full"
    if not ROOT or not _mount(home, "size=256k"):
        pytest.skip("a full disk is simulated with a tiny tmpfs, which needs root")
    yield home
    _unmount(home)


def dispatcher(sim: SimServer) -> Dispatcher:
    """The default ledger and cache, at $LLMDISPATCH_HOME as the test set it."""
    ep = Endpoint("openai", "openai", sim.base_url("openai"), key=Secret(CANARY_KEY),
                  simulated=True)
    return Dispatcher([ep], dotenv=False, retry=RetryPolicy.none(),
                      timeout=httpx.Timeout(5.0, connect=5.0))


def cached_calls_answer(d: Dispatcher) -> None:
    """Cacheable calls (temperature 0, a seed), each twice, with prompts big enough to
    fill a small disk; every one answers."""
    for i in range(6):
        prompt = f"question {i} " + "x" * 30_000
        assert d.send(prompt, TARGET, max_tokens=20, temperature=0).text
        assert d.send(prompt, TARGET, max_tokens=20, seed=i).text
        assert d.send(prompt, TARGET, max_tokens=20, temperature=0).text


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno >= logging.WARNING and r.name.startswith("llmdispatch_nb")]


def readers_say(d: Dispatcher, nb: Notebook, message: str) -> None:
    """d.stats() and %llm calls answer at once, with the warning's own message."""
    t0 = time.monotonic()
    with pytest.raises(LedgerError) as caught:
        d.stats()
    assert str(caught.value) == message
    llmdispatch_nb.set_default(d)
    line = one_error_line(nb.run("%llm calls"))
    assert message.split(" (")[0] in line
    assert time.monotonic() - t0 < 10  # a gross stall only (it used to hang 60 s)


@pytest.mark.parametrize("how", ["read-only", "a file"])
def test_an_unwritable_home_still_answers_with_one_warning(
        openai_sim: SimServer, nb: Notebook, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, how: str,
        request: pytest.FixtureRequest) -> None:
    if how == "read-only":
        home = request.getfixturevalue("read_only_home")
        words = "is read-only or not yours"
    else:
        home = tmp_path / "home"
        home.write_text("not a folder")
        words = "is a file where a folder should be"
    monkeypatch.setenv("LLMDISPATCH_HOME", str(home))
    caplog.set_level(logging.INFO)
    d = dispatcher(openai_sim)
    cached_calls_answer(d)
    (warning,) = warnings_of(caplog)
    assert words in warning and "LLMDISPATCH_HOME" in warning and "Calls still answer" in warning
    readers_say(d, nb, warning)
    assert d.ledger.quarantined == 18  # every attempt, kept in memory: nowhere else to go
    d.close()
    assert warnings_of(caplog) == [warning]  # closing adds nothing
    if how == "a file":
        assert home.read_text() == "not a folder"


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_corrupt_ledger_is_set_aside_and_a_new_one_started(
        openai_sim: SimServer, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, damage: str) -> None:
    home = tmp_path / "home"
    if damage == "garbage":
        home.mkdir()
        bad = os.urandom(5000)
    else:
        with Ledger(home) as old:
            for i in range(2000):
                old.write(CallRecord(call_id=f"c{i}", attempt=1, timestamp=1.0 + i,
                                     vendor="openai", model_requested="m", model_served="m",
                                     status="ok", prompt="y" * 300))
        bad = (home / "ledger.db").read_bytes()
        bad = bad[:len(bad) // 2]
        for extra in home.glob("ledger.db-*"):
            extra.unlink()
    (home / "ledger.db").write_bytes(bad)
    monkeypatch.setenv("LLMDISPATCH_HOME", str(home))
    d = dispatcher(openai_sim)
    cached_calls_answer(d)
    (warning,) = warnings_of(caplog)
    (aside,) = home.glob("ledger.db.corrupt-*")
    assert str(aside) in warning and ".recover" in warning
    assert aside.read_bytes() == bad  # set aside whole, not overwritten
    t0 = time.monotonic()
    stats = d.stats()
    assert time.monotonic() - t0 < 10
    assert stats["attempts"] == 18 and stats["cache_hits"] == 6 and stats["quarantined"] == 0
    d.close()


def test_a_full_disk_still_answers_and_sets_the_records_aside(
        openai_sim: SimServer, full_home: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMDISPATCH_HOME", str(full_home))
    d = dispatcher(openai_sim)
    cached_calls_answer(d)  # the vendor answered and billed: the answer reaches the caller
    (warning,) = warnings_of(caplog)
    assert "is full" in warning and "free some space" in warning
    t0 = time.monotonic()
    stats = d.stats()  # reading a full disk works
    assert time.monotonic() - t0 < 10
    assert stats["attempts"] + stats["quarantined"] >= 18 and stats["quarantined"] > 0
    d.close()
    assert warnings_of(caplog) == [warning]


def test_a_cache_row_that_is_not_an_answer_is_a_miss(
        openai_sim: SimServer, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LLMDISPATCH_HOME", str(tmp_path))
    with dispatcher(openai_sim) as d:
        first = d.send("q", TARGET, max_tokens=20, temperature=0)
        with closing(sqlite3.connect(tmp_path / "ledger.db")) as conn:
            conn.execute("UPDATE cache SET answer = '{\"key\": [1, 2'")
            conn.commit()
        for _ in range(2):
            again = d.send("q", TARGET, max_tokens=20, temperature=0)
            assert again.text == first.text and not again.cached  # asked the vendor again
            with closing(sqlite3.connect(tmp_path / "ledger.db")) as conn:
                conn.execute("UPDATE cache SET answer = '{\"key\": [1, 2'")
                conn.commit()
    (warning,) = warnings_of(caplog)
    assert "the response cache could not read an answer" in warning
