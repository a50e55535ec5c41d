"""A `CallRecord` as a row of the `calls` table and back.

The row order is fixed: plain fields first, then the fields that need encoding (tags,
params, chunks and the two texts, which obey the text-storage setting). The writer turns a
whole batch into columns at once (`to_columns`): one C-level pass per field over the batch
costs a fifth of building the rows one record at a time, and the column blocks want columns
anyway. Flags are stored as the ints 0/1: sqlite3 binds an int directly, a bool only after
an adapter lookup that costs six times as much. `insert_rows` puts a batch's columns into
the table, many rows to a statement; `filters` is the WHERE clause rows are read back by.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import operator
import re
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from .._types import CallRecord

TextMode = Literal["full", "hash", "off"]
TEXT_MODES: tuple[str, ...] = ("full", "hash", "off")

# Copied as they are.
PLAIN_FIELDS: tuple[str, ...] = (
    "call_id", "attempt", "timestamp", "session", "vendor", "model_requested", "model_served",
    "status", "error_class", "error_message", "http_status", "request_id", "route_reason",
    "retried", "fell_back", "streamed", "latency_s", "ttft_s", "input_tokens", "output_tokens",
    "cache_read_tokens", "cache_write_tokens", "reasoning_tokens", "usage_source", "cost_usd",
    "price_source", "cache_hit", "simulated", "finish_reason", "cache_key",
    "original_latency_s", "repaired", "schema_valid",
)
# Encoded: JSON for the containers, the text-storage setting for the texts.
ENCODED_FIELDS: tuple[str, ...] = ("tags", "params", "prompt", "response", "chunks")
ROW_FIELDS: tuple[str, ...] = PLAIN_FIELDS + ENCODED_FIELDS
BOOL_FIELDS = frozenset({"retried", "fell_back", "streamed", "cache_hit", "simulated"})



def _make_field_reader() -> Any:
    """A function giving a batch's fields as lists, one list comprehension per field, flags
    as 0/1, in ROW_FIELDS order. Written out (as namedtuple writes its classes) because a
    comprehension's `r.field` is a specialised slot read, a third of the cost of
    map(attrgetter(field), records)."""
    lists = "".join(f"        [1 if r.{name} else 0 for r in records],\n" if name in BOOL_FIELDS
                    else f"        [r.{name} for r in records],\n" for name in ROW_FIELDS)
    namespace: dict[str, Any] = {}
    exec(f"def read_fields(records):\n    return (\n{lists}    )\n", namespace)
    return namespace["read_fields"]


_read_fields = _make_field_reader()
_plain = operator.attrgetter(*PLAIN_FIELDS)
_encoded = operator.attrgetter(*ENCODED_FIELDS)
# Batches smaller than this are written row by row, every column in every row (`to_row`):
# building columns, and finding those to leave out, pays off only over many rows (each
# column costs a few list and dict operations per batch).
FEW_ROWS = 32
# What the table stores when a column is left out of an INSERT (see `omissible`).
_DEFAULTS: dict[str, Any] = {name: 0 if name in BOOL_FIELDS else None for name in ROW_FIELDS}
for _name in ("call_id", "attempt", "timestamp", "vendor", "model_requested", "status"):
    del _DEFAULTS[_name]  # NOT NULL without a default: always written
# Tags and parameters repeat call after call: encode each distinct value once. (Building a
# JSON encoder per call cost more than the row's insert.)
_tag_json: dict[tuple[str, ...], str] = {}
_param_json: dict[tuple[tuple[str, Any], ...], str] = {}
_MEMO_LIMIT = 4096
_encode = json.JSONEncoder(ensure_ascii=False, sort_keys=True, default=str).encode
_sha256 = hashlib.sha256


_SURROGATE = re.compile("[\ud800-\udfff]")


def replace_surrogates(text: str) -> tuple[str, int]:
    """`text` with each lone surrogate as U+FFFD (what SQLite can store), and how many
    there were (see _repair.py)."""
    return _SURROGATE.subn("\ufffd", text)


def check_text_mode(mode: str) -> TextMode:
    if mode not in TEXT_MODES:
        raise ValueError(f"text storage must be one of {', '.join(TEXT_MODES)}; got {mode!r}")
    return mode  # type: ignore[return-value]


def hash_text(text: str) -> str:
    try:
        data = text.encode()  # the fast path; an error handler takes the slow one throughout
    except UnicodeEncodeError:  # a lone surrogate
        data = text.encode("utf-8", "surrogatepass")
    return "sha256:" + _sha256(data).hexdigest()


def _tags(tags: tuple[str, ...]) -> str | None:
    if not tags:
        return None
    try:
        return _tag_json[tags]
    except (KeyError, TypeError):
        out = _encode(list(tags))
        if len(_tag_json) < _MEMO_LIMIT:
            _tag_json[tuple(tags)] = out
        return out


def _params(params: Any) -> str | None:
    if not params:
        return None
    try:
        key = tuple(params.items())
        return _param_json[key]
    except KeyError:
        out = _encode(dict(params))
        if len(_param_json) < _MEMO_LIMIT:
            _param_json[key] = out
        return out
    except TypeError:  # an unhashable value, e.g. a list of stop sequences
        return _encode(dict(params))


def _hashed(texts: list[str | None]) -> list[str | None]:
    """`hash_text` of each text, inline (a function call per text cost a tenth of a hash)."""
    try:
        return [None if t is None else "sha256:" + _sha256(t.encode()).hexdigest()
                for t in texts]
    except UnicodeEncodeError:  # a lone surrogate somewhere
        return [None if t is None else hash_text(t) for t in texts]


def _chunks(chunks: Any) -> str | None:
    return _encode([[round(float(o), 6), t] for o, t in chunks]) if chunks else None


def to_columns(records: Sequence[CallRecord], mode: TextMode) -> dict[str, list[Any]]:
    """The batch as {field: values}, in ROW_FIELDS order: what `to_row` gives each record.

    Raises if any record cannot be stored; the caller then goes record by record.
    """
    cols = dict(zip(ROW_FIELDS, _read_fields(records), strict=True))
    cols["tags"] = list(map(_tags, cols["tags"]))
    cols["params"] = list(map(_params, cols["params"]))
    prompts, responses = cols["prompt"], cols["response"]
    if mode == "full":
        chunks = list(map(_chunks, cols["chunks"]))
    else:
        # Chunks are the response's text in pieces: never kept when the text is not.
        chunks = [None] * len(records)
        if mode == "hash":
            prompts, responses = _hashed(prompts), _hashed(responses)
        else:
            prompts, responses = chunks, chunks
    cols["prompt"], cols["response"], cols["chunks"] = prompts, responses, chunks
    return cols


def to_row(record: CallRecord, mode: TextMode) -> tuple[Any, ...]:
    """The values for ROW_FIELDS (without the row id): what `to_columns` gives a record,
    but for flags, kept as bools (sqlite3 binds them as 0/1)."""
    tags, params, prompt, response, chunks = _encoded(record)
    if mode == "full":
        chunk_json = _chunks(chunks)
    else:
        chunk_json = None
        if mode == "hash":
            prompt = None if prompt is None else hash_text(prompt)
            response = None if response is None else hash_text(response)
        else:
            prompt = response = None
    return (*_plain(record), _tags(tags), _params(params), prompt, response, chunk_json)


def columns_of(rows: Sequence[Sequence[Any]]) -> dict[str, list[Any]]:
    """Rows of ROW_FIELDS (as `to_row` gives them) as columns."""
    if not rows:
        return {name: [] for name in ROW_FIELDS}
    return dict(zip(ROW_FIELDS, map(list, zip(*rows, strict=True)), strict=True))


def omissible(cols: dict[str, list[Any]]) -> set[str]:
    """Columns that hold only what the table stores by default (NULL, or 0 for a flag).

    Leaving them out of the INSERT writes the same row: binding a NULL costs sqlite3 an
    adapter lookup per value, and in most batches five to ten columns are all NULL.
    """
    out = set()
    for name, default in _DEFAULTS.items():
        col = cols[name]
        # The first value settles most columns without a pass over them.
        if col and col[0] == default and col.count(default) == len(col):
            out.add(name)
    return out


def from_row(row: Sequence[Any]) -> CallRecord:
    """A row of ROW_FIELDS (without the row id) as a CallRecord."""
    values = dict(zip(ROW_FIELDS, row, strict=True))
    for name in BOOL_FIELDS:
        values[name] = bool(values[name])
    if values["schema_valid"] is not None:  # stored as 1/0; NULL: no schema was asked for
        values["schema_valid"] = bool(values["schema_valid"])
    values["tags"] = tuple(json.loads(values["tags"])) if values["tags"] else ()
    values["params"] = json.loads(values["params"]) if values["params"] else {}
    values["chunks"] = (tuple((float(o), str(t)) for o, t in json.loads(values["chunks"]))
                        if values["chunks"] else ())
    return CallRecord(**values)


# -- into the table --------------------------------------------------------------------

_ROWS_PER_INSERT = (64, 8)  # see `insert_rows`


@functools.lru_cache(maxsize=64)
def _insert(names: tuple[str, ...], rows: int = 1) -> str:
    """The INSERT of `rows` rows of these columns (the others take their defaults: see
    `omissible`)."""
    one = f"({', '.join('?' for _ in names)})"
    return f"INSERT INTO calls ({', '.join(names)}) VALUES {', '.join([one] * rows)}"


INSERT_ROW = _insert(ROW_FIELDS)


def insert_rows(conn: sqlite3.Connection, cols: dict[str, list[Any]], n: int) -> None:
    """Insert the n rows of `cols`, in order, leaving out the columns that hold only their
    default (see `omissible`).

    Mostly 64 rows to a statement: SQLite then sets up the statement, its three b-tree
    cursors and its end once per 64 rows, and appends to the two indexes without seeking
    from their roots (a cursor kept from the row before shows where), which takes a fifth
    off the cost of a row. The values go in as one flat list filled column by column in
    C (no tuple per row). What is left over goes in 8 rows or 1 row at a time.
    """
    skip = omissible(cols)
    names = tuple(name for name in ROW_FIELDS if name not in skip) if skip else ROW_FIELDS
    start = 0
    m = len(names)
    most = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // m if n >= 8 else 0
    for per in _ROWS_PER_INSERT:
        count = (n - start) // per * per if per <= most else 0
        if not count:
            continue
        flat: list[Any] = [None] * (count * m)
        for i, name in enumerate(names):
            col = cols[name]
            flat[i::m] = col if count == len(col) else col[start:start + count]
        size = per * m
        conn.executemany(_insert(names, per),
                         (flat[j:j + size] for j in range(0, len(flat), size)))
        start += count
    if start < n:
        # zip hands sqlite3 one tuple, refilled row after row, not a new tuple per row.
        rest = [cols[k][start:] if start else cols[k] for k in names]
        conn.executemany(_insert(names), zip(*rest, strict=True))


# -- out of the table -------------------------------------------------------------------


def filters(session: str | None, since: float | dt.datetime | None,
             tags: str | Iterable[str] | None,
             call_ids: Iterable[str] | None) -> tuple[str, list[Any]]:
    """The WHERE clause (and its arguments) that `Ledger.records` reads rows by."""
    clauses: list[str] = []
    args: list[Any] = []
    if session is not None:
        clauses.append("session = ?")
        args.append(session)
    if since is not None:
        clauses.append("timestamp >= ?")
        args.append(since.timestamp() if isinstance(since, dt.datetime) else float(since))
    for tag in [tags] if isinstance(tags, str) else list(tags or ()):
        clauses.append("EXISTS (SELECT 1 FROM json_each(calls.tags) WHERE value = ?)")
        args.append(tag)
    if call_ids is not None:
        ids = list(call_ids)
        clauses.append(f"call_id IN ({', '.join('?' for _ in ids)})" if ids else "0")
        args.extend(ids)
    # Stored text had its lone surrogates replaced (see _repair.py): look for it the same way.
    args = [replace_surrogates(a)[0] if isinstance(a, str) and not a.isascii() else a
            for a in args]
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), args
