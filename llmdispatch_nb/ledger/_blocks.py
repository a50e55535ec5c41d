"""Column blocks: the analysis columns of a run of `calls` rows, packed for fast reading.

Format (one blob): b"LDB1", a little-endian u32 header length, a JSON header
{"v": 3, "n": rows, "order": "little"|"big", "cols": [[name, kind, nbytes, extra], ...]},
then each column's bytes in header order. Each column has a type, and each block stores it
in the smallest kind that holds that block's values:

    type   kinds                                    for
    id     range (extra: first id; no bytes), i8    the row id
    int    i4 (-2**31 is null), f8 (NaN is null)     attempt, http status, token counts
    float  f8 (NaN is null)                          timestamp, latency, ttft, cost
    flag   u1                                        retried, fell back, streamed, ...
    yesno  y1: u1, 1 yes, 0 no, 2 null               schema_valid (no schema asked: null)
    str    c1, c2, c4: int8/16/32 codes into extra   call id, session, vendor, model, ...
           (the block's distinct strings), -1 null

Version 2 added `original_latency_s` and `repaired` (schema migration 2's columns), version 3
`schema_valid` (migration 3's). A block of another version is refused (ValueError). A read
then brings older blocks up to date with `upgrade`, packing only the added columns from the rows (a million rows: about three
CPU-seconds, against eighteen for a rebuild from every column), and rebuilds from the rows
what it cannot upgrade; the writer leaves such blocks unmerged (see `_store._compact`).

Why blocks and not a kept reader straight from the rows: reading a million rows through
the ADBC SQLite driver, DuckDB's SQLite scanner, polars (ConnectorX) or sqlite3 with
`pandas.read_sql` cost 4-12x the CPU time and 1.5-2.4x the peak memory of these blocks
(issue 20; `bench/ledger_read.py`, figures in bench/RESULTS.md).

Encoding and merging use only the standard library: they run on the ledger's writer
thread, which must not pull numpy into a script that never analyses anything (nor import
it on a second thread while the main one checks for it). Decoding into arrays uses numpy,
on the thread that asked for a DataFrame.
"""

from __future__ import annotations

import itertools
import json
import math
import operator
import sqlite3
import struct
import sys
from array import array
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ._rows import columns_of

MAGIC = b"LDB1"
VERSION = 3
NULL_I4 = -(2**31)

# (name, type) in block order; names are ROW_FIELDS names, plus "id".
BLOCK_COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "id"), ("call_id", "str"), ("attempt", "int"), ("timestamp", "float"),
    ("session", "str"), ("vendor", "str"), ("model_requested", "str"), ("model_served", "str"),
    ("status", "str"), ("error_class", "str"), ("http_status", "int"), ("route_reason", "str"),
    ("retried", "flag"), ("fell_back", "flag"), ("streamed", "flag"), ("latency_s", "float"),
    ("ttft_s", "float"), ("input_tokens", "int"), ("output_tokens", "int"),
    ("cache_read_tokens", "int"), ("cache_write_tokens", "int"), ("reasoning_tokens", "int"),
    ("usage_source", "str"), ("cost_usd", "float"), ("price_source", "str"),
    ("cache_hit", "flag"), ("simulated", "flag"), ("finish_reason", "str"), ("tags", "str"),
    ("original_latency_s", "float"), ("repaired", "str"), ("schema_valid", "yesno"),
)
_NAN = math.nan
# The block columns each format version added: what `upgrade` packs into an older block.
ADDED: dict[int, tuple[str, ...]] = {2: ("original_latency_s", "repaired"),
                                      3: ("schema_valid",)}
# A yes/no/unknown value as its y1 byte: records hold True/False/None, rows 1/0/NULL
# (True == 1 and False == 0 as keys, so one table serves both).
YESNO_NULL = 2
_YESNO_BYTE: dict[Any, int] = {None: YESNO_NULL, True: 1, False: 0}

# The newest rows are packed once this many lie uncovered (until then a read packs them on
# the fly: a few hundred rows cost milliseconds); one transaction per call stays cheap.
MIN_ROWS = 512
# Blocks below this many rows are merged with their neighbours (see `plan_merge`). A read
# costs the same from 200 blocks of 5,000 rows as from 13 of 80,000 (measured at a million
# rows), so the batches a busy writer packs are final as they are: merging them again cost
# a tenth of the write rate.
FINAL_ROWS = 4096
MERGE_FANOUT = 16
# At most this many rows are packed in one go: by the writer, which leaves a longer tail
# (rows another program added) to the next read, and by a read, which packs it in pieces.
TAIL_ROWS = 65_536

Column = tuple[str, str, bytes, Any]  # name, kind, bytes, extra
Prepared = list[Column]


def _pack(n: int, cols: Sequence[Column], order: str = sys.byteorder) -> bytes:
    header = json.dumps({"v": VERSION, "n": n, "order": order,
                         "cols": [[name, kind, len(data), extra]
                                  for name, kind, data, extra in cols]},
                        ensure_ascii=False, separators=(",", ":")).encode()
    return b"".join([MAGIC, struct.pack("<I", len(header)), header, *(c[2] for c in cols)])


def _code_kind(distinct: int) -> tuple[str, str]:
    """The narrowest code width for this many distinct strings (-1 must fit too)."""
    if distinct <= 127:
        return "c1", "b"
    if distinct <= 32767:
        return "c2", "h"
    return "c4", "i"


def _packed(code: str, values: Sequence[Any]) -> bytes:
    """Values as a C array in native byte order. struct.pack converts each value in C;
    array(code, values) parses each one like a function argument, at three times the cost."""
    return struct.pack(f"={len(values)}{code}", *values)


def prepare(columns: Mapping[str, Sequence[Any]]) -> Prepared:
    """Pack every block column but the row id, from {field: values} (`_rows.to_columns`;
    fields no block keeps may be missing).

    Split from `finish` so the writer does this before it takes the database's write lock.
    """
    return [_column(name, type_, columns[name]) for name, type_ in BLOCK_COLUMNS if type_ != "id"]


def _column(name: str, type_: str, col: Sequence[Any]) -> Column:
    """One column packed in the smallest kind of its type that holds its values."""
    # Most columns of most batches hold no nulls: pack them as they are, and replace
    # the nulls only when packing fails (looking for them first cost more).
    if type_ == "float":
        try:
            floats = _packed("d", col)
        except struct.error:
            floats = _packed("d", [_NAN if v is None else v for v in col])
        return (name, "f8", floats, None)
    if type_ == "int":
        try:
            try:
                ints = _packed("i", col)
            except struct.error:
                ints = _packed("i", [NULL_I4 if v is None else v for v in col])
            return (name, "i4", ints, None)
        except struct.error:  # a count past 2**31, or not a whole number
            floats = _packed("d", [_NAN if v is None else v for v in col])
            return (name, "f8", floats, None)
    if type_ == "flag":
        return (name, "u1", bytes(map(bool, col)), None)
    if type_ == "yesno":
        try:  # itemgetter of one key gives the value, not a 1-tuple; of none, an error
            codes = (operator.itemgetter(*col)(_YESNO_BYTE) if len(col) > 1
                     else [_YESNO_BYTE[v] for v in col])
        except (KeyError, TypeError):  # a row edited by hand to hold 2, "yes", ...
            codes = [YESNO_NULL if v is None else 1 if v else 0 for v in col]
        return (name, "y1", bytes(codes), None)
    return (name, *_codes(col))


def _codes(col: Sequence[Any]) -> tuple[str, bytes, list[Any]]:
    """A string column as (kind, codes, the distinct strings the codes index); -1 is null.
    Every step runs in C: no Python loop per value."""
    index: dict[Any, int] = dict.fromkeys(col, -1)
    index.pop(None, None)
    distinct = list(index)
    index.update(zip(distinct, range(len(distinct)), strict=True))
    index[None] = -1
    kind, code = _code_kind(len(distinct))
    # itemgetter of one key gives the value, not a 1-tuple; of none, an error.
    codes = operator.itemgetter(*col)(index) if len(col) > 1 else [index[v] for v in col]
    return kind, _packed(code, codes), distinct


def finish(ids: Sequence[int], prepared: Prepared) -> bytes:
    """The block: `prepared` columns plus the row ids they were stored under."""
    n = len(ids)
    if _contiguous(ids):
        id_col: Column = ("id", "range", b"", int(ids[0]))
    else:
        id_col = ("id", "i8", array("q", ids).tobytes(), None)
    return _pack(n, [id_col, *prepared])


def _contiguous(ids: Sequence[int]) -> bool:
    """Ids n, n+1, n+2, ...: stored as their first alone."""
    if not len(ids):
        return False
    if isinstance(ids, range):
        return ids.step == 1
    return ids[-1] - ids[0] == len(ids) - 1 and all(
        b - a == 1 for a, b in itertools.pairwise(ids))


def encode(ids: Sequence[int], columns: Mapping[str, Sequence[Any]]) -> bytes:
    """The block of rows given as {field: values}, stored under `ids`."""
    if any(len(columns[name]) != len(ids) for name, type_ in BLOCK_COLUMNS if type_ != "id"):
        raise ValueError("one row id per row")
    return finish(ids, prepare(columns))


def encode_rows(ids: Sequence[int], rows: Sequence[Sequence[Any]]) -> bytes:
    """The block of rows in ROW_FIELDS order (no row id), stored under `ids`."""
    if len(ids) != len(rows):
        raise ValueError("one row id per row")
    return finish(ids, prepare(columns_of(rows)))


def _any_header(blob: bytes) -> tuple[dict[str, Any], int]:
    """The header of a block of any version, and where its columns start."""
    if blob[:4] != MAGIC:
        raise ValueError("not a ledger column block")
    (size,) = struct.unpack_from("<I", blob, 4)
    return json.loads(blob[8:8 + size]), 8 + size


def read_header(blob: bytes) -> tuple[dict[str, Any], int]:
    header, offset = _any_header(blob)
    if header.get("v") != VERSION:
        raise ValueError(f"column block version {header.get('v')} is not {VERSION}")
    return header, offset


def added_since(blob: bytes) -> tuple[str, ...] | None:
    """The columns a block of an older version lacks (none for a current block); None if
    `upgrade` cannot bring it up to date (a block of an unknown or newer version)."""
    try:
        version = _any_header(blob)[0].get("v")
    except ValueError:
        return None
    if not isinstance(version, int) or not 1 <= version <= VERSION:
        return None
    return tuple(name for v in range(version + 1, VERSION + 1) for name in ADDED[v])


def upgrade(blob: bytes, added: Mapping[str, Sequence[Any]]) -> bytes | None:
    """A block of an older version as this version writes it, given the values of the
    columns added since (`added_since`) for its rows, in row order; its other columns are
    kept byte for byte. None if it cannot be (another byte order, other row counts)."""
    needed = added_since(blob)
    if needed is None or set(added) != set(needed):
        return None
    n, order, cols = _columns(blob, check_version=False)
    if order != sys.byteorder or any(len(values) != n for values in added.values()):
        return None
    types = dict(BLOCK_COLUMNS)
    kept = [(name, kind, bytes(data), extra) for name, (kind, data, extra) in cols.items()]
    return _pack(n, [*kept, *(_column(name, types[name], added[name]) for name in needed)])


def upgrade_stored(conn: sqlite3.Connection) -> bool:
    """Bring column blocks of an older format up to this one (inside the caller's write
    transaction), reading from the rows only the columns added since (`upgrade`).
    True if any block was upgraded; blocks that cannot be are left for a rebuild."""
    upgraded = False
    for (bid,) in conn.execute("SELECT id FROM call_blocks ORDER BY id").fetchall():
        first, last, data = conn.execute(
            "SELECT first_id, last_id, data FROM call_blocks WHERE id = ?", (bid,)).fetchone()
        names = added_since(data)
        if not names:  # current, or beyond repair: a rebuild's business
            continue
        # Blocks cover runs of ids in order, so the rows between a block's first and last
        # id are its rows (`upgrade` refuses them if the count differs).
        rows = conn.execute(f"SELECT {', '.join(names)} FROM calls WHERE id BETWEEN ? AND ? "
                            "ORDER BY id", (first, last)).fetchall()
        columns = list(zip(*rows, strict=True)) if rows else []
        new = upgrade(data, dict(zip(names, columns, strict=False)))
        if new is not None:
            conn.execute("UPDATE call_blocks SET data = ? WHERE id = ?", (new, bid))
            upgraded = True
    return upgraded


_DTYPES = {"i8": "i8", "i4": "i4", "f8": "f8", "u1": "u1", "y1": "u1",
           "c1": "i1", "c2": "i2", "c4": "i4"}


def decode(blob: bytes) -> tuple[int, dict[str, tuple[str, Any, Any]]]:
    """(rows, {name: (kind, array, extra)}); arrays are views into `blob`. Needs numpy."""
    import numpy as np

    header, offset = read_header(blob)
    n = int(header["n"])
    end = "<" if header["order"] == "little" else ">"
    out: dict[str, tuple[str, Any, Any]] = {}
    for name, kind, nbytes, extra in header["cols"]:
        if kind == "range":
            values = np.arange(extra, extra + n, dtype=np.int64)
        elif kind in _DTYPES:
            values = np.frombuffer(blob, end + _DTYPES[kind], n, offset)
        else:
            raise ValueError(f"unknown column kind {kind!r} in a ledger block")
        out[name] = (kind, values, extra)
        offset += nbytes
    return n, out


def _columns(blob: bytes, *, check_version: bool = True
             ) -> tuple[int, str, dict[str, tuple[str, memoryview, Any]]]:
    """(rows, byte order, {name: (kind, bytes, extra)}) without numpy."""
    header, offset = read_header(blob) if check_version else _any_header(blob)
    view = memoryview(blob)
    out: dict[str, tuple[str, memoryview, Any]] = {}
    for name, kind, nbytes, extra in header["cols"]:
        out[name] = (kind, view[offset:offset + nbytes], extra)
        offset += nbytes
    return int(header["n"]), str(header["order"]), out


def _array(typecode: str, data: memoryview, order: str) -> array[Any]:
    values = array(typecode)
    values.frombytes(data)
    if order != sys.byteorder:
        values.byteswap()
    return values


_TYPECODES = {"i8": "q", "i4": "i", "f8": "d", "c1": "b", "c2": "h", "c4": "i"}


def merge(blobs: Iterable[bytes]) -> bytes:
    """One block holding the rows of `blobs`, in order.

    Standard library only: this runs on the writer thread, and importing numpy there
    races with code on the main thread that checks whether numpy is loaded.
    """
    parts = [_columns(b) for b in blobs]
    n = sum(p[0] for p in parts)
    cols: list[Column] = []
    for name, type_ in BLOCK_COLUMNS:
        pieces = [(order, *columns[name]) for _, order, columns in parts]
        if type_ == "id":
            starts = [extra for _, kind, _, extra in pieces if kind == "range"]
            rows = [p[0] for p in parts]
            if len(starts) == len(pieces) and all(
                    starts[i] + rows[i] == starts[i + 1] for i in range(len(starts) - 1)):
                cols.append(("id", "range", b"", starts[0]))  # runs that follow on
                continue
            ids = array("q")
            for (order, kind, data, extra), count in zip(pieces, rows, strict=True):
                ids.extend(range(extra, extra + count) if kind == "range"
                           else _array("q", data, order))
            cols.append(("id", "range", b"", ids[0]) if _contiguous(ids)
                        else ("id", "i8", ids.tobytes(), None))
        elif type_ in ("flag", "yesno"):  # one byte a row either way: joined as they are
            cols.append((name, "u1" if type_ == "flag" else "y1",
                         b"".join(bytes(data) for _, _, data, _ in pieces), None))
        elif type_ == "str":
            index: dict[str, int] = {}
            runs: list[tuple[str, Any]] = []
            for order, kind, data, extra in pieces:
                remap = [index.setdefault(s, len(index)) for s in extra]
                if remap == list(range(len(remap))) and order == sys.byteorder:
                    runs.append((kind, data))  # its codes stand as they are
                else:
                    runs.append(("", _remapped(_array(_TYPECODES[kind], data, order), remap)))
            kind, typecode = _code_kind(len(index))
            cols.append((name, kind, _joined_codes(runs, kind, typecode), list(index)))
        else:  # float, or int (i4 unless some piece needed f8)
            wide = type_ == "float" or any(kind == "f8" for _, kind, _, _ in pieces)
            joined = array("d" if wide else "i")
            for order, kind, data, _ in pieces:
                values = _array(_TYPECODES[kind], data, order)
                if wide and kind == "i4":
                    values = array("d", [_NAN if v == NULL_I4 else v for v in values])
                joined.extend(values)
            cols.append((name, "f8" if wide else "i4", joined.tobytes(), None))
    return _pack(n, cols)


def _remapped(codes: Sequence[int], remap: list[int]) -> Sequence[int]:
    """Each code looked up in `remap`, in C (itemgetter of one key gives no tuple)."""
    remap.append(-1)  # slot -1 maps null (-1) to null
    return operator.itemgetter(*codes)(remap) if len(codes) > 1 else [remap[c] for c in codes]


def _joined_codes(runs: list[tuple[str, Any]], kind: str, typecode: str) -> bytes:
    """Runs of codes, each as (its kind, native bytes) or ("", codes), as one `kind` column."""
    out = []
    for was, codes in runs:
        if was == kind:
            out.append(bytes(codes))
        elif was:  # narrower codes, widened
            out.append(_packed(typecode, _array(_TYPECODES[was], codes, sys.byteorder)))
        else:
            out.append(_packed(typecode, codes))
    return b"".join(out)


def plan_merge(tail: Sequence[tuple[int, int]]) -> list[int]:
    """Which trailing blocks to merge, given (block id, rows) of the newest blocks, oldest first.

    Blocks are tiered by size (tier = log16 of rows; blocks of FINAL_ROWS rows or more are
    final). Two rules keep the count of blocks small and the rewriting of each row bounded
    (a merged row lands in a higher tier than the small blocks it came from, and there are
    three tiers): a new block merges with the smaller-tier blocks just before it, and sixteen
    trailing blocks of one tier merge into one. Only trailing runs merge, so blocks stay in
    row order.
    """
    # Only the run after the last final block counts.
    run: list[tuple[int, int]] = []
    for bid, n in reversed(tail):
        if n >= FINAL_ROWS:
            break
        run.append((bid, n))
    run.reverse()
    if len(run) < 2:
        return []
    last_tier = _tier(run[-1][1])
    smaller = 0
    for _, n in reversed(run[:-1]):
        if _tier(n) < last_tier:
            smaller += 1
        else:
            break
    if smaller:
        return [bid for bid, _ in run[-(smaller + 1):]]
    same = 0
    for _, n in reversed(run):
        if _tier(n) == last_tier:
            same += 1
        else:
            break
    if same >= MERGE_FANOUT:
        return [bid for bid, _ in run[-same:]]
    return []


def _tier(n: int) -> int:
    tier = 0
    while n >= MERGE_FANOUT:
        n //= MERGE_FANOUT
        tier += 1
    return tier
