"""Replay packs: chosen calls in one JSON-lines file, served again with no keys.

    n = export_pack("demo.jsonl", ledger, tags="demo")    # with real keys, once
    pack = load_pack("demo.jsonl")                        # on Binder, with none
    pack.get(key_for("openai", "gpt-4o-mini", request))   # -> CachedAnswer | None

Line 1 is a header ({"format": "llmdispatch-replay", "version": 1, ...}); every other line
is one answer as `CachedAnswer.to_json()` gives it, keyed like the cache, with its text,
usage, latency, time to first token and stream pieces with their offsets. The file holds
no key and no header of any request: the ledger never had them.

Only successful attempts whose record carries a `cache_key` and the full response text
(the ledger's text setting "full") can be exported; when a prompt was answered more than
once, the newest answer is kept.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .._types import CallRecord, Usage
from ._cache import CachedAnswer
from ._errors import LedgerError
from ._store import Ledger

FORMAT = "llmdispatch-replay"
VERSION = 1


def answer_from_record(record: CallRecord) -> CachedAnswer | None:
    """What a replay serves for this attempt, or None if it cannot be replayed."""
    if record.status != "ok" or not record.cache_key or record.response is None:
        return None
    if record.response.startswith("sha256:") and len(record.response) == 71 and not record.chunks:
        return None  # a hashed text, not an answer (the ledger kept text="hash")
    usage = Usage(input_tokens=record.input_tokens or 0, output_tokens=record.output_tokens or 0,
                  cache_read_tokens=record.cache_read_tokens or 0,
                  cache_write_tokens=record.cache_write_tokens or 0,
                  reasoning_tokens=record.reasoning_tokens or 0,
                  source=record.usage_source or "reported")
    return CachedAnswer(key=record.cache_key, text=record.response,
                        finish_reason=record.finish_reason or "stop", usage=usage,
                        model_served=record.model_served or record.model_requested,
                        latency_s=record.latency_s, ttft_s=record.ttft_s, chunks=record.chunks,
                        vendor=record.vendor, model_requested=record.model_requested,
                        created=record.timestamp)


def export_pack(path: str | os.PathLike[str], ledger: Ledger, session: str | None = None,
                tags: str | Iterable[str] | None = None,
                call_ids: Iterable[str] | None = None) -> int:
    """Write the chosen successful calls to `path` (JSON lines); returns how many answers.

    Choose by `session` (a notebook's dispatcher session), `tags` (every tag given) and/or
    `call_ids`; with none, every replayable call in the ledger.
    """
    records = ledger.records(session=session, tags=tags, call_ids=call_ids)
    answers: dict[str, CachedAnswer] = {}
    skipped = 0
    for r in records:
        answer = answer_from_record(r)
        if answer is None:
            skipped += r.status == "ok"
            continue
        answers.pop(answer.key, None)  # the newest answer wins, in call order
        answers[answer.key] = answer
    if not answers and skipped:
        raise LedgerError(
            f"none of the {skipped} chosen successful calls can be replayed: the ledger keeps "
            f"text={ledger.text!r} (a pack needs 'full') or the calls have no cache key")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    header = {"format": FORMAT, "version": VERSION, "created": time.time(), "count": len(answers),
              "session": session, "tags": [tags] if isinstance(tags, str) else list(tags or ())}
    tmp = target.with_name(target.name + ".tmp")
    # Mode 0600 like the ledger: a pack holds prompts and answers. The flags make a new
    # file with that mode; a left-over temporary file is replaced, not reused.
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    # A lone surrogate (from a tag, say) is written as its JSON escape, which reads back.
    with open(fd, "w", encoding="utf-8", errors="backslashreplace") as f:
        f.write(json.dumps(header, ensure_ascii=False) + "\n")
        for answer in answers.values():
            f.write(json.dumps(answer.to_json(), ensure_ascii=False) + "\n")
    os.replace(tmp, target)
    return len(answers)


class ReplayPack:
    """Recorded answers by key; `get(key)` serves one, `len(pack)` counts them."""

    def __init__(self, answers: Iterable[CachedAnswer], header: dict[str, Any] | None = None,
                 path: Path | None = None) -> None:
        self._answers = {a.key: a for a in answers}
        self.header = dict(header or {})
        self.path = path

    def get(self, key: str) -> CachedAnswer | None:
        return self._answers.get(key)

    def __contains__(self, key: object) -> bool:
        return key in self._answers

    def __len__(self) -> int:
        return len(self._answers)

    def __iter__(self) -> Iterator[CachedAnswer]:
        return iter(self._answers.values())

    def keys(self) -> list[str]:
        return list(self._answers)

    def __repr__(self) -> str:
        where = f" from {str(self.path)!r}" if self.path else ""
        return f"ReplayPack({len(self)} answers{where})"


def load_pack(path: str | os.PathLike[str]) -> ReplayPack:
    """Read a pack written by `export_pack`. A pack is a shared file, so nothing in it is
    trusted: every line is checked field by field, and anything out of shape is one
    `LedgerError` naming the file, the line and the field."""
    source = Path(path)
    try:
        with open(source, "rb") as f:
            return _read_pack(f, source)
    except OSError as exc:
        raise LedgerError(f"cannot read the replay pack {source}: {exc.strerror or exc}") from None


def _read_pack(f: Iterable[bytes], source: Path) -> ReplayPack:
    answers: list[CachedAnswer] = []
    header: dict[str, Any] | None = None
    for number, raw in enumerate(f, 1):
        where = f"{source}:{number}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise LedgerError(f"{where} is not UTF-8 text (byte {exc.start}); is this a "
                              f"replay pack written by export_pack?") from None
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except (ValueError, RecursionError) as exc:
            why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            raise LedgerError(f"{where} is not JSON ({why}); is this a replay pack "
                              f"written by export_pack?") from None
        if header is None:
            header = _check_header(data, where, source)
            continue
        answers.append(_answer_from_line(data, where))
    if header is None:
        raise LedgerError(f"{source} is empty; export a pack with export_pack()")
    return ReplayPack(answers, header, source)


def _check_header(data: Any, where: str, source: Path) -> dict[str, Any]:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise LedgerError(f"{source} is not a replay pack (its first line has no "
                          f"\"format\": \"{FORMAT}\")")
    version = data.get("version", 0)
    if type(version) is not int:
        raise LedgerError(f"{where}: field 'version' must be a whole number, "
                          f"not {type(version).__name__}")
    if version > VERSION:
        raise LedgerError(f"{source} is a version {version} pack; this llmdispatch-nb "
                          f"reads up to version {VERSION}")
    return data


# Within 64 bits, as the ledger stores them; a token count past this is no real answer's.
_MAX_COUNT = 2**63 - 1
_USAGE_COUNTS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
                 "reasoning_tokens")


def _answer_from_line(data: Any, where: str) -> CachedAnswer:
    """One answer line, checked: the right type for every field `CachedAnswer.from_json`
    reads, counts whole and within 64 bits, times finite and not negative."""
    def bad(field: str, want: str, value: Any) -> LedgerError:
        shown = repr(value)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        return LedgerError(f"{where}: field {field!r} must be {want}, not "
                           f"{type(value).__name__} {shown}")

    def text(field: str, value: Any, required: bool = False) -> None:
        if value is None and not required:
            return
        if not isinstance(value, str):
            raise bad(field, "text" if required else "text or null", value)

    def seconds(field: str, value: Any, nullable: bool = True) -> None:
        if value is None and nullable:
            return
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or not math.isfinite(value) or value < 0):
            raise bad(field, "a finite number of seconds, 0 or more" + (" (or null)" if nullable else ""),
                      value)

    if not isinstance(data, dict):
        raise bad("(line)", "an object", data)
    text("key", data.get("key"), required=True)
    for name in ("text", "finish_reason", "raw_finish_reason", "model_served", "vendor",
                 "model_requested"):
        text(name, data.get(name))
    usage = data.get("usage")
    if usage is not None:
        if not isinstance(usage, dict):
            raise bad("usage", "an object", usage)
        for name in _USAGE_COUNTS:
            v = usage.get(name)
            if v is not None and (type(v) is not int or not 0 <= v <= _MAX_COUNT):
                raise bad(f"usage.{name}", "a whole number from 0 to 2**63-1 (or null)", v)
        text("usage.source", usage.get("source"))
    seconds("latency_s", data.get("latency_s"))
    seconds("ttft_s", data.get("ttft_s"))
    if data.get("created") is not None:
        seconds("created", data.get("created"))
    chunks = data.get("chunks")
    if chunks is not None:
        if not isinstance(chunks, list):
            raise bad("chunks", "a list of [seconds, text] pairs", chunks)
        for i, pair in enumerate(chunks):
            if not isinstance(pair, list) or len(pair) != 2:
                raise bad(f"chunks[{i}]", "a [seconds, text] pair", pair)
            seconds(f"chunks[{i}][0]", pair[0], nullable=False)
            text(f"chunks[{i}][1]", pair[1], required=True)
    try:
        return CachedAnswer.from_json(data)
    except Exception as exc:  # a shape the checks above missed: still the pack's fault
        raise LedgerError(f"{where}: {type(exc).__name__}: {exc}") from None
