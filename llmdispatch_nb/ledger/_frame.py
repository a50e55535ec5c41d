"""Column blocks -> a typed pandas DataFrame, one row per attempt (pandas imported here).

Every output column is allocated once at its final size and filled block by block, so a
million rows cost the frame plus one block, not the frame twice.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from .._types import CallRecord
from ._blocks import BLOCK_COLUMNS, NULL_I4, YESNO_NULL, decode, encode
from ._rows import to_columns

if TYPE_CHECKING:
    import pandas as pd

# Output order, and the block column each comes from.
FRAME_COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "id"), ("call_id", "call_id"), ("session", "session"), ("timestamp", "timestamp"),
    ("vendor", "vendor"), ("model", "model_requested"), ("model_served", "model_served"),
    ("attempt", "attempt"), ("status", "status"), ("error_class", "error_class"),
    ("http_status", "http_status"), ("route_reason", "route_reason"), ("retried", "retried"),
    ("fell_back", "fell_back"), ("streamed", "streamed"), ("cache_hit", "cache_hit"),
    ("simulated", "simulated"), ("latency_s", "latency_s"), ("ttft_s", "ttft_s"),
    ("tokens_per_s", ""), ("input_tokens", "input_tokens"), ("output_tokens", "output_tokens"),
    ("cache_read_tokens", "cache_read_tokens"), ("cache_write_tokens", "cache_write_tokens"),
    ("reasoning_tokens", "reasoning_tokens"), ("usage_source", "usage_source"),
    ("cost_usd", "cost_usd"), ("price_source", "price_source"),
    ("finish_reason", "finish_reason"), ("tags", "tags"),
    ("original_latency_s", "original_latency_s"), ("repaired", "repaired"),
    ("schema_valid", "schema_valid"),
)
_TYPES = dict(BLOCK_COLUMNS)


def frame_from_records(records: Sequence[CallRecord]) -> pd.DataFrame:
    if not records:
        return frame_from_blocks([], 0)
    ids = range(1, len(records) + 1)
    return frame_from_blocks([encode(ids, to_columns(records, "off"))], len(records))


def frame_from_blocks(blobs: Iterable[bytes], total: int) -> pd.DataFrame:
    import numpy as np

    values: dict[str, Any] = {}
    masks: dict[str, Any] = {}
    for name, type_ in BLOCK_COLUMNS:
        # Label codes start one byte wide and widen only if a column has that many labels.
        values[name] = np.empty(total, {"id": np.int64, "int": np.int64, "float": np.float64,
                                        "flag": np.bool_, "yesno": np.uint8,
                                        "str": np.int8}[type_])
        if type_ == "int":
            masks[name] = np.empty(total, np.bool_)
    values["call_id"] = np.empty(total, np.int32)
    # Small label columns are mapped to global codes block by block; call ids (one string
    # per call, nearly a million of them) are gathered and factorized once at the end.
    labels: dict[str, dict[str, int]] = {name: {} for name, t in BLOCK_COLUMNS if t == "str"}
    call_names: list[str] = []
    pos = 0
    for blob in blobs:
        n, cols = decode(blob)
        if pos + n > total:
            raise ValueError("the column blocks hold more rows than the table")
        part = slice(pos, pos + n)
        for name, type_ in BLOCK_COLUMNS:
            kind, arr, extra = cols[name]
            if type_ == "str":
                if name == "call_id":
                    values[name][part] = arr
                    values[name][part] += len(call_names)
                    call_names.extend(extra)
                else:
                    index = labels[name]
                    remap = np.array([index.setdefault(s, len(index)) for s in extra] + [-1],
                                     dtype=np.int32)
                    wide = _code_dtype(len(index))
                    if np.dtype(wide).itemsize > values[name].itemsize:
                        values[name] = values[name].astype(wide)
                    values[name][part] = remap[arr]
            elif type_ == "int":
                if kind == "i4":
                    masks[name][part] = arr == NULL_I4
                    values[name][part] = arr
                else:
                    # NaN is null; so is a count past int64 (SQLite holds 2**63-1,
                    # which as a float rounds up out of range): no int64 can hold it.
                    nulls = ~(np.abs(arr) < 2.0**63)
                    masks[name][part] = nulls
                    values[name][part] = np.where(nulls, 0, arr)
            else:
                values[name][part] = arr
        pos += n
    if pos != total:
        raise ValueError("the column blocks hold fewer rows than the table")
    ids = values["id"]
    if total > 1 and not bool(np.all(ids[1:] > ids[:-1])):
        order = np.argsort(ids, kind="stable")
        values = {k: v[order] for k, v in values.items()}
        masks = {k: v[order] for k, v in masks.items()}
    for name in masks:
        values[name][masks[name]] = 0
    return _build(values, masks, labels, call_names)


def _code_dtype(labels: int) -> Any:
    import numpy as np

    return np.int8 if labels <= 127 else np.int16 if labels <= 32767 else np.int32


def _build(values: dict[str, Any], masks: dict[str, Any], labels: dict[str, dict[str, int]],
           call_names: list[str]) -> pd.DataFrame:
    import numpy as np
    import pandas as pd

    columns: dict[str, Any] = {"tokens_per_s": _tokens_per_s(values, masks)}
    # Each source array is dropped as soon as its column is built, so the peak is the
    # frame plus one column, not the frame twice.
    for name, source in FRAME_COLUMNS:
        if name == "tokens_per_s":
            continue
        type_ = _TYPES[source]
        arr = values.pop(source)
        if name == "timestamp":
            np.multiply(arr, 1e6, out=arr)  # in place: arr is ours alone now
            micros = np.round(arr, out=arr).astype("int64")
            del arr
            columns[name] = pd.DatetimeIndex(micros.view("datetime64[us]")).tz_localize("UTC")
        elif name == "call_id":
            call_codes = arr
        elif type_ == "str":
            columns[name] = _categorical(name, arr, list(labels[source]))
        elif type_ == "int":
            if name == "attempt":  # never null
                columns[name] = arr
            else:
                columns[name] = pd.arrays.IntegerArray(arr, masks[source])
        elif type_ == "float":
            columns[name] = pd.arrays.FloatingArray(arr, np.isnan(arr))
        elif type_ == "yesno":  # pandas' nullable boolean: True, False or <NA>
            columns[name] = pd.arrays.BooleanArray(arr == 1, arr == YESNO_NULL)
        else:
            columns[name] = arr
    # Call ids last: their factorizing needs the most scratch memory, so it runs when every
    # other source array is gone.
    columns["call_id"] = _call_ids(call_codes, call_names)
    return pd.DataFrame({name: columns[name] for name, _ in FRAME_COLUMNS}, copy=False)


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


def _call_ids(codes: Any, names: list[str]) -> Any:
    """The call_id column. Each block lists its own call ids once, so a call id repeats only
    when a call's attempts straddle blocks: find those by sorting string hashes (exact:
    equal strings have equal hashes; a few equal hashes are then compared as strings),
    which takes a third of the memory of a hash table over a million strings."""
    import numpy as np

    n = len(names)
    hashes = np.fromiter(map(hash, names), dtype=np.int64, count=n)
    order = np.argsort(hashes)
    same = np.flatnonzero(hashes[order[1:]] == hashes[order[:-1]])
    del hashes
    if len(same):
        first = np.arange(n)
        seen: dict[str, int] = {}
        for i in sorted(set(order[same].tolist()) | set(order[same + 1].tolist())):
            first[i] = seen.setdefault(names[i], i)
        keep = first == np.arange(n)
        position = np.cumsum(keep) - 1
        codes = position[first].astype(np.int32)[codes]
        names = [s for s, k in zip(names, keep.tolist(), strict=True) if k]
    del order, same
    return _from_unique_codes(codes, names)


def _categorical(name: str, codes: Any, names: list[str]) -> Any:
    import numpy as np

    if name == "tags":  # JSON arrays -> "a,b"; no tags -> "" (so .str.contains needs no na=)
        names = [",".join(json.loads(s)) for s in names]
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


def _tokens_per_s(values: dict[str, Any], masks: dict[str, Any]) -> Any:
    """Output tokens over the generation time (latency less time to first token), as
    `CallRecord.output_tokens_per_s` computes it."""
    import numpy as np
    import pandas as pd

    tokens = values["output_tokens"]
    latency = values["latency_s"]
    ttft = values["ttft_s"]
    with np.errstate(invalid="ignore", divide="ignore"):
        gen = latency - np.where(np.isnan(ttft), 0.0, ttft)
        ok = ~masks["output_tokens"] & (tokens > 0) & (latency > 0) & (gen > 0)
        rate = np.divide(tokens, gen, out=gen)
    rate[~ok] = 0.0
    return pd.arrays.FloatingArray(rate, ~ok)
