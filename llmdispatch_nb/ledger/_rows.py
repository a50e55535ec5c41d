"""A `CallRecord` as a row of the `calls` table and back.

The row order is fixed: plain fields first (copied by one C-level attrgetter, the cheapest
way to read 30 attributes), then the fields that need encoding (tags, params, chunks and
the two texts, which obey the text-storage setting).
"""

from __future__ import annotations

import hashlib
import json
import operator
from collections.abc import Sequence
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
)
# Encoded: JSON for the containers, the text-storage setting for the texts.
ENCODED_FIELDS: tuple[str, ...] = ("tags", "params", "prompt", "response", "chunks")
ROW_FIELDS: tuple[str, ...] = PLAIN_FIELDS + ENCODED_FIELDS
BOOL_FIELDS = frozenset({"retried", "fell_back", "streamed", "cache_hit", "simulated"})

_plain = operator.attrgetter(*PLAIN_FIELDS)
_encoded = operator.attrgetter(*ENCODED_FIELDS)
# Tags and parameters repeat call after call: encode each distinct value once. (Building a
# JSON encoder per call cost more than the row's insert.)
_tag_json: dict[tuple[str, ...], str] = {}
_param_json: dict[tuple[tuple[str, Any], ...], str] = {}
_MEMO_LIMIT = 4096
_encode = json.JSONEncoder(ensure_ascii=False, sort_keys=True, default=str).encode


def check_text_mode(mode: str) -> TextMode:
    if mode not in TEXT_MODES:
        raise ValueError(f"text storage must be one of {', '.join(TEXT_MODES)}; got {mode!r}")
    return mode  # type: ignore[return-value]


def hash_text(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


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


def to_row(record: CallRecord, mode: TextMode) -> tuple[Any, ...]:
    """The values for ROW_FIELDS (without the row id)."""
    tags, params, prompt, response, chunks = _encoded(record)
    if mode == "full":
        chunk_json = _encode([[round(float(o), 6), t] for o, t in chunks]) if chunks else None
    else:
        # Chunks are the response's text in pieces: never kept when the text is not.
        chunk_json = None
        if mode == "hash":
            prompt = None if prompt is None else hash_text(prompt)
            response = None if response is None else hash_text(response)
        else:
            prompt = response = None
    return (*_plain(record), _tags(tags), _params(params), prompt, response, chunk_json)


def from_row(row: Sequence[Any]) -> CallRecord:
    """A row of ROW_FIELDS (without the row id) as a CallRecord."""
    values = dict(zip(ROW_FIELDS, row, strict=True))
    for name in BOOL_FIELDS:
        values[name] = bool(values[name])
    values["tags"] = tuple(json.loads(values["tags"])) if values["tags"] else ()
    values["params"] = json.loads(values["params"]) if values["params"] else {}
    values["chunks"] = (tuple((float(o), str(t)) for o, t in json.loads(values["chunks"]))
                        if values["chunks"] else ())
    return CallRecord(**values)
