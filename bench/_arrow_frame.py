"""For `bench/ledger_read.py`: the `calls` rows read by SQL into an Arrow table -> the same
typed frame `analysis.calls()` gives (the kept readers of issue 20, measured against the
ledger's column blocks, which stayed: see bench/RESULTS.md).

Readers: the ADBC SQLite driver (`read_table`); DuckDB's SQLite scanner, polars and
`pandas.read_sql` produce a table with the same columns in the bench itself. The conversion
works column by column and lets go of each Arrow column once its pandas column is built.
Needs pyarrow (and the reader's own package), which the project does not depend on:

    .venv/bin/pip install pyarrow adbc-driver-sqlite polars connectorx \
        duckdb==1.5.5 duckdb-extension-sqlite-scanner==1.5.5

Column types (what `analysis.calls()` promises): categoricals for call_id (in order of
first appearance) and the labels (sorted categories), `timestamp` as UTC microseconds,
nullable Int64 counts, nullable Float64 times and costs, numpy bools for the flags,
`tokens_per_s` derived, `tags` as "a,b" ("" for none).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmdispatch_nb._types import CallRecord
from llmdispatch_nb.ledger._rows import to_columns

if TYPE_CHECKING:
    import pandas as pd

# (frame column, `calls` column, type), in frame order.
FRAME_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("id", "id", "id"), ("call_id", "call_id", "call_id"), ("session", "session", "str"),
    ("timestamp", "timestamp", "time"), ("vendor", "vendor", "str"),
    ("model", "model_requested", "str"), ("model_served", "model_served", "str"),
    ("attempt", "attempt", "count"), ("status", "status", "str"),
    ("error_class", "error_class", "str"), ("http_status", "http_status", "int"),
    ("route_reason", "route_reason", "str"), ("retried", "retried", "flag"),
    ("fell_back", "fell_back", "flag"), ("streamed", "streamed", "flag"),
    ("cache_hit", "cache_hit", "flag"), ("simulated", "simulated", "flag"),
    ("latency_s", "latency_s", "float"), ("ttft_s", "ttft_s", "float"),
    ("tokens_per_s", "", "derived"), ("input_tokens", "input_tokens", "int"),
    ("output_tokens", "output_tokens", "int"), ("cache_read_tokens", "cache_read_tokens", "int"),
    ("cache_write_tokens", "cache_write_tokens", "int"),
    ("reasoning_tokens", "reasoning_tokens", "int"), ("usage_source", "usage_source", "str"),
    ("cost_usd", "cost_usd", "float"), ("price_source", "price_source", "str"),
    ("finish_reason", "finish_reason", "str"), ("tags", "tags", "tags"),
    ("original_latency_s", "original_latency_s", "float"), ("repaired", "repaired", "str"),
)
SOURCE_COLUMNS: tuple[str, ...] = tuple(src for _, src, t in FRAME_COLUMNS if src)
_SQL_TYPE = {"id": "INTEGER", "call_id": "TEXT", "str": "TEXT", "time": "REAL",
             "count": "INTEGER", "int": "INTEGER", "flag": "INTEGER", "float": "REAL",
             "tags": "TEXT"}
_TYPED_ROW = {"INTEGER": "0", "REAL": "0.0", "TEXT": "''"}
# The ADBC driver infers each column's Arrow type from its first batch of rows and refuses
# a later value of another type (a REAL column that is NULL for the first thousand rows
# comes out int64, then fails). So the query starts with one row holding a value of each
# column's declared type; it is dropped after reading. (Tables written by this ledger hold
# only their declared types: the writer checks numbers before they are queued.)
SELECT_FOR_FRAME = (
    "SELECT " + ", ".join(f"{_TYPED_ROW[_SQL_TYPE[t]]} AS {src}"
                          for _, src, t in FRAME_COLUMNS if src)
    + " UNION ALL SELECT " + ", ".join(SOURCE_COLUMNS) + " FROM calls")


def read_table(path: str | Path) -> Any:
    """Every row of `calls` in the file at `path`, in id order, as a pyarrow Table, read
    by the ADBC driver in a read-only connection of its own."""
    import adbc_driver_sqlite.dbapi as adbc

    uri = Path(path).absolute().as_uri().replace("file://", "file:", 1) + "?mode=ro"
    with adbc.connect(uri) as conn, conn.cursor() as cur:
        cur.execute(SELECT_FOR_FRAME)
        table = cur.fetch_arrow_table()
    return table.slice(1)


def read_connection(conn: sqlite3.Connection) -> Any:
    """The same table through a sqlite3 connection (an in-memory ledger, which no other
    connection can see): rows as Python objects, into Arrow column by column."""
    import pyarrow as pa

    rows = conn.execute(f"SELECT {', '.join(SOURCE_COLUMNS)} FROM calls ORDER BY id").fetchall()
    types = {"INTEGER": pa.int64(), "REAL": pa.float64(), "TEXT": pa.string()}
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(SOURCE_COLUMNS)
    del rows
    fields = [(src, types[_SQL_TYPE[t]]) for _, src, t in FRAME_COLUMNS if src]
    return pa.table({name: pa.array(col, type=type_)
                     for (name, type_), col in zip(fields, columns, strict=True)})


def frame_from_records(records: Sequence[CallRecord]) -> pd.DataFrame:
    """The frame of records that were never stored (a list, a MemoryLedger)."""
    import pyarrow as pa

    types = {"INTEGER": pa.int64(), "REAL": pa.float64(), "TEXT": pa.string()}
    cols = to_columns(records, "off") if records else {}
    data = {}
    for _, src, t in FRAME_COLUMNS:
        if not src:
            continue
        values = list(range(1, len(records) + 1)) if src == "id" else cols.get(src, [])
        data[src] = pa.array(values, type=types[_SQL_TYPE[t]])
    return frame_from_table(pa.table(data))


def frame_from_table(table: Any) -> pd.DataFrame:
    """The typed frame of a table with SOURCE_COLUMNS (see the module docstring)."""
    import numpy as np
    import pandas as pd
    import pyarrow.compute as pc

    out: dict[str, Any] = {}
    # Kept for tokens_per_s, computed once its three sources are read.
    kept: dict[str, Any] = {}
    for name, src, type_ in FRAME_COLUMNS:
        if not src:
            continue
        index = table.schema.get_field_index(src)
        col = table.column(index)
        table = table.remove_column(index)  # this column's buffers go with `col`
        if type_ in ("id", "count"):
            out[name] = col.to_numpy()
        elif type_ == "flag":
            out[name] = col.to_numpy() != 0
        elif type_ == "int":
            nulls = col.is_null().to_numpy(zero_copy_only=False)
            values = pc.fill_null(col, 0).to_numpy()
            out[name] = pd.arrays.IntegerArray(values, nulls)
            if src == "output_tokens":
                kept["tokens"] = (values, nulls)
        elif type_ == "float":
            values = col.to_numpy()  # nulls come out NaN (SQLite stores no NaN)
            out[name] = pd.arrays.FloatingArray(values, np.isnan(values))
            if src in ("latency_s", "ttft_s"):
                kept[src] = values
        elif type_ == "time":
            arr = col.to_numpy()
            micros = np.round(arr * 1e6).astype("int64")
            del arr
            out[name] = pd.DatetimeIndex(micros.view("datetime64[us]")).tz_localize("UTC")
        else:
            codes, labels = _encoded(col)
            del col
            if type_ == "call_id":  # distinct already: first appearance order, as stored
                out[name] = _from_unique_codes(codes, labels)
            else:
                out[name] = _categorical(codes, labels, tags=type_ == "tags")
    tokens, no_tokens = kept["tokens"]
    out["tokens_per_s"] = _tokens_per_s(tokens, no_tokens, kept["latency_s"], kept["ttft_s"])
    return pd.DataFrame({name: out[name] for name, _, _ in FRAME_COLUMNS}, copy=False)


def _encoded(col: Any) -> tuple[Any, list[str]]:
    """A string column as (int32 codes, -1 for null; its distinct values), hashed in C."""
    import pyarrow as pa
    import pyarrow.compute as pc

    encoded = pc.dictionary_encode(col)
    if encoded.num_chunks == 0:
        return pa.array([], pa.int32()).to_numpy(), []
    labels = encoded.chunk(0).dictionary.to_pylist()
    codes = pc.fill_null(pa.chunked_array([c.indices for c in encoded.chunks]), -1)
    return codes.to_numpy().astype("int32", copy=False), labels


def _from_unique_codes(codes: Any, categories: Any) -> Any:
    """A Categorical from codes into categories known to be distinct, skipping pandas'
    uniqueness check (a second hash of a million call ids); the public path otherwise."""
    import pandas as pd

    index = pd.Index(categories, dtype="str")
    try:
        dtype = pd.CategoricalDtype._from_fastpath(index, False)
        return pd.Categorical._simple_new(codes, dtype)
    except (AttributeError, TypeError):  # pandas moved its internals: take the long way
        return pd.Categorical.from_codes(codes, categories=index, validate=False)


def _code_dtype(labels: int) -> Any:
    import numpy as np

    return np.int8 if labels <= 127 else np.int16 if labels <= 32767 else np.int32


def _categorical(codes: Any, names: list[str], *, tags: bool = False) -> Any:
    import numpy as np

    if tags:  # JSON arrays -> "a,b"; no tags -> "" (so .str.contains needs no na=)
        names = [",".join(json.loads(s)) if s else "" for s in names]
        codes = np.where(codes < 0, len(names), codes)
        names.append("")
        merged: dict[str, int] = {}
        remap = np.array([merged.setdefault(s, len(merged)) for s in names], dtype=np.int32)
        codes, names = remap[codes], list(merged)
    # Sorted categories: vendors and models list alphabetically in every table and chart.
    order = sorted(range(len(names)), key=names.__getitem__)
    rank = np.empty(len(names) + 1, dtype=_code_dtype(len(names)))
    rank[order] = np.arange(len(names))
    rank[len(names)] = -1
    return _from_unique_codes(rank[codes], [names[i] for i in order])


def _tokens_per_s(tokens: Any, no_tokens: Any, latency: Any, ttft: Any) -> Any:
    """Output tokens over the generation time (latency less time to first token), as
    `CallRecord.output_tokens_per_s` computes it."""
    import numpy as np
    import pandas as pd

    with np.errstate(invalid="ignore", divide="ignore"):
        gen = latency - np.where(np.isnan(ttft), 0.0, ttft)
        ok = ~no_tokens & (tokens > 0) & (latency > 0) & (gen > 0)
        rate = np.divide(tokens, gen, out=gen)
    rate[~ok] = 0.0
    return pd.arrays.FloatingArray(rate, ~ok)
