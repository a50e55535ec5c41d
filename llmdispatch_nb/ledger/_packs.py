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
    with open(tmp, "w", encoding="utf-8") as f:
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
    source = Path(path)
    answers: list[CachedAnswer] = []
    header: dict[str, Any] | None = None
    with open(source, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except ValueError as exc:
                raise LedgerError(f"{source}:{number} is not JSON ({exc}); is this a replay "
                                  f"pack written by export_pack?") from None
            if header is None:
                if data.get("format") != FORMAT:
                    raise LedgerError(f"{source} is not a replay pack (its first line has no "
                                      f"\"format\": \"{FORMAT}\")")
                if int(data.get("version", 0)) > VERSION:
                    raise LedgerError(f"{source} is a version {data.get('version')} pack; this "
                                      f"llmdispatch-nb reads up to version {VERSION}")
                header = data
                continue
            answers.append(CachedAnswer.from_json(data))
    if header is None:
        raise LedgerError(f"{source} is empty; export a pack with export_pack()")
    return ReplayPack(answers, header, source)
