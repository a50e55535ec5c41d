"""When the ledger cannot do its job: one clear message, a corrupt file set aside, and
records that cannot be stored kept apart instead of blocking the ones after them.

A call never fails because of the ledger. What goes wrong falls in two kinds:

- the store: the data dir is read-only or is a file, the disk is full, the database is
  locked or corrupt. `describe` turns that into one message saying what is wrong and what
  to do; the ledger logs it once as a warning, and every reader raises it as a
  `LedgerError` at once (no wait for a writer that cannot write). A database file SQLite
  cannot read is renamed `<name>.corrupt-<time>` (`set_aside`), never overwritten, and a
  new ledger starts in its place.
- a record: one that SQLite refuses even after `_repair.storable`. The writer finds it (see
  `BatchWriter`) and hands it here, to the `Quarantine`: a JSON-lines side file next to
  the database, `<name>.quarantine.jsonl` (mode 0600), each line the record (lone
  surrogates as escapes, numbers whole) with the reason; the newest are also kept in
  memory, and all are counted (`Ledger.quarantined`, in `Dispatcher.stats()`). Records the
  writer gave up on because the store failed go the same way.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import sqlite3
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from .._types import CallRecord
from ._errors import LedgerError
from ._repair import as_json

log = logging.getLogger("llmdispatch_nb.ledger")

_CORRUPT = ("not a database", "malformed", "file is encrypted")
_FULL = ("database or disk is full",)
_READ_ONLY = ("readonly database", "unable to open database file", "read-only")
_KEPT_IN_MEMORY = 1000
_STILL = ("Calls still answer, but nothing is recorded or cached until this is fixed")


def is_store_problem(exc: BaseException) -> bool:
    """Whether `exc` says the store failed (every record would), not the records at hand."""
    if isinstance(exc, (OSError, LedgerError)):
        return True
    if isinstance(exc, sqlite3.DatabaseError):
        # Refusals of one value or row: these records, not the store.
        return not isinstance(exc, (sqlite3.IntegrityError, sqlite3.DataError,
                                    sqlite3.ProgrammingError))
    return False


# How long the writer retries a batch when the store fails: a lock another kernel holds
# usually clears (it waited busy_timeout_s inside SQLite already); a read-only folder, a
# full disk or a file in the way does not, and readers should hear about it at once.
LOCKED_RETRY_S = 60.0
BROKEN_RETRY_S = 0.3


def retry_for(exc: BaseException) -> float | None:
    """For the ledger's writer: None when the records are at fault (split the batch), else
    how long to keep retrying the store (see `BatchWriter`)."""
    if not isinstance(exc, LedgerError):
        return None
    said = f"{exc} {exc.__cause__ or ''}"
    return LOCKED_RETRY_S if "locked" in said or "busy" in said else BROKEN_RETRY_S


def is_corrupt(exc: BaseException) -> bool:
    return (isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError)
            and any(words in str(exc) for words in _CORRUPT))


def _file_in_the_way(path: Path) -> Path | None:
    """The first of `path`'s folders that exists as something other than a folder."""
    for parent in reversed(path.parents):
        if parent.exists() and not parent.is_dir():
            return parent
    return None


def describe(path: Path | None, exc: BaseException) -> str:
    """One message for a store problem: what is wrong, and what to do about it."""
    if isinstance(exc, LedgerError):
        return str(exc)
    where = "the in-memory ledger" if path is None else f"the ledger at {path}"
    said = f"{type(exc).__name__}: {exc}"
    text = str(exc)
    code = getattr(exc, "errno", None)
    if path is not None and (blocker := _file_in_the_way(path)) is not None:
        return (f"{where} cannot be opened: {blocker} is a file where a folder should be "
                f"({said}). {_STILL}: move that file away, or set LLMDISPATCH_HOME to a folder")
    if "locked" in text or "busy" in text:
        return (f"{where} is locked by another connection ({said}): a tool or kernel holding "
                f"a transaction open on it? Records wait and are retried for up to "
                f"{LOCKED_RETRY_S:g} s, then set aside; end that transaction")
    if code == errno.ENOSPC or any(words in text for words in _FULL):
        return (f"the disk holding {where} is full ({said}). Calls still answer, but new "
                f"records are set aside in memory and nothing is cached: free some space, or "
                f"set LLMDISPATCH_HOME to a folder on another disk")
    if code in (errno.EACCES, errno.EPERM, errno.EROFS) or any(w in text for w in _READ_ONLY):
        folder = path.parent if path is not None else "its folder"
        return (f"{where} cannot be written: {folder} is read-only or not yours ({said}). "
                f"{_STILL}: make it writable, or set LLMDISPATCH_HOME to a writable folder")
    return (f"{where} cannot be used ({said}). {_STILL}: set LLMDISPATCH_HOME to another "
            f"folder, or see the error above")


def set_aside(path: Path) -> Path:
    """Rename a database SQLite cannot read (and its -wal/-shm files) out of the way."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    os.replace(path, aside)
    for suffix in ("-wal", "-shm"):
        extra = path.with_name(path.name + suffix)
        if extra.exists():
            os.replace(extra, aside.with_name(aside.name + suffix))
    return aside


class Quarantine:
    """Records the ledger could not store: counted, the newest kept in memory, all of them
    appended to a side file when there is one and it can be written."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.count = 0
        self.kept: deque[tuple[str, CallRecord]] = deque(maxlen=_KEPT_IN_MEMORY)
        self._lock = threading.Lock()
        self._told: set[str] = set()

    def add(self, records: list[Any], exc: BaseException) -> None:
        reason = f"{type(exc).__name__}: {exc}"[:500]
        with self._lock:
            self.count += len(records)
            for r in records:
                self.kept.append((reason, r))
            where = self._append(records, reason)
            kind = type(exc).__name__
            if isinstance(exc, LedgerError):  # the store's trouble: its warning said it all
                log.info("the ledger set aside %d records it could not write; %s",
                         len(records), where)
            elif kind not in self._told:  # once per kind of failure, not once per record
                self._told.add(kind)
                log.warning("the ledger could not store %d record%s (%s); %s. Later records "
                            "are written as usual; Ledger.quarantined counts these",
                            len(records), "" if len(records) == 1 else "s", reason, where)

    def _append(self, records: list[Any], reason: str) -> str:
        if self.path is None:
            return "kept in memory (Ledger.quarantined_records())"
        at = time.time()
        lines = "".join(
            json.dumps({"at": at, "reason": reason}, ensure_ascii=True)[:-1]
            + ', "record": ' + (as_json(r) if isinstance(r, CallRecord) else json.dumps(repr(r)))
            + "}\n" for r in records)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with open(fd, "w", encoding="ascii") as f:
                f.write(lines)
        except OSError as err:
            return (f"kept in memory only (Ledger.quarantined_records()): the side file "
                    f"{self.path} cannot be written either ({err.strerror or err})")
        return f"set aside in {self.path}"
