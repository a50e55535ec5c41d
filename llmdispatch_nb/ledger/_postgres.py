"""`PostgresLedger`: the ledger of a team, in PostgreSQL, through psycopg 3.

    ledger = PostgresLedger("postgresql://ana@db.internal/llm")   # or LLMDISPATCH_LEDGER=...
    Dispatcher(ledger="postgresql://...")

The same records as the SQLite `Ledger`, the same write path: callers `write`, the
`BatchWriter` thread takes what has piled up and sends it in one transaction (COPY into a
temporary table, then one INSERT ... SELECT that skips rows already there, so a batch sent
twice after a lost acknowledgement is stored once). Each row also carries the user
(`user=`, else $LLMDISPATCH_USER, else the login name), so a team's views group by person.

At least once, never lost: when the server goes away the writer holds the records and
retries for `buffer_s` seconds (or until `buffer_records` are waiting), then spills them to
a local SQLite ledger beside the default one and says so; every later write that reaches
the server, and every `flush()`, first uploads what was spilled. Reads (`records`, `frame`,
and so `analysis.calls()`/`summary()`) put their filters (session, user, tags, time range)
into SQL, so a team ledger of millions of rows never comes whole into a kernel.

psycopg is imported only when a PostgreSQL ledger is opened. The password in a URL is
never shown: `repr` and every message use the URL without it.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import getpass
import hashlib
import logging
import os
import re
import threading
import weakref
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._types import CallRecord
from ._errors import LedgerError
from ._pg_schema import PG_COLUMNS, migrate
from ._repair import storable
from ._rows import ROW_FIELDS, check_text_mode, from_row, to_row
from ._store import _NUMERIC_FIELDS, Ledger, _default_text_mode, default_ledger, ledger_home
from ._writer import BatchWriter

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger("llmdispatch_nb.ledger")

SCHEMES = ("postgresql://", "postgres://")
_COLUMNS = (*ROW_FIELDS, "user_name")
_STAGE = "llmdispatch_stage"
_INSERT = (f"INSERT INTO calls ({', '.join(_COLUMNS)}) "
           f"SELECT {', '.join('tags::jsonb' if c == 'tags' else c for c in _COLUMNS)} "
           f"FROM {_STAGE} ORDER BY seq ON CONFLICT (call_id, attempt, timestamp) DO NOTHING")
_CREATE_STAGE = (f"CREATE TEMPORARY TABLE IF NOT EXISTS {_STAGE} (seq serial, "
                 + ", ".join(f"{c} {'text' if c == 'tags' else PG_COLUMNS[c]}" for c in _COLUMNS)
                 + ") ON COMMIT DELETE ROWS")
_COPY_CALLS = f"COPY calls ({', '.join(_COLUMNS)}) FROM STDIN"
_SELECT = ", ".join("tags::text" if c == "tags" else c for c in ROW_FIELDS)
_UPLOAD_ROWS = 5000


def is_postgres_url(where: object) -> bool:
    return isinstance(where, str) and where.strip().lower().startswith(SCHEMES)


def shown_url(url: str) -> str:
    """The URL without its password (and without any query string that might hold one)."""
    url = url.split("?", 1)[0]
    return re.sub(r"^(\w+://[^:/@]*):[^@]*@", r"\1:***@", url)


def default_user() -> str:
    """Who the records belong to: $LLMDISPATCH_USER, else the login name."""
    user = os.environ.get("LLMDISPATCH_USER", "").strip()
    if user:
        return user
    try:
        return getpass.getuser()
    except Exception:  # no login name (a container without a passwd entry)
        return "unknown"


class PostgresLedger:
    """A ledger in PostgreSQL: `write`/`flush`/`records`/`count` as `Ledger`, plus `frame`
    (filters in SQL) and `user`. `buffer_s`/`buffer_records` bound what is held in memory
    while the server is away before it is spilled to the local SQLite file `spill`."""

    def __init__(self, url: str, *, user: str | None = None, text: str | None = None,
                 batch_size: int = 5000, buffer_s: float = 5.0, buffer_records: int = 50_000,
                 connect_timeout_s: float = 5.0, spill: Ledger | str | os.PathLike[str] | None = None
                 ) -> None:
        if not is_postgres_url(url):
            raise ValueError("a PostgreSQL ledger needs a postgresql:// URL")
        try:
            import psycopg  # noqa: F401
        except ImportError as exc:
            raise LedgerError("a PostgreSQL ledger needs psycopg 3: pip install "
                              "'psycopg[binary]' (or llmdispatch-nb[team])") from exc
        self._url = url.strip()
        self.url = shown_url(self._url)
        self.user = user or default_user()
        self.text = check_text_mode(text) if text is not None else _default_text_mode()
        self.buffer_s = buffer_s
        self.buffer_records = buffer_records
        self.connect_timeout_s = connect_timeout_s
        if spill is None:
            digest = hashlib.sha256(f"{self.url}\0{self.user}".encode()).hexdigest()[:12]
            spill = ledger_home() / f"team-spill-{digest}.db"
        self.spill = spill if isinstance(spill, Ledger) else Ledger(spill, text=self.text)
        self.spilled = 0  # records this process spilled (uploaded or not)
        self.uploaded = 0  # spilled records this process uploaded
        # The writer's connection (writer thread only) and the reading one; closed when
        # the ledger is collected (an open connection left to the collector warns).
        self._held = _Connections()
        weakref.finalize(self, self._held.close).atexit = False
        self._read_lock = threading.Lock()
        self._upload_lock = threading.Lock()
        self._migrated = False
        self._spill_waiting = True  # a spill file from an earlier run may hold records
        self._failed: int | None = None  # id() of the batch whose last write failed
        self._writer = BatchWriter(self._write_batch, name=f"llmdispatch-pg-ledger-{id(self):x}",
                                   batch_size=batch_size, on_exit=self._close_writer,
                                   give_up=self._spill, retry_for=self._retry_for)
        _LIVE.add(self)

    def __repr__(self) -> str:
        return f"PostgresLedger({self.url!r}, user={self.user!r}, text={self.text!r})"

    # -- connections ------------------------------------------------------------------

    def _connect(self) -> Any:
        import psycopg

        conn = psycopg.connect(self._url, connect_timeout=max(1, round(self.connect_timeout_s)),
                               application_name="llmdispatch-nb")
        try:
            if not self._migrated:
                migrate(conn)
                self._migrated = True
        except BaseException:
            conn.close()
            raise
        return conn

    def _staging_conn(self) -> Any:
        """A connection with the temporary table batches are copied into."""
        conn = self._connect()
        conn.execute(_CREATE_STAGE)
        conn.commit()
        return conn

    def _writer_conn(self) -> Any:
        if self._held.write is None or self._held.write.closed:
            self._held.write = self._staging_conn()
        return self._held.write

    def _close_writer(self) -> None:
        conn, self._held.write = self._held.write, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _fetch(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of one query on the reading connection. A connection the server dropped
        (a restart) is replaced once; a server still away is one LedgerError."""
        import psycopg

        with self._read_lock:
            for fresh in (False, True):
                try:
                    if self._held.read is None or self._held.read.closed:
                        fresh = True
                        self._held.read = self._connect()
                    conn = self._held.read
                    rows: list[tuple[Any, ...]] = conn.execute(sql, args).fetchall()
                    conn.rollback()  # end the read's transaction: no snapshot held open
                    return rows
                except psycopg.OperationalError as exc:
                    with contextlib.suppress(Exception):
                        self._held.read.close()
                    self._held.read = None
                    if fresh:
                        raise LedgerError(f"the PostgreSQL ledger at {self.url} cannot be read: "
                                          f"{type(exc).__name__}: {_first_line(exc)}") from exc
            raise AssertionError("unreachable")

    # -- writing ----------------------------------------------------------------------

    def write(self, record: CallRecord) -> None:
        """Queue one attempt; it reaches the server within milliseconds, off this thread."""
        if not isinstance(record, CallRecord):
            raise TypeError(f"the ledger keeps CallRecords, not {type(record).__name__}")
        for name, types, what in _NUMERIC_FIELDS:  # as Ledger.write: fail here, not later
            value = getattr(record, name)
            if value is not None and not isinstance(value, types):
                raise TypeError(f"CallRecord.{name} must be {what} or None, "
                                f"not {type(value).__name__}")
        self._writer.put(storable(record))

    def flush(self, timeout: float | None = 60.0) -> None:
        """Block until everything written so far is on the server, or (the server away)
        in the local spill file; then upload what was spilled, if the server is back."""
        self._writer.flush(timeout)
        if self._spill_waiting:
            with contextlib.suppress(Exception):  # still away: it stays spilled, safely
                self.upload_spilled()

    def pending(self) -> int:
        return self._writer.pending()

    def _retry_for(self, exc: BaseException) -> float | None:
        import psycopg

        if isinstance(exc, psycopg.errors.UniqueViolation):
            return self.buffer_s  # rows already there: resent, the batch skips them
        if isinstance(exc, (psycopg.DataError, psycopg.IntegrityError, ValueError, TypeError)):
            return None  # these records: the writer splits the batch to find the one
        # The server (gone, restarting, refusing): hold the records for a while, unless
        # too many are waiting already.
        return 0.0 if self._writer.pending() > self.buffer_records else self.buffer_s

    def _rows(self, batch: Sequence[CallRecord]) -> list[tuple[Any, ...]]:
        user = self.user
        return [(*map(_no_nul, to_row(r, self.text)), user) for r in batch]

    def _write_batch(self, batch: list[CallRecord]) -> None:
        rows = self._rows(batch)  # a record that cannot be a row raises before any I/O
        # A batch that failed once may be on the server already (a commit whose answer was
        # lost): resent, it goes the way that skips rows already there.
        again = self._failed == id(batch)
        try:
            _send(self._writer_conn(), rows, maybe_there=again)
        except Exception:
            self._failed = id(batch)
            self._close_writer()  # a broken connection is opened afresh next time
            raise
        self._failed = None
        if self._spill_waiting:
            self.upload_spilled(self._held.write)

    def _spill(self, batch: list[CallRecord], exc: BaseException) -> None:
        """The writer gave up on `batch`: keep it in the local SQLite file (durably)."""
        for record in batch:
            self.spill.write(record)
        self.spill.flush()
        self.spilled += len(batch)
        self._spill_waiting = True
        log.warning("the PostgreSQL ledger at %s did not take %d records (%s: %s); they are "
                    "kept in the local SQLite ledger %s and uploaded when the server answers",
                    self.url, len(batch), type(exc).__name__, _first_line(exc), self.spill.path)

    def upload_spilled(self, conn: Any = None) -> int:
        """Send what was spilled to the server, oldest first, and remove it from the spill
        file once the server holds it. Returns how many records went up."""
        done = 0
        own = conn is None
        self.spill.flush()
        if not self.spilled and self.spill.path is not None and not self.spill.path.exists():
            self._spill_waiting = False  # no file: nothing was ever spilled here
            return 0
        with self._upload_lock, contextlib.ExitStack() as stack:
            if own:
                conn = self._staging_conn()
                stack.callback(conn.close)
            self.spill.flush()
            while True:
                with self.spill._reading() as sconn:
                    rows = sconn.execute(
                        f"SELECT id, {', '.join(ROW_FIELDS)} FROM calls ORDER BY id LIMIT ?",
                        (_UPLOAD_ROWS,)).fetchall()
                if not rows:
                    break
                user = self.user
                _send(conn, [(*map(_no_nul, r[1:]), user) for r in rows])
                with self.spill._reading() as sconn:
                    sconn.execute("BEGIN IMMEDIATE")
                    sconn.execute("DELETE FROM calls WHERE id <= ?", (rows[-1][0],))
                    sconn.execute("DELETE FROM call_blocks")  # rebuilt from what is left
                    sconn.execute("COMMIT")
                done += len(rows)
            self._spill_waiting = False
        if done:
            self.uploaded += done
            log.warning("the PostgreSQL ledger at %s is back: %d spilled records uploaded",
                        self.url, done)
        return done

    def close(self) -> None:
        self.flush()
        self._writer.stop()
        with self._read_lock:
            if self._held.read is not None:
                self._held.read.close()
                self._held.read = None

    def __enter__(self) -> PostgresLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _after_fork(self) -> None:
        self._held = _Connections()  # the parent's connections: not closed here
        self._read_lock = threading.Lock()
        self._upload_lock = threading.Lock()
        self._writer.after_fork()

    # -- reading ----------------------------------------------------------------------

    def _where(self, session: str | None, user: str | Iterable[str] | None,
               since: float | dt.datetime | None, until: float | dt.datetime | None,
               tags: str | Iterable[str] | None) -> tuple[str, list[Any]]:
        import json

        clauses: list[str] = []
        args: list[Any] = []
        if session is not None:
            clauses.append("session = %s")
            args.append(session)
        if user is not None:
            clauses.append("user_name = ANY(%s)")
            args.append([user] if isinstance(user, str) else list(user))
        if since is not None:
            clauses.append("timestamp >= %s")
            args.append(_seconds(since))
        if until is not None:
            clauses.append("timestamp < %s")
            args.append(_seconds(until))
        wanted = [tags] if isinstance(tags, str) else list(tags or ())
        if wanted:
            clauses.append("tags @> %s::jsonb")  # GIN-indexed: every tag given
            args.append(json.dumps(wanted))
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), args

    def records(self, session: str | None = None, since: float | dt.datetime | None = None,
                tags: str | Iterable[str] | None = None, limit: int | None = None, *,
                user: str | Iterable[str] | None = None,
                until: float | dt.datetime | None = None) -> list[CallRecord]:
        """Attempts, oldest first, filtered on the server; `limit` keeps the newest."""
        return [r for r, _ in self._select(session, since, tags, limit, user, until)]

    def _select(self, session: str | None, since: float | dt.datetime | None,
                tags: str | Iterable[str] | None, limit: int | None,
                user: str | Iterable[str] | None, until: float | dt.datetime | None
                ) -> list[tuple[CallRecord, str]]:
        self.flush()
        where, args = self._where(session, user, since, until, tags)
        sql = f"SELECT id, {_SELECT}, user_name FROM calls{where}"
        if limit is not None:
            sql = f"SELECT * FROM ({sql} ORDER BY id DESC LIMIT %s) newest ORDER BY id"
            args.append(int(limit))
        else:
            sql += " ORDER BY id"
        rows = self._fetch(sql, args)
        return [(from_row(r[1:-1]), r[-1]) for r in rows]

    def frame(self, *, session: str | None = None, user: str | Iterable[str] | None = None,
              since: float | dt.datetime | None = None, until: float | dt.datetime | None = None,
              tags: str | Iterable[str] | None = None) -> pd.DataFrame:
        """The attempts matching the filters (chosen by the server) as the typed frame
        `analysis.calls()` gives, plus a `user` column."""
        import pandas as pd

        from ._frame import frame_from_records

        found = self._select(session, since, tags, None, user, until)
        df = frame_from_records([r for r, _ in found])
        df["user"] = pd.Categorical([u for _, u in found])
        return df

    def dataframe(self) -> pd.DataFrame:
        return self.frame()

    def count(self, **filters: Any) -> int:
        self.flush()
        where, args = self._where(filters.get("session"), filters.get("user"),
                                  filters.get("since"), filters.get("until"), filters.get("tags"))
        return int(self._fetch(f"SELECT count(*) FROM calls{where}", args)[0][0])

    def spend(self, **filters: Any) -> list[dict[str, Any]]:
        """Calls, attempts and cost per user, vendor and model, summed by the server."""
        self.flush()
        where, args = self._where(filters.get("session"), filters.get("user"),
                                  filters.get("since"), filters.get("until"), filters.get("tags"))
        sql = ("SELECT user_name, vendor, model_requested, count(DISTINCT call_id), count(*), "
               "sum(CASE WHEN status IN ('ok', 'cached') THEN 1 ELSE 0 END), "
               f"coalesce(sum(cost_usd), 0) FROM calls{where} "
               "GROUP BY 1, 2, 3 ORDER BY 7 DESC, 1, 2, 3")
        rows = self._fetch(sql, args)
        keys = ("user", "vendor", "model", "calls", "attempts", "successes", "cost_usd")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def info(self) -> dict[str, Any]:
        self.flush()
        n, first, last = self._fetch("SELECT count(*), min(timestamp), max(timestamp) FROM calls")[0]
        schema = self._fetch("SELECT max(number) FROM llmdispatch_migrations")[0][0]
        return {"url": self.url, "user": self.user, "text": self.text, "attempts": n,
                "first": first, "last": last, "schema": schema, "pending": self.pending(),
                "spilled": self.spilled, "uploaded": self.uploaded,
                "spill": str(self.spill.path)}


class _Connections:
    def __init__(self) -> None:
        self.read: Any = None
        self.write: Any = None

    def close(self) -> None:
        for conn in (self.read, self.write):
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
        self.read = self.write = None


def _send(conn: Any, rows: Sequence[tuple[Any, ...]], *, maybe_there: bool = True) -> None:
    """One transaction. Rows that may be on the server already (a batch resent after its
    acknowledgement was lost, spilled records) are copied into the staging table, then
    into `calls` skipping those already there; others are copied straight into `calls`
    (half the server's work)."""
    with conn.transaction(), conn.cursor() as cur:
        if not maybe_there:
            with cur.copy(_COPY_CALLS) as copy:
                for row in rows:
                    copy.write_row(row)
            return
        with cur.copy(f"COPY {_STAGE} ({', '.join(_COLUMNS)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        cur.execute(_INSERT)


def _no_nul(value: Any) -> Any:
    """PostgreSQL text holds no NUL character: it becomes U+FFFD, as SQLite's lone
    surrogates do (see _repair.py)."""
    return value.replace("\x00", "\ufffd") if type(value) is str and "\x00" in value else value


def _seconds(when: float | dt.datetime) -> float:
    return when.timestamp() if isinstance(when, dt.datetime) else float(when)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0]


# -- flushing at exit, and forks ----------------------------------------------------------

_LIVE: weakref.WeakSet[PostgresLedger] = weakref.WeakSet()


def _flush_all_at_exit() -> None:
    for ledger in list(_LIVE):
        try:
            ledger._writer.flush(timeout=10.0)  # what cannot reach the server is spilled
        except Exception as exc:
            log.error("the ledger %r lost %d records at exit: %s", ledger, ledger.pending(), exc)


def _after_fork_in_child() -> None:
    for ledger in list(_LIVE):
        ledger._after_fork()


# Registered after the SQLite ledgers' handler, so it runs before it: records spilled at
# exit reach the spill file's writer while that can still flush them.
atexit.register(_flush_all_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# -- which ledger a process writes to -------------------------------------------------------

_shared: dict[tuple[str, str], PostgresLedger] = {}
_shared_lock = threading.Lock()


def open_ledger(where: str | os.PathLike[str], **options: Any) -> Ledger | PostgresLedger:
    """A `postgresql://` URL: the process's PostgresLedger for it (one per URL and user);
    anything else: a SQLite `Ledger` at that path."""
    if not is_postgres_url(where):
        return Ledger(where, **options)
    url = str(where).strip()
    user = options.get("user") or default_user()
    with _shared_lock:
        ledger = _shared.get((url, user))
        if ledger is None:
            ledger = _shared[(url, user)] = PostgresLedger(url, **{**options, "user": user})
        return ledger


def server_side(source: Any) -> tuple[PostgresLedger, str | None] | None:
    """`source` (a PostgresLedger, or a Dispatcher writing to one, with its session) when
    it filters on the server; else None."""
    if isinstance(source, PostgresLedger):
        return source, None
    ledger = getattr(source, "ledger", None)
    if isinstance(ledger, PostgresLedger) and hasattr(source, "session"):
        return ledger, source.session
    return None


def configured_ledger() -> Ledger | PostgresLedger:
    """The ledger $LLMDISPATCH_LEDGER names (a PostgreSQL URL or a path), else the default
    SQLite ledger in $LLMDISPATCH_HOME."""
    where = os.environ.get("LLMDISPATCH_LEDGER", "").strip()
    if not where:
        return default_ledger()
    return open_ledger(where) if is_postgres_url(where) else open_ledger(Path(where))
