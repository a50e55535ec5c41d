"""The ledger's write path in pieces: a batch of records as columns, the INSERT that leaves
out columns holding only defaults, and the column blocks (packing, merging, which blocks
merge)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import sqlite3
import struct
import sys
import threading
import time
from array import array
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from llmdispatch_nb._types import CallRecord
from llmdispatch_nb.ledger import Ledger, _blocks
from llmdispatch_nb.ledger._rows import (
    FEW_ROWS,
    ROW_FIELDS,
    TextMode,
    columns_of,
    hash_text,
    omissible,
    to_columns,
    to_row,
)


def record(i: int, **kw: Any) -> CallRecord:
    values: dict[str, Any] = dict(
        call_id=f"call-{i // 2}", attempt=1 + i % 2, timestamp=1_700_000_000.0 + i / 7,
        vendor=("openai", "anthropic", "google")[i % 3], model_requested=f"m{i % 5}",
        model_served=f"m{i % 5}-x" if i % 2 else None, status="ok" if i % 2 else "error",
        error_class=None if i % 2 else "ServerError", http_status=200 if i % 2 else None,
        session=f"s{i % 4}", retried=bool(i % 2), streamed=i % 3 == 0,
        latency_s=0.5 + i / 100, ttft_s=0.1 if i % 4 == 1 else None, input_tokens=10 + i,
        output_tokens=(20 + i) if i % 2 else None, cost_usd=i / 1000 if i % 2 else None,
        tags=("demo", f"t{i % 3}") if i % 5 else (), params={"temperature": 0, "seed": i},
        prompt=f"prompt {i}", response=f"answer {i}" if i % 2 else None,
        chunks=((0.1, "ans"), (0.2, f"wer {i}")) if i % 6 == 1 else ())
    values.update(kw)
    return CallRecord(**values)


# -- a batch as columns -------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["full", "hash", "off"])
def test_a_batch_as_columns_holds_each_records_row(mode: TextMode) -> None:
    recs = [record(i) for i in range(40)]
    cols = to_columns(recs, mode)
    assert list(cols) == list(ROW_FIELDS)
    rows = list(zip(*cols.values(), strict=True))
    assert rows == [to_row(r, mode) for r in recs]  # (1 == True)
    assert columns_of(rows) == cols
    # Flags in columns as the ints SQLite stores (sqlite3 binds an int directly, a bool via
    # an adapter); a row keeps bools (sqlite3 binds them as 0/1 all the same).
    assert cols["retried"][:3] == [0, 1, 0] and {type(v) for v in cols["retried"]} == {int}
    row = dict(zip(ROW_FIELDS, to_row(record(1), mode), strict=True))
    assert (row["retried"], row["fell_back"]) == (True, False)
    assert row["tags"] == '["demo","t1"]'.replace(",", ", ")
    assert row["params"] == '{"seed": 1, "temperature": 0}'
    if mode == "full":
        assert (row["prompt"], row["response"]) == ("prompt 1", "answer 1")
        assert row["chunks"] == '[[0.1, "ans"], [0.2, "wer 1"]]'
    elif mode == "hash":
        assert row["prompt"].startswith("sha256:") and row["chunks"] is None
    else:
        assert (row["prompt"], row["response"], row["chunks"]) == (None, None, None)


def test_hashed_text_is_the_sha256_of_its_utf8_even_with_a_lone_surrogate() -> None:
    assert hash_text("héllo") == "sha256:" + hashlib.sha256("héllo".encode()).hexdigest()
    assert hash_text("a\ud800") == "sha256:" + hashlib.sha256(b"a\xed\xa0\x80").hexdigest()
    recs = [record(i, prompt="a\ud800" if i == 40 else f"p{i}") for i in range(50)]
    assert to_columns(recs, "hash")["prompt"] == [hash_text(r.prompt or "") for r in recs]


def test_only_columns_holding_nothing_but_their_default_are_left_out() -> None:
    quiet = to_columns([record(i, retried=False, streamed=False, error_class=None)
                        for i in range(0, 20, 2)], "full")
    left_out = omissible(quiet)
    assert {"retried", "fell_back", "streamed", "cache_hit", "simulated", "error_class",
            "model_served", "output_tokens", "cache_key", "reasoning_tokens", "ttft_s"} <= left_out
    # Never a column the table requires, nor one with a value in any row.
    assert not left_out & {"call_id", "attempt", "timestamp", "vendor", "model_requested",
                           "status", "session", "latency_s", "prompt", "input_tokens"}
    mixed = to_columns([record(0), record(1, cache_hit=True, cache_key="k")], "full")
    assert not omissible(mixed) & {"cache_hit", "cache_key", "retried", "model_served"}


def test_batches_with_columns_left_out_read_back_exactly(tmp_path: Path) -> None:
    every_flag = [record(i, retried=True, fell_back=True, streamed=True, cache_hit=True,
                         simulated=True, cache_key=f"k{i}", reasoning_tokens=i,
                         cache_read_tokens=1, cache_write_tokens=2, usage_source="reported",
                         price_source="p", finish_reason="stop", request_id=f"r{i}",
                         route_reason="explicit", error_message="m") for i in range(40)]
    bare = [CallRecord(call_id=f"bare{i}", attempt=1, timestamp=float(i), vendor="v",
                       model_requested="m", model_served=None, status="error")
            for i in range(40)]
    mixed = [record(i) for i in range(40)]
    assert len(bare) >= FEW_ROWS  # batches that go in column by column
    ledger = Ledger(tmp_path)
    for batch in (every_flag, bare, mixed, bare[:1], every_flag[:1]):
        ledger._write_batch(batch)  # one batch each (as a busy writer takes them)
    assert ledger.records() == every_flag + bare + mixed + bare[:1] + every_flag[:1]
    with closing(sqlite3.connect(tmp_path / "ledger.db")) as conn, conn:  # defaults as SQLite stores them
        assert conn.execute("SELECT DISTINCT retried, cache_hit, chunks, tags FROM calls "
                            "WHERE call_id LIKE 'bare%'").fetchall() == [(0, 0, None, None)]
    frame = ledger.dataframe()
    assert list(frame["cache_hit"]) == [True] * 40 + [False] * 80 + [False, True]


def test_a_record_that_cannot_be_stored_leaves_the_rest_of_a_big_batch(
        caplog: pytest.LogCaptureFixture) -> None:
    ledger = Ledger.memory()
    recs = [record(i) for i in range(50)]
    bad = record(99, chunks=(("not a time", "text"),))
    ledger._writer.linger_s = 1.0  # the 51 records gather into one batch
    for r in [*recs[:20], bad, *recs[20:]]:
        ledger.write(r)
    assert ledger.records() == recs
    assert "could not store 1 record" in caplog.text and ledger.quarantined == 1


# -- column blocks --------------------------------------------------------------------------


def values_of(blob: bytes) -> dict[str, list[Any]]:
    """A block's columns as plain values (None for null), whatever kinds they are stored in."""
    n, cols = _blocks.decode(blob)
    out: dict[str, list[Any]] = {}
    for name, (kind, arr, extra) in cols.items():
        values = arr.tolist()
        if kind in ("c1", "c2", "c4"):
            values = [extra[c] if c >= 0 else None for c in values]
        elif kind == "i4":
            values = [None if v == _blocks.NULL_I4 else v for v in values]
        elif kind == "f8":
            values = [None if math.isnan(v) else v for v in values]
        assert len(values) == n
        out[name] = values
    return out


def foreign(blob: bytes) -> bytes:
    """The same block as a machine of the other byte order writes it."""
    other = "big" if sys.byteorder == "little" else "little"
    n, _, cols = _blocks._columns(blob)
    swapped = []
    for name, (kind, data, extra) in cols.items():
        if kind in _blocks._TYPECODES:
            values = array(_blocks._TYPECODES[kind], bytes(data))
            values.byteswap()
            data = memoryview(values.tobytes())
        swapped.append((name, kind, bytes(data), extra))
    return _blocks._pack(n, swapped, other)


def test_merged_blocks_hold_what_one_block_of_all_the_rows_holds() -> None:
    # 300 distinct call ids (each piece alone fits one-byte codes, together they need two),
    # a token count past 2**31 in one piece only, nulls of every type, ids with a gap.
    recs = [record(i, input_tokens=2**40 if i == 150 else 10 + i) for i in range(300)]
    cols = to_columns(recs, "off")
    ids = list(range(1, 201)) + list(range(500, 600))
    whole = _blocks.encode(ids, cols)

    def piece(a: int, b: int) -> bytes:
        return _blocks.encode(ids[a:b], {k: v[a:b] for k, v in cols.items()})

    pieces = [piece(0, 100), foreign(piece(100, 140)), piece(140, 141), piece(141, 300)]
    merged = _blocks.merge(pieces)
    assert values_of(merged) == values_of(whole)
    assert values_of(merged)["input_tokens"][150] == 2**40
    assert values_of(whole)["call_id"][:3] == ["call-0", "call-0", "call-1"]
    assert values_of(_blocks.merge([foreign(whole)])) == values_of(whole)
    assert values_of(_blocks.merge([piece(0, 50), piece(50, 200)]))["id"] == list(range(1, 201))


def test_a_block_from_rows_read_back_matches_one_from_columns() -> None:
    recs = [record(i) for i in range(20)]
    rows = [to_row(r, "full") for r in recs]
    assert _blocks.encode_rows(range(1, 21), rows) == _blocks.encode(range(1, 21),
                                                                     to_columns(recs, "full"))
    with pytest.raises(ValueError, match="one row id per row"):
        _blocks.encode(range(1, 5), to_columns(recs, "full"))


def test_small_blocks_merge_and_a_busy_writers_batches_stay_as_they_are() -> None:
    final = _blocks.FINAL_ROWS
    # A busy writer's batches (up to 5,000 records): re-encoding them cost a tenth of the
    # write rate and gained reads nothing.
    assert _blocks.plan_merge([(i, 5000) for i in range(40)]) == []
    assert _blocks.plan_merge([(i, 600) for i in range(16)]) == list(range(16))
    assert _blocks.plan_merge([(i, 600) for i in range(15)]) == []
    assert _blocks.plan_merge([(0, final), (1, 20), (2, 600)]) == [1, 2]
    ledger = Ledger.memory(text="off")
    n = 0
    for _ in range(3):  # three batches as a busy writer takes them: three final blocks
        ledger._write_batch([record(i) for i in range(n, n + final + 10)])
        n += final + 10
    assert ledger.info()["column_blocks"] == 3
    frame = ledger.dataframe()
    assert list(frame["id"]) == list(range(1, n + 1))
    assert list(frame["call_id"].astype(str)) == [f"call-{i // 2}" for i in range(n)]


# -- many rows to an INSERT, and checkpoints off the writer's thread ------------------------


@pytest.mark.parametrize("variables", [None, 100])
def test_batches_of_every_size_go_in_whole_and_in_order(variables: int | None) -> None:
    ledger = Ledger.memory()
    if variables is not None:  # an SQLite built with a small limit: one row at a time
        with ledger._reading() as conn:
            conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, variables)
    sizes = [1, 7, 8, 9, 63, 64, 65, 72, 200, 1000]
    recs = [record(i) for i in range(sum(sizes))]
    start = 0
    for size in sizes:
        ledger._write_batch(recs[start:start + size])
        start += size
    assert ledger.records() == recs
    with ledger._reading() as conn:
        ids = [r[0] for r in conn.execute("SELECT id FROM calls ORDER BY id")]
        assert ids == list(range(1, len(recs) + 1))
    assert list(ledger.dataframe()["call_id"].astype(str)) == [r.call_id for r in recs]


def test_checkpoints_run_on_their_own_thread_and_end_with_close(tmp_path: Path) -> None:
    def checkpointers() -> list[str]:
        return [t.name for t in threading.enumerate() if t.name.endswith("-ckpt")]

    before = checkpointers()
    ledger = Ledger(tmp_path)
    text = "x" * 3000
    for i in range(6000):  # ~18 MB of text: past the point where the writer asks for one
        ledger.write(record(i, prompt=text))
    ledger.flush()
    deadline = time.monotonic() + 60
    while ledger._checkpointer.done == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ledger._checkpointer.done >= 1
    # The rows reached the database file itself, not only the write-ahead log (the writer's
    # own connection would checkpoint only past 64 MB).
    assert (tmp_path / "ledger.db").stat().st_size > 8 << 20
    assert len(checkpointers()) == len(before) + 1
    ledger.close()
    assert checkpointers() == before
    assert ledger.count() == 6000
    with closing(sqlite3.connect(tmp_path / "ledger.db")) as conn, conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


# -- block format version 2: the columns migration 2 added reach calls() ---------------------


def version_1(blob: bytes, version: int = 1) -> bytes:
    """A block as an older format version wrote it: without the columns added since."""
    n, order, cols = _blocks._columns(blob)
    later = {name for v, names in _blocks.ADDED.items() if v > version for name in names}
    kept = [(name, kind, bytes(data), extra) for name, (kind, data, extra) in cols.items()
            if name not in later]
    header = json.dumps({"v": version, "n": n, "order": order,
                         "cols": [[name, kind, len(data), extra]
                                  for name, kind, data, extra in kept]}).encode()
    return b"".join([_blocks.MAGIC, struct.pack("<I", len(header)), header,
                     *(data for _, _, data, _ in kept)])


def to_version_1(path: Path, version: int = 1) -> int:
    """Rewrite every column block of the file at `path` as an older version wrote it."""
    with closing(sqlite3.connect(path)) as conn, conn:
        blocks = conn.execute("SELECT id, data FROM call_blocks").fetchall()
        for bid, data in blocks:
            conn.execute("UPDATE call_blocks SET data = ? WHERE id = ?",
                         (version_1(data, version), bid))
    return len(blocks)


def versions(path: Path) -> set[int]:
    with closing(sqlite3.connect(path)) as conn:
        return {json.loads(data[8:8 + struct.unpack_from("<I", data, 4)[0]])["v"]
                for (data,) in conn.execute("SELECT data FROM call_blocks")}


def noted(i: int) -> CallRecord:
    """Records with the two newest columns set: a cache hit's original latency, and a token
    count past 64 bits that the ledger stores as NULL and notes in `repaired`."""
    return record(i, original_latency_s=1.25 + i if i % 3 == 0 else None,
                  input_tokens=2**70 if i % 7 == 0 else 10 + i)


def test_repaired_and_original_latency_reach_calls_from_every_source(tmp_path: Path) -> None:
    import pandas as pd

    from llmdispatch_nb.analysis import calls

    recs = [noted(i) for i in range(700)]
    ledger = Ledger(tmp_path)
    for r in recs:
        ledger.write(r)
    stored = ledger.records()
    assert stored[0].repaired and "input_tokens" in stored[0].repaired and not stored[1].repaired
    frame = calls(ledger)
    assert str(frame["original_latency_s"].dtype) == "Float64"
    assert isinstance(frame["repaired"].dtype, pd.CategoricalDtype)
    assert [None if pd.isna(v) else v for v in frame["original_latency_s"]] == [
        r.original_latency_s for r in stored]
    assert [None if pd.isna(v) else v for v in frame["repaired"]] == [r.repaired for r in stored]
    assert sum(frame["repaired"].notna()) == 100
    # The same columns from a list of records and from a ledger in memory.
    memory = Ledger.memory()
    for r in recs:
        memory.write(r)
    pd.testing.assert_frame_equal(calls(memory), frame)
    pd.testing.assert_frame_equal(calls(stored), frame)


def test_a_version_1_block_upgraded_is_the_block_version_2_writes() -> None:
    recs = [noted(i) for i in range(300)]
    cols = to_columns(recs, "off")
    ids = list(range(1, 201)) + list(range(500, 600))
    current = _blocks.encode(ids, cols)
    old = version_1(current)
    assert _blocks.added_since(old) == ("original_latency_s", "repaired", "schema_valid")
    assert _blocks.added_since(version_1(current, 2)) == ("schema_valid",)
    assert _blocks.added_since(current) == ()
    added = {name: cols[name] for name in (*_blocks.ADDED[2], *_blocks.ADDED[3])}
    assert _blocks.upgrade(old, added) == current  # the other columns kept byte for byte
    # What it cannot upgrade is left to a rebuild from the rows.
    assert _blocks.upgrade(old, {"repaired": cols["repaired"]}) is None
    assert _blocks.upgrade(old, {k: v[:-1] for k, v in added.items()}) is None
    assert _blocks.upgrade(version_1(foreign(current)), added) is None
    assert _blocks.upgrade(version_1(current, 2), {"schema_valid": cols["schema_valid"]}) \
        == current
    assert _blocks.added_since(b"LDB1" + old[4:].replace(b'"v": 1', b'"v": 9', 1)) is None


def test_an_old_files_version_1_blocks_are_upgraded_and_read_the_same_rows(
        tmp_path: Path) -> None:
    import pandas as pd

    from llmdispatch_nb.ledger._frame import frame_from_records

    ledger = Ledger(tmp_path)
    for r in (noted(i) for i in range(3000)):
        ledger.write(r)
    ledger.flush()
    stored = ledger.records()
    ledger.close()
    assert to_version_1(tmp_path / "ledger.db") >= 1
    assert versions(tmp_path / "ledger.db") == {1}
    with closing(sqlite3.connect(tmp_path / "ledger.db")) as conn:
        blocks = conn.execute("SELECT id, n, first_id, last_id FROM call_blocks").fetchall()
    again = Ledger(tmp_path)
    frame = again.dataframe()  # refuses the old blocks, then upgrades them in place
    pd.testing.assert_frame_equal(frame, frame_from_records(stored))
    assert versions(tmp_path / "ledger.db") == {_blocks.VERSION}
    with closing(sqlite3.connect(tmp_path / "ledger.db")) as conn:  # not rebuilt
        assert conn.execute("SELECT id, n, first_id, last_id FROM call_blocks").fetchall() \
            == blocks
    assert again.records() == stored


def test_blocks_that_cannot_be_upgraded_are_rebuilt_from_the_rows(tmp_path: Path) -> None:
    import pandas as pd

    from llmdispatch_nb.ledger._frame import frame_from_records

    ledger = Ledger(tmp_path)
    for r in (noted(i) for i in range(1500)):
        ledger.write(r)
    ledger.flush()
    ledger.close()
    with closing(sqlite3.connect(tmp_path / "ledger.db")) as conn, conn:
        for bid, data in conn.execute("SELECT id, data FROM call_blocks").fetchall():
            conn.execute("UPDATE call_blocks SET data = ? WHERE id = ?",
                         (version_1(foreign(data)), bid))
    again = Ledger(tmp_path)
    pd.testing.assert_frame_equal(again.dataframe(), frame_from_records(again.records()))
    assert versions(tmp_path / "ledger.db") == {_blocks.VERSION}


def test_a_writer_meeting_old_blocks_leaves_them_unmerged_and_keeps_every_record(tmp_path: Path) -> None:
    import pandas as pd

    from llmdispatch_nb.ledger._frame import frame_from_records

    old = Ledger(tmp_path)
    for r in (noted(i) for i in range(20)):
        old.write(r)
    old.flush()
    old.rebuild_blocks()  # one small block: the next, bigger one would merge with it
    old.close()
    to_version_1(tmp_path / "ledger.db")
    ledger = Ledger(tmp_path)
    for r in (noted(i) for i in range(20, 700)):
        ledger.write(r)
    ledger.flush()
    # The writer met the version 1 block when merging: it left it unmerged, and set
    # nothing aside for it.
    assert ledger.quarantined == 0 and ledger.count() == 700
    assert versions(tmp_path / "ledger.db") == {1, _blocks.VERSION}
    pd.testing.assert_frame_equal(ledger.dataframe(), frame_from_records(ledger.records()))
    assert versions(tmp_path / "ledger.db") == {_blocks.VERSION}


# -- block format version 3: schema_valid (migration 3) reaches calls() -----------------------


def _with_schema(i: int) -> CallRecord:
    """Records as structured-output calls leave them: valid, invalid, or no schema asked."""
    return dataclasses.replace(noted(i), schema_valid=(True, False, None)[i % 3])


def schema_column(frame: Any) -> list[bool | None]:
    import pandas as pd

    assert str(frame["schema_valid"].dtype) == "boolean"
    return [None if pd.isna(v) else bool(v) for v in frame["schema_valid"]]


@pytest.mark.parametrize("source", ["live", "from version 2", "from version 1", "rebuilt"])
def test_schema_valid_reaches_calls_from_every_source(tmp_path: Path, source: str) -> None:
    import pandas as pd

    from llmdispatch_nb.analysis import calls
    from llmdispatch_nb.ledger._frame import frame_from_records

    ledger = Ledger(tmp_path)
    for i in range(1500):
        ledger.write(_with_schema(i))
    ledger.flush()
    stored = ledger.records()
    assert [r.schema_valid for r in stored[:3]] == [True, False, None]
    if source != "live":
        ledger.close()
        path = tmp_path / "ledger.db"
        if source == "rebuilt":  # a block no upgrade can take: rebuilt from the rows
            with closing(sqlite3.connect(path)) as conn, conn:
                for bid, data in conn.execute("SELECT id, data FROM call_blocks").fetchall():
                    conn.execute("UPDATE call_blocks SET data = ? WHERE id = ?",
                                 (version_1(foreign(data), 2), bid))
        else:
            assert to_version_1(path, int(source[-1])) >= 1
        with closing(sqlite3.connect(path)) as conn:
            blocks = conn.execute("SELECT id, n, first_id, last_id FROM call_blocks").fetchall()
        ledger = Ledger(tmp_path)
    frame = calls(ledger)
    assert schema_column(frame) == [r.schema_valid for r in stored]
    assert schema_column(frame)[:3] == [True, False, None]
    pd.testing.assert_frame_equal(frame, frame_from_records(stored))
    assert versions(tmp_path / "ledger.db") == {_blocks.VERSION}
    if source.startswith("from"):  # upgraded in place, not rebuilt
        with closing(sqlite3.connect(tmp_path / "ledger.db")) as conn:
            assert conn.execute(
                "SELECT id, n, first_id, last_id FROM call_blocks").fetchall() == blocks
    ledger.close()


def test_schema_valid_from_records_and_merged_blocks_keeps_its_three_values() -> None:
    recs = [_with_schema(i) for i in range(40)]
    cols = to_columns(recs, "off")
    whole = _blocks.encode(range(1, 41), cols)
    halves = [_blocks.encode(range(1, 21), {k: v[:20] for k, v in cols.items()}),
              _blocks.encode(range(21, 41), {k: v[20:] for k, v in cols.items()})]
    assert _blocks.merge(halves) == whole
    # Rows hold 1/0/NULL; a value edited in by hand reads as yes rather than failing.
    from_rows = _blocks._column("schema_valid", "yesno", [1, 0, None, 5])
    assert from_rows == ("schema_valid", "y1", bytes([1, 0, _blocks.YESNO_NULL, 1]), None)
    _, decoded = _blocks.decode(whole)
    assert decoded["schema_valid"][0] == "y1"
    assert decoded["schema_valid"][1].tolist()[:3] == [1, 0, _blocks.YESNO_NULL]
