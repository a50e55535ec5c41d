"""Opening a ledger file: its permissions, WAL mode, how values bind, and closing its
connections when a ledger is dropped."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from pathlib import Path

from ._errors import LedgerError


def fast_binding() -> None:
    """Bind None and bools without sqlite3's failed `__conform__` lookups.

    Python 3.11's sqlite3 binds only exact int/float/str/bytes directly; any other value,
    None and True included, goes through an adapter search that raises and clears two
    AttributeErrors. With a row of ~35 columns, half of them NULL or flags, that search
    cost more than SQLite's insert. Registered adapters bind exactly as before (None as
    NULL, a bool as 0/1), for every user of sqlite3 in the process, only sooner; an
    adapter someone else registered is left in place.
    """
    sqlite3.adapters.setdefault((type(None), sqlite3.PrepareProtocol), {}.get)
    sqlite3.adapters.setdefault((bool, sqlite3.PrepareProtocol), int)


def switch_to_wal(conn: sqlite3.Connection, path: Path, patience_s: float) -> str:
    """Set WAL mode, waiting out other connections doing the same; return the mode now.

    SQLite does not call its busy handler here: the switch raises a shared lock to an
    exclusive one, and when two connections do that at once (two kernels opening a new
    ledger together) SQLite fails one at once rather than deadlock. So we wait and retry,
    for as long as any other lock would be waited for.
    """
    deadline = time.monotonic() + patience_s
    pause = 0.002
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if time.monotonic() + pause > deadline:
                raise LedgerError(
                    f"the ledger at {path} stayed locked by another connection for "
                    f"{patience_s:g} s (a tool or kernel holding a transaction open on it?); "
                    "end that, or wait longer with Ledger(path, busy_timeout_s=...)") from exc
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


def create_private(path: Path) -> bool:
    """Make the file (mode 0600, its directory 0700) if missing; True if it is new."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    except FileExistsError:
        with contextlib.suppress(OSError):
            if path.stat().st_mode & 0o077:
                os.chmod(path, 0o600)
        return path.stat().st_size == 0
    os.close(fd)
    return True


class Connections:
    """The ledger's two connections, held apart so that a ledger dropped without close()
    has them closed by a weakref.finalize. A __del__ on the ledger ran too late: the ledger
    sits in a cycle with its writer, and the garbage collector may finalize a connection
    first (sqlite3 warns of an unclosed connection since Python 3.13). While the writer's
    thread runs it keeps the ledger alive, and it closes its connection when it ends."""

    __slots__ = ("read", "write")

    def __init__(self) -> None:
        self.read: sqlite3.Connection | None = None
        self.write: sqlite3.Connection | None = None

    def close(self) -> None:
        for conn in (self.read, self.write):
            if conn is not None:
                try:
                    conn.close()
                except Exception:  # at interpreter exit
                    pass
        self.read = self.write = None
