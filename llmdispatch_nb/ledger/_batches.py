"""Batch jobs kept in the ledger (`batch_jobs`, migration 4), so a job outlives its kernel.

A job is written the moment its first vendor batch is accepted, before the caller gets
its handle: its requests (`items`, written once) and its vendor batches (`parts`, updated
as they are polled and collected). Another kernel or machine sharing the ledger file
finds it by id or in the list. A ledger without a database (a plain list of records)
keeps jobs in this process only.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any

from .._types import CallRecord
from ._rows import ROW_FIELDS, from_row
from ._store import Ledger

_COLUMNS = "id, created, session, name, state, parts, updated"


@dataclass(frozen=True)
class StoredJob:
    """One row of `batch_jobs`; `items` is read only when asked for (it may be large)."""

    id: str
    created: float
    session: str | None
    name: str | None
    state: str
    parts: list[dict[str, Any]]
    updated: float


class BatchStore:
    """Where a dispatcher's batch jobs are kept: the ledger's database, or this process."""

    def __init__(self, ledger: Any) -> None:
        self.ledger = ledger if isinstance(ledger, Ledger) else None
        self._lock = threading.Lock()
        self._local: dict[str, dict[str, Any]] = {}  # no database: jobs live here

    def add(self, job_id: str, *, session: str | None, name: str | None, state: str,
            items: list[dict[str, Any]], parts: list[dict[str, Any]]) -> None:
        now = time.time()
        row = {"id": job_id, "created": now, "session": session, "name": name, "state": state,
               "items": json.dumps(items, separators=(",", ":")),
               "parts": json.dumps(parts, separators=(",", ":")), "updated": now}
        if self.ledger is None:
            with self._lock:
                self._local[job_id] = row
            return
        with self.ledger._reading() as conn:
            conn.execute("INSERT INTO batch_jobs(id, created, session, name, state, items, parts, "
                         "updated) VALUES (:id, :created, :session, :name, :state, :items, "
                         ":parts, :updated)", row)

    def update(self, job_id: str, *, state: str, parts: list[dict[str, Any]]) -> None:
        blob = json.dumps(parts, separators=(",", ":"))
        if self.ledger is None:
            with self._lock:
                self._local[job_id].update(state=state, parts=blob, updated=time.time())
            return
        with self.ledger._reading() as conn:
            conn.execute("UPDATE batch_jobs SET state = ?, parts = ?, updated = ? WHERE id = ?",
                         (state, blob, time.time(), job_id))

    def get(self, job_id: str) -> StoredJob | None:
        found = self._select(" WHERE id = ?", (job_id,))
        return found[0] if found else None

    def items(self, job_id: str) -> list[dict[str, Any]]:
        if self.ledger is None:
            with self._lock:
                blob = self._local[job_id]["items"]
        else:
            with self.ledger._reading() as conn:
                row = conn.execute("SELECT items FROM batch_jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise KeyError(job_id)
            blob = row[0]
        items: list[dict[str, Any]] = json.loads(blob)
        return items

    def jobs(self, *, session: str | None = None, limit: int | None = None) -> list[StoredJob]:
        where, args = (" WHERE session = ?", (session,)) if session is not None else ("", ())
        jobs = self._select(where + " ORDER BY created DESC"
                            + (f" LIMIT {int(limit)}" if limit is not None else ""), args)
        return jobs

    def _select(self, tail: str, args: tuple[Any, ...]) -> list[StoredJob]:
        if self.ledger is None:
            with self._lock:
                rows = [dict(r) for r in self._local.values()]
            if args:
                key = "id" if "id = ?" in tail else "session"
                rows = [r for r in rows if r[key] == args[0]]
            rows.sort(key=lambda r: r["created"], reverse=True)
            return [_job(r) for r in rows]
        with self.ledger._reading() as conn:
            found = conn.execute(f"SELECT {_COLUMNS} FROM batch_jobs{tail}", args).fetchall()
        return [_job(dict(zip(_COLUMNS.split(", "), r, strict=True))) for r in found]


def _job(row: dict[str, Any]) -> StoredJob:
    return StoredJob(row["id"], row["created"], row["session"], row["name"], row["state"],
                     json.loads(row["parts"]), row["updated"])


def job_records(ledger: Ledger, job_id: str) -> list[CallRecord]:
    """The attempts of one batch job (call ids `<job id>-<custom id>`), oldest first: a
    range of call ids, cheaper than matching a tag in every row's JSON."""
    ledger.flush()
    with ledger._reading() as conn:
        rows = conn.execute(f"SELECT {', '.join(ROW_FIELDS)} FROM calls WHERE call_id >= ? "
                            f"AND call_id < ? ORDER BY id", (job_id + "-", job_id + ".")).fetchall()
    return [from_row(r) for r in rows]
