"""The SQLite ledger: file and schema, round trips and queries, text storage, the writer
thread (never blocks the caller, drops nothing, flushes at exit), durability across a
SIGKILL, and several threads and processes writing one file."""

from __future__ import annotations

import datetime as dt
import gc
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
import time
from contextlib import closing
from pathlib import Path

import pytest

from llmdispatch_nb._types import CallRecord
from llmdispatch_nb.ledger import (
    Ledger,
    LedgerError,
    MemoryLedger,
    default_ledger,
    default_path,
)
from llmdispatch_nb.ledger._migrations import MIGRATIONS

ROOT = Path(__file__).resolve().parents[1]


def record(i: int, **kw: object) -> CallRecord:
    values: dict[str, object] = dict(
        call_id=f"call-{i // 2:06d}", attempt=1 + i % 2, timestamp=1_700_000_000.0 + i,
        vendor=("openai", "anthropic", "google")[i % 3], model_requested="m1",
        model_served="m1-2025" if i % 2 else None, status="ok" if i % 2 else "error",
        error_class=None if i % 2 else "ServerError", http_status=200 if i % 2 else 500,
        session=f"s{i % 2}", retried=bool(i % 2), latency_s=0.25 + i / 1000,
        ttft_s=0.1 if i % 4 == 1 else None, input_tokens=10 + i,
        output_tokens=(20 + i) if i % 2 else None, cost_usd=0.001 * i if i % 2 else None,
        tags=("demo", f"t{i % 3}") if i % 5 else (), params={"temperature": 0, "seed": i},
        prompt=f"prompt {i}", response=f"answer {i}" if i % 2 else None)
    values.update(kw)
    return CallRecord(**values)  # type: ignore[arg-type]


def run_python(code: str, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, **kw)  # type: ignore[call-overload]


# -- the file --------------------------------------------------------------------------


def test_the_file_is_private_in_wal_mode_and_migrated(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "data")
    ledger.write(record(1))
    ledger.flush()
    db = tmp_path / "data" / "ledger.db"
    assert ledger.path == db
    for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700
    with closing(sqlite3.connect(db)) as conn, conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        numbers = [r[0] for r in conn.execute("SELECT number FROM migrations")]
    assert numbers == [n for n, _, _ in MIGRATIONS]
    ledger.close()


def test_an_existing_file_is_made_private(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    db.touch(mode=0o644)
    os.chmod(db, 0o644)
    assert Ledger(db).count() == 0
    assert stat.S_IMODE(db.stat().st_mode) == 0o600


def test_migrations_run_once_and_a_newer_schema_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    Ledger(db).count()
    Ledger(db).count()  # a second kernel opening the same file applies nothing again
    with closing(sqlite3.connect(db)) as conn, conn:
        assert conn.execute("SELECT count(*) FROM migrations").fetchone()[0] == len(MIGRATIONS)
        conn.execute("INSERT INTO migrations VALUES (999, 'from the future', 0)")
    with pytest.raises(LedgerError, match="newer llmdispatch-nb"):
        Ledger(db).count()


def test_default_ledger_follows_llmdispatch_home_at_call_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMDISPATCH_HOME", str(tmp_path / "a"))
    first = default_ledger()
    assert first is default_ledger()
    assert first.path == default_path() == tmp_path / "a" / "ledger.db"
    monkeypatch.setenv("LLMDISPATCH_HOME", str(tmp_path / "b"))
    second = default_ledger()
    assert second is not first and second.path == tmp_path / "b" / "ledger.db"


def test_project_local_ledger(tmp_path: Path) -> None:
    ledger = Ledger.project(tmp_path)
    ledger.write(record(0))
    assert ledger.count() == 1
    assert (tmp_path / ".llmdispatch" / "ledger.db").exists()


# -- round trips and queries -----------------------------------------------------------


def test_records_come_back_exactly_as_written(tmp_path: Path) -> None:
    recs = [record(i) for i in range(12)]
    recs.append(record(12, chunks=((0.125, "Hel"), (0.25, "lo")), cache_key="k" * 64,
                        params={"stop": ["\n", "END"], "temperature": 0.5}, streamed=True,
                        usage_source="estimated", price_source="genai-prices",
                        route_reason="cheapest", reasoning_tokens=5, simulated=True))
    ledger = Ledger(tmp_path)
    for r in recs:
        ledger.write(r)
    assert ledger.records() == recs
    assert Ledger.memory().records() == []


def test_records_filter_by_session_time_tags_calls_and_limit() -> None:
    ledger = Ledger.memory()
    recs = [record(i) for i in range(20)]
    for r in recs:
        ledger.write(r)
    assert ledger.records(session="s1") == [r for r in recs if r.session == "s1"]
    since = recs[15].timestamp
    assert ledger.records(since=since) == recs[15:]
    assert ledger.records(since=dt.datetime.fromtimestamp(since, dt.UTC)) == recs[15:]
    assert ledger.records(tags="t1") == [r for r in recs if "t1" in r.tags]
    assert ledger.records(tags=["demo", "t2"]) == [r for r in recs if {"demo", "t2"} <= set(r.tags)]
    assert ledger.records(limit=3) == recs[-3:]
    assert ledger.records(session="s0", limit=2) == [r for r in recs if r.session == "s0"][-2:]
    assert ledger.records(call_ids=["call-000003", "call-000005"]) == recs[6:8] + recs[10:12]
    assert ledger.records(call_ids=[]) == []
    assert ledger.count() == 20


@pytest.mark.parametrize("mode", ["full", "hash", "off"])
def test_text_storage_setting(tmp_path: Path, mode: str) -> None:
    ledger = Ledger(tmp_path, text=mode)
    ledger.write(record(1, chunks=((0.1, "answer "), (0.2, "1"))))
    (back,) = ledger.records()
    with closing(sqlite3.connect(tmp_path / "ledger.db")) as conn, conn:
        raw = conn.execute("SELECT prompt, response, chunks FROM calls").fetchone()
    if mode == "full":
        assert (back.prompt, back.response, back.chunks) == (
            "prompt 1", "answer 1", ((0.1, "answer "), (0.2, "1")))
    elif mode == "hash":
        assert back.prompt is not None and back.prompt.startswith("sha256:")
        assert len(back.prompt) == 71 and back.response != back.prompt and back.chunks == ()
        assert b"answer" not in (tmp_path / "ledger.db").read_bytes()
        assert raw[2] is None
    else:
        assert raw == (None, None, None)
    assert ledger.count() == 1


def test_text_storage_rejects_unknown_settings(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="full, hash, off"):
        Ledger(tmp_path, text="some")
    monkeypatch.setenv("LLMDISPATCH_LEDGER_TEXT", "hash")
    assert Ledger(tmp_path / "x").text == "hash"


def test_memory_ledger_keeps_the_placeholder_api() -> None:
    plain = MemoryLedger()
    plain.write(record(0))
    plain.flush()
    assert plain.records == [record(0)]


# -- the writer ------------------------------------------------------------------------


def test_write_only_queues_so_a_locked_database_never_blocks_the_caller(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path, busy_timeout_s=0.05)
    ledger.write(record(0))
    ledger.flush()
    blocker = sqlite3.connect(tmp_path / "ledger.db", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # another kernel holding the write lock
    try:
        for i in range(1, 200):
            ledger.write(record(i))  # returns at once: the writer thread waits, not us
        with pytest.raises(LedgerError, match="could not write"):
            ledger.flush(timeout=0.5)
        assert ledger.pending() > 0
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    ledger.flush()  # the writer retried: nothing was dropped
    assert ledger.pending() == 0
    assert [r.timestamp for r in ledger.records()] == [record(i).timestamp for i in range(200)]


def test_only_call_records_are_taken_and_a_bad_one_does_not_stall_the_rest(
        caplog: pytest.LogCaptureFixture) -> None:
    ledger = Ledger.memory()
    with pytest.raises(TypeError, match="CallRecords"):
        ledger.write({"call_id": "x"})  # type: ignore[arg-type]
    ledger.write(record(0, chunks=(("not a time", "text"),)))  # cannot be stored
    ledger.write(record(1))
    assert [r.call_id for r in ledger.records()] == [record(1).call_id]
    assert "could not store 1 record" in caplog.text
    assert ledger.quarantined == 1
    ((reason, kept),) = ledger.quarantined_records()
    assert kept.call_id == record(0).call_id and "not a time" in reason


def test_a_number_field_holding_something_else_is_refused_at_write(tmp_path: Path) -> None:
    import dataclasses
    from decimal import Decimal

    ledger = Ledger(tmp_path)
    for field, value, words in (
            ("latency_s", "x", "latency_s must be a float or an int or None, not str"),
            ("cost_usd", Decimal("0.25"), "cost_usd must be a float or an int or None, not Decimal"),
            ("output_tokens", 3.5, "output_tokens must be an int or None, not float")):
        with pytest.raises(TypeError, match=words):
            ledger.write(dataclasses.replace(record(0), **{field: value}))
    # Subclasses bind and pack: a bool, a float subclass.
    class Seconds(float):
        pass

    ledger.write(dataclasses.replace(record(1), latency_s=Seconds(0.25), cache_hit=True,
                                     output_tokens=True))
    for i in range(2, 600):  # past a block's worth, so the rows are packed too
        ledger.write(record(i))
    ledger.flush()
    assert ledger.count() == 599 and ledger.pending() == 0
    assert ledger.records()[0].latency_s == 0.25
    ledger.close()


def test_close_ends_the_writer_thread_and_the_ledger_reopens(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)

    def threads() -> list[str]:  # this ledger's (other tests' ledgers come and go)
        return sorted(t.name for t in threading.enumerate()
                      if t.name.startswith(f"llmdispatch-ledger-{id(ledger):x}"))

    ledger.write(record(0))
    ledger.flush()
    assert threads() == [f"llmdispatch-ledger-{id(ledger):x}"]
    ledger._checkpointer.request()  # and its checkpoint thread, when there is one
    assert len(threads()) == 2
    ledger.close()
    assert threads() == []
    ledger.write(record(1))
    assert ledger.count() == 2
    ledger.close()
    assert threads() == []


def test_flushed_records_are_visible_to_another_connection(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    for i in range(1000):
        ledger.write(record(i))
    ledger.flush()
    with closing(sqlite3.connect(tmp_path / "ledger.db")) as conn, conn:
        assert conn.execute("SELECT count(*) FROM calls").fetchone()[0] == 1000


def test_threads_write_concurrently() -> None:
    ledger = Ledger.memory()

    def writer(t: int) -> None:
        for i in range(500):
            ledger.write(record(i, call_id=f"t{t}-{i}"))

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    ids = [r.call_id for r in ledger.records()]
    assert len(ids) == 4000 and set(ids) == {f"t{t}-{i}" for t in range(8) for i in range(500)}
    # Each thread's records stay in its own order.
    for t in range(8):
        mine = [int(c.split("-")[1]) for c in ids if c.startswith(f"t{t}-")]
        assert mine == sorted(mine)
    assert len(ledger.dataframe()) == 4000


WRITER = """
    import sys
    from llmdispatch_nb._types import CallRecord
    from llmdispatch_nb.ledger import Ledger
    path, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    ledger = Ledger(path)
    ledger.count()
    print("ready", flush=True)
    sys.stdin.readline()
    for i in range(n):
        ledger.write(CallRecord(call_id=f"{name}-{i}", attempt=1, timestamp=float(i),
                                vendor=name, model_requested="m", model_served="m",
                                status="ok", latency_s=0.5, output_tokens=i))
        if i % 97 == 0:
            ledger.flush()
    ledger.flush()
    print("done", flush=True)
"""


def test_a_new_ledger_waits_for_another_connection_holding_the_file(tmp_path: Path) -> None:
    # Another kernel mid-write on a file still in rollback mode: switching to WAL needs an
    # exclusive lock, and SQLite fails that at once instead of calling its busy handler.
    # Seen in CI as two processes opening one new ledger together.
    db = tmp_path / "held.db"
    other = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.3, lambda: other.execute("COMMIT"))
    release.start()
    try:
        ledger = Ledger(db)
        assert ledger.count() == 0
        ledger.write(record(1))
        ledger.flush()
        assert ledger.count() == 1
        check = sqlite3.connect(db)
        assert check.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        check.close()
    finally:
        release.join()
        other.close()


def test_a_ledger_dropped_without_close_closes_its_connections(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "dropped.db")
    ledger._writer.idle_exit_s = 0.01  # its thread keeps the ledger alive while it runs
    ledger.write(record(1))
    ledger.flush()
    assert ledger.count() == 1
    end = time.monotonic() + 5
    while ledger._writer._thread is not None and time.monotonic() < end:
        time.sleep(0.01)
    reading = ledger._held.read
    writing = ledger._writer_conn()  # as a caller writing a batch itself would open it
    assert reading is not None and reading is not writing
    del ledger
    gc.collect()  # the ledger is in a cycle with its writer: the collector frees it
    for conn in (reading, writing):
        with pytest.raises(sqlite3.ProgrammingError, match="closed"):
            conn.execute("SELECT 1")


def test_a_ledger_held_past_its_patience_says_so(tmp_path: Path) -> None:
    db = tmp_path / "held.db"
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        ledger = Ledger(db, busy_timeout_s=0.2)
        with pytest.raises(LedgerError, match=r"locked by another connection for 0\.2 s"):
            ledger.count()
    finally:
        other.close()
    assert ledger.count() == 0  # once the other lets go, the same ledger opens


def test_two_processes_and_a_thread_share_one_file(tmp_path: Path) -> None:
    db = str(tmp_path / "shared.db")
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(WRITER), db, name, "3000"],
                              cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True) for name in ("alpha", "beta")]
    try:
        _two_processes_and_a_thread(db, procs)
    finally:  # a failure here must not leave writers running into the next test
        for p in procs:
            with p:
                if p.poll() is None:
                    p.kill()


def _two_processes_and_a_thread(db: str, procs: list[subprocess.Popen[str]]) -> None:
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    ledger = Ledger(db)
    for i in range(1000):
        ledger.write(record(i, call_id=f"parent-{i}"))
    for p in procs:
        with p:
            out, _ = p.communicate(timeout=120)
        assert p.returncode == 0 and out.strip() == "done"
    recs = ledger.records()
    assert len(recs) == 7000
    for name in ("alpha", "beta"):
        mine = [r.output_tokens for r in recs if r.vendor == name]
        assert mine == list(range(3000))
    frame = ledger.dataframe()
    assert len(frame) == 7000 and list(frame["id"]) == sorted(frame["id"])
    assert frame["call_id"].nunique() == 7000


KILLED = """
    import os, sys, time
    from llmdispatch_nb._types import CallRecord
    from llmdispatch_nb.ledger import Ledger
    ledger = Ledger(sys.argv[1])
    for i in range(5000):
        ledger.write(CallRecord(call_id=f"c{i}", attempt=1, timestamp=float(i), vendor="v",
                                model_requested="m", model_served="m", status="ok",
                                prompt="p" * 200, response="r" * 800))
    ledger.flush()
    print("acknowledged", flush=True)
    i = 5000
    while True:  # keep writing until killed mid-stream
        ledger.write(CallRecord(call_id=f"c{i}", attempt=1, timestamp=float(i), vendor="v",
                                model_requested="m", model_served="m", status="ok"))
        i += 1
        if i % 100 == 0:
            time.sleep(0.001)
"""


def test_acknowledged_records_survive_sigkill(tmp_path: Path) -> None:
    db = str(tmp_path / "killed.db")
    with subprocess.Popen([sys.executable, "-c", textwrap.dedent(KILLED), db], cwd=ROOT,
                          stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "acknowledged"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    ledger = Ledger(db)
    ids = {r.call_id for r in ledger.records()}
    assert {f"c{i}" for i in range(5000)} <= ids
    assert len(ledger.dataframe()) == ledger.count() == len(ids)
    with closing(sqlite3.connect(db)) as conn, conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


EXITING = """
    import os, sys
    from llmdispatch_nb._types import CallRecord
    from llmdispatch_nb.ledger import Ledger
    ledger = Ledger(sys.argv[1])
    for i in range(3000):
        ledger.write(CallRecord(call_id=f"c{i}", attempt=1, timestamp=float(i), vendor="v",
                                model_requested="m", model_served="m", status="ok"))
    # No flush: the interpreter's exit must do it.
    if sys.argv[2] == "interrupt":
        raise KeyboardInterrupt
    if sys.argv[2] == "sigint":
        os.kill(os.getpid(), __import__("signal").SIGINT)
"""


@pytest.mark.parametrize("how", ["normal", "interrupt", "sigint"])
def test_queued_records_are_flushed_at_exit(tmp_path: Path, how: str) -> None:
    db = str(tmp_path / f"{how}.db")
    out = run_python(EXITING, db, how)
    assert (out.returncode == 0) == (how == "normal"), out.stderr
    assert Ledger(db).count() == 3000


def test_writing_alone_never_imports_numpy(tmp_path: Path) -> None:
    # Enough small batches that the writer packs and merges column blocks: still no numpy.
    code = """
        import sys
        from llmdispatch_nb._types import CallRecord
        from llmdispatch_nb.ledger import Ledger
        ledger = Ledger(sys.argv[1])
        for i in range(12000):
            ledger.write(CallRecord(call_id=str(i), attempt=1, timestamp=float(i), vendor="v",
                                    model_requested="m", model_served="m", status="ok"))
            if i % 7 == 0:
                ledger.flush()
        print(ledger.info()["column_blocks"], "numpy" in sys.modules)
    """
    out = run_python(code, str(tmp_path / "x.db"))
    blocks, numpy_loaded = out.stdout.split()
    assert 1 <= int(blocks) <= 8 and numpy_loaded == "False", out.stderr


# -- the column blocks behind dataframe() ----------------------------------------------


def test_dataframe_is_rebuilt_after_rows_change_behind_the_ledger(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    for i in range(50):
        ledger.write(record(i))
    assert len(ledger.dataframe()) == 50
    with closing(sqlite3.connect(tmp_path / "ledger.db")) as conn, conn:
        conn.execute("DELETE FROM calls WHERE session = 's0'")
        conn.execute("UPDATE calls SET vendor = 'renamed' WHERE id = 2")
    frame = ledger.dataframe()
    assert len(frame) == 25 and list(frame["id"]) == list(range(2, 51, 2))
    assert frame.loc[0, "vendor"] == "renamed"
    ledger.write(record(99))
    assert len(ledger.dataframe()) == 26


def test_many_small_batches_are_packed_merged_and_keep_their_order() -> None:
    ledger = Ledger.memory()
    n = 0
    for batch in range(1500):
        for _ in range(batch % 7 + 1):
            ledger.write(record(n, input_tokens=2**40 if n == 3333 else n))
            n += 1
        ledger.flush()
        if batch in (10, 700):  # a read in between packs nothing new, and changes nothing
            assert len(ledger.dataframe()) == n
    info = ledger.info()
    assert 1 <= info["column_blocks"] < 16 and info["attempts"] == n  # 16 would merge
    frame = ledger.dataframe()  # the blocks plus the newest rows no block covers yet
    assert list(frame["id"]) == list(range(1, n + 1))
    assert list(frame["input_tokens"]) == [2**40 if i == 3333 else i for i in range(n)]
    assert list(frame["call_id"].astype(str)) == [record(i).call_id for i in range(n)]
