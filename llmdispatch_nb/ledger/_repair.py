"""Making a record storable before it is queued, and noting what that changed.

SQLite keeps text as UTF-8 and integers in 64 bits. A lone surrogate (half an emoji from
scraped JSON, in a prompt, a tag or a vendor's answer) has no UTF-8 form, and a token
count past 2**63 does not fit; either made the writer's whole batch fail inside its
transaction. So `storable` runs on the caller's thread, in `Ledger.write`:

- text with lone surrogates: each one is replaced with U+FFFD (the text is otherwise kept);
- an integer outside 64 bits: stored as NULL (a clamped count would look like a real one),
  but for the attempt number, which cannot be NULL: clamped;
- an integer in a float field (latency, cost) too large for a float: stored as NULL;

and the record's `repaired` field says which fields and what was done. A record comes back
unchanged (the same object) when nothing needed doing, which is nearly always: a text
that is all ASCII is known so without reading it. What still cannot be stored (a stream
piece whose offset is not a number, say) is set aside by the writer: see `quarantine`.
"""

from __future__ import annotations

import dataclasses
import json
import operator
from typing import Any

from .._types import CallRecord
from ._rows import _params, replace_surrogates

TEXT_FIELDS: tuple[str, ...] = (
    "call_id", "session", "vendor", "model_requested", "model_served", "status",
    "error_class", "error_message", "request_id", "route_reason", "usage_source",
    "price_source", "finish_reason", "cache_key", "prompt", "response", "repaired",
)
INT_FIELDS: tuple[str, ...] = (
    "attempt", "http_status", "input_tokens", "output_tokens", "cache_read_tokens",
    "cache_write_tokens", "reasoning_tokens",
)
FLOAT_FIELDS: tuple[str, ...] = ("timestamp", "latency_s", "ttft_s", "cost_usd",
                                 "original_latency_s")
_texts = operator.attrgetter(*TEXT_FIELDS)
_ints = operator.attrgetter(*INT_FIELDS)
_floats = operator.attrgetter(*FLOAT_FIELDS)
_piece = operator.itemgetter(1)
_LOW, _HIGH = -(2**63), 2**63 - 1


def _has_surrogate(text: str) -> bool:
    if text.isascii():  # O(1): CPython keeps the flag
        return False
    try:
        text.encode()
    except UnicodeEncodeError:
        return True
    return False


def storable(record: CallRecord) -> CallRecord:
    """`record`, or a copy that SQLite can store with `repaired` saying what changed.

    Runs on the caller's thread for every record, so it first asks, a whole group of
    fields at once, whether anything could need repair (nearly never), and only then
    looks field by field."""
    try:
        if (_clean("".join(filter(None, _texts(record))))
                and min(ints := tuple(filter(None, _ints(record))), default=0) >= _LOW
                and max(ints, default=0) <= _HIGH
                and int not in map(type, _floats(record))
                and _clean("".join(record.tags))
                and _clean(_params(record.params) or "")
                and (not record.chunks or _clean("".join(map(_piece, record.chunks))))):
            return record
    except Exception:  # not the types expected (a tag that is no str, ...): look closer
        pass
    return _repaired(record)


def _clean(text: str) -> bool:
    return text.isascii() or not _has_surrogate(text)


def _repaired(record: CallRecord) -> CallRecord:
    changes: dict[str, Any] = {}
    notes: list[str] = []
    for name, value in zip(TEXT_FIELDS, _texts(record), strict=True):
        if type(value) is str and _has_surrogate(value):
            changes[name], n = replace_surrogates(value)
            notes.append(f"{name}: {n} lone surrogate{'s' if n > 1 else ''} replaced with U+FFFD")
    for name, value in zip(INT_FIELDS, _ints(record), strict=True):
        if value is not None and not _LOW <= value <= _HIGH:
            if name == "attempt":  # NOT NULL: the nearest number that fits
                changes[name] = _HIGH if value > 0 else _LOW
                notes.append(f"{name}: {_short(value)} does not fit 64 bits, clamped")
                continue
            changes[name] = None
            notes.append(f"{name}: {_short(value)} does not fit 64 bits, stored as NULL")
    for name, value in zip(FLOAT_FIELDS, _floats(record), strict=True):
        if type(value) is int and not _LOW <= value <= _HIGH:
            try:
                changes[name] = float(value)
            except OverflowError:
                changes[name] = None if name != "timestamp" else 0.0
                notes.append(f"{name}: {_short(value)} is no float, stored as "
                             f"{changes[name]}")
    tags = record.tags
    if tags and any(type(t) is str and _has_surrogate(t) for t in tags):
        changes["tags"] = tuple(replace_surrogates(t)[0] if type(t) is str else t for t in tags)
        notes.append("tags: lone surrogates replaced with U+FFFD")
    params = _repaired_params(record.params)
    if params is not None:
        changes["params"] = params
        notes.append("params: lone surrogates replaced with U+FFFD")
    chunks = record.chunks
    if chunks and any(type(p) is tuple and len(p) == 2 and type(p[1]) is str
                      and _has_surrogate(p[1]) for p in chunks):
        changes["chunks"] = tuple(
            (p[0], replace_surrogates(p[1])[0]) if type(p) is tuple and len(p) == 2
            and type(p[1]) is str else p for p in chunks)
        notes.append("chunks: lone surrogates replaced with U+FFFD")
    if not changes:
        return record
    note = "; ".join(notes)
    earlier = changes.get("repaired", record.repaired)
    changes["repaired"] = f"{earlier}; {note}" if earlier else note
    return dataclasses.replace(record, **changes)


def _repaired_params(params: Any) -> dict[str, Any] | None:
    """The parameters with lone surrogates replaced, or None when they need nothing (or
    cannot be encoded at all: the writer then sets the record aside)."""
    if not params:
        return None
    try:
        encoded = _params(params)
    except Exception:
        return None
    if encoded is None or not _has_surrogate(encoded):
        return None
    fixed = json.loads(replace_surrogates(encoded)[0])
    return fixed if isinstance(fixed, dict) else None


def _short(value: Any) -> str:
    """A huge number as 2**k when it is one, else its first digits."""
    if isinstance(value, int) and value > 0 and value & (value - 1) == 0:
        return f"2**{value.bit_length() - 1}"
    text = str(value)
    return text if len(text) <= 24 else text[:20] + "..."


def as_json(record: CallRecord) -> str:
    """The record as one line of ASCII JSON, whatever it holds: lone surrogates become
    escapes, huge numbers stay whole, anything else its repr. For the quarantine file."""
    fields = {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}
    try:
        return json.dumps(fields, default=repr, ensure_ascii=True)
    except (ValueError, TypeError, RecursionError):  # a cycle, keys of mixed types
        return json.dumps({"repr": repr(record)}, ensure_ascii=True)
