"""`Ledger`: every attempt as a row in SQLite (WAL mode), written off the caller's thread.

    ledger = Ledger()                  # $LLMDISPATCH_HOME/ledger.db (default ~/.llmdispatch)
    ledger = Ledger("./my-project")    # a project-local file: ./my-project/ledger.db
    ledger = Ledger.memory()           # in memory, for tests; queries work the same

Several kernels may share one file: WAL lets readers run beside the one writer, and every
connection waits (busy_timeout) rather than failing while another holds the write lock.
Writes are acknowledged by `flush()`; what was flushed survives the process being killed.

The writer thread takes what has piled up in one transaction: a few records row by row, a
busy stream column by column, 64 rows to an INSERT (`_rows.insert_rows`), and packs the analysis
columns of the new rows into a block as it goes. Copying the write-ahead log into the file
(a checkpoint, with its fsyncs) happens on a thread of its own (`Checkpointer`).
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import itertools
import logging
import operator
import os
import sqlite3
import threading
import weakref
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._types import CallRecord
from . import _blocks
from ._errors import LedgerError
from ._migrations import migrate
from ._opening import Connections, create_private, fast_binding, switch_to_wal
from ._repair import storable
from ._rows import (
    FEW_ROWS,
    INSERT_ROW,
    ROW_FIELDS,
    TextMode,
    check_text_mode,
    columns_of,
    filters,
    from_row,
    insert_rows,
    to_columns,
    to_row,
)
from ._trouble import (
    Quarantine,
    describe,
    is_corrupt,
    is_store_problem,
    retry_for,
    set_aside,
)
from ._writer import BatchWriter, Checkpointer

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger("llmdispatch_nb.ledger")

FILE_NAME = "ledger.db"
_SELECT_WITH_ID = f"SELECT id, {', '.join(ROW_FIELDS)} FROM calls"
_BLOCK_FIELDS = tuple(name for name, type_ in _blocks.BLOCK_COLUMNS if type_ != "id")
# (field, the types SQLite and the block packing both take, what they are): subclasses
# pass (bool, numpy.float64); numpy.int64 or Decimal would not bind.
_NUMERIC_FIELDS = tuple(
    (name, int, "an int") if type_ == "int" else (name, (float, int), "a float or an int")
    for name, type_ in _blocks.BLOCK_COLUMNS if type_ in ("int", "float"))
_SELECT_FOR_BLOCKS = f"SELECT id, {', '.join(_BLOCK_FIELDS)} FROM calls"
# 16 KiB pages write a batch with fewer page splits than the 4 KiB default (~40% faster here);
# it only takes effect on a new file.
_PAGE_SIZE = 16384
# The writer asks for a checkpoint (on another thread: see `Checkpointer`) after about this
# many bytes of rows, and SQLite checkpoints in the writer's COMMIT only past BACKSTOP_PAGES
# (4x its default), if that thread falls behind. A restarted log is cut back to
# _WAL_LIMIT_BYTES so one burst does not leave a big file behind.
_CHECKPOINT_BYTES = 16 << 20
_BACKSTOP_PAGES = 4000
_WAL_LIMIT_BYTES = 64 << 20
_ROW_BYTES = 160  # a row less its texts, roughly: to estimate the log's growth
_TEXT_FIELDS = ("prompt", "response", "chunks")
_texts_of = operator.itemgetter(*(ROW_FIELDS.index(name) for name in _TEXT_FIELDS))


def ledger_home() -> Path:
    """The data dir: $LLMDISPATCH_HOME, else ~/.llmdispatch (read at call time)."""
    return Path(os.environ.get("LLMDISPATCH_HOME") or "~/.llmdispatch").expanduser()


def default_path() -> Path:
    return ledger_home() / FILE_NAME


def _default_text_mode() -> TextMode:
    return check_text_mode(os.environ.get("LLMDISPATCH_LEDGER_TEXT", "full").strip() or "full")


class Ledger:
    """The call ledger. `write` is cheap and thread-safe; queries see everything written.

    `text` decides what is kept of prompts and responses: "full" (default), "hash" (a
    sha256, to spot repeats without keeping the words) or "off"; the default comes from
    $LLMDISPATCH_LEDGER_TEXT. Keys and auth headers are never stored: a `CallRecord` has
    no field that could hold them.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, text: str | None = None,
                 batch_size: int = 5000, busy_timeout_s: float = 30.0) -> None:
        self.text: TextMode = check_text_mode(text) if text is not None else _default_text_mode()
        self.busy_timeout_s = busy_timeout_s
        self._memory = str(path) == ":memory:"
        if self._memory:
            self.path: Path | None = None
        else:
            p = Path(path).expanduser() if path is not None else default_path()
            with contextlib.suppress(OSError):  # an unreadable place: said at first use
                if p.is_dir() or (not p.exists() and p.suffix == ""):
                    p = p / FILE_NAME
            self.path = p.absolute()
        self._lock = threading.RLock()  # guards the reading connection (and all of memory mode)
        self._held = Connections()
        weakref.finalize(self, self._held.close).atexit = False
        self._migrated = False
        # Rows this writer wrote that no column block covers yet, each batch as its ids and
        # its columns (or rows): packing them from here saves reading them back (the tail is
        # packed once it reaches MIN_ROWS rows).
        self._recent: list[tuple[Sequence[int], Any]] = []
        # Records it cannot store, and the store's own trouble (see _trouble.py).
        self._quarantine = Quarantine(None if self.path is None else
                                      self.path.with_name(self.path.name + ".quarantine.jsonl"))
        self.problem: str | None = None  # what is wrong with the store, once said
        self._said: dict[str, str] = {}
        self._said_lock = threading.Lock()
        self._writer = BatchWriter(self._write_batch, name=f"llmdispatch-ledger-{id(self):x}",
                                   batch_size=batch_size, on_exit=self._close_writer,
                                   give_up=self._quarantine.add,
                                   retry_for=retry_for)
        self._checkpointer = Checkpointer(self._open, name=f"llmdispatch-ledger-{id(self):x}-ckpt")
        self._logged = 0  # bytes of rows written since the last checkpoint request (roughly)
        self._page_size = _PAGE_SIZE
        _LIVE.add(self)

    @classmethod
    def memory(cls, *, text: str = "full") -> Ledger:
        """A ledger that lives in this process only (tests, throwaway notebooks)."""
        return cls(":memory:", text=text)

    @classmethod
    def project(cls, root: str | os.PathLike[str] = ".", *, text: str | None = None) -> Ledger:
        """A ledger kept with a project: <root>/.llmdispatch/ledger.db."""
        return cls(Path(root) / ".llmdispatch" / FILE_NAME, text=text)

    def __repr__(self) -> str:
        where = "memory" if self._memory else str(self.path)
        return f"Ledger({where!r}, text={self.text!r})"

    # -- connections ------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        """A connection, migrated. A file SQLite cannot read is set aside and a new one
        started; any other trouble with the store is one LedgerError saying what to do."""
        try:
            try:
                return self._connect()
            except sqlite3.DatabaseError as exc:
                if self.path is None or not is_corrupt(exc):
                    raise
                aside = set_aside(self.path)
                self._migrated = False
                log.warning("the ledger at %s is not a database SQLite can read (%s); it was "
                            "moved to %s and a new ledger started in its place. Keep the old "
                            "file to recover what it holds (sqlite3 %s .recover), or delete it",
                            self.path, exc, aside, aside)
                return self._connect()
        except (OSError, sqlite3.Error, LedgerError) as exc:
            raise self._problem(exc) from exc

    def _problem(self, exc: BaseException) -> LedgerError:
        """The store failed: the LedgerError saying what to do, logged the first time."""
        message = describe(self.path, exc)
        # One warning per kind of trouble (the words before the quoted error), and every
        # later report of it in those same words, whichever thread or path met it first.
        kind = message.split(" (", 1)[0]
        with self._said_lock:
            first = kind not in self._said
            said = self._said.setdefault(kind, message)
            self.problem = said
        if first:
            log.warning("%s", message)
        return exc if isinstance(exc, LedgerError) and str(exc) == said else LedgerError(said)

    def _connect(self) -> sqlite3.Connection:
        fast_binding()
        path, new = self.path, False
        if path is None:
            conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        else:
            new = create_private(path)
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                   timeout=self.busy_timeout_s)
        try:  # a refusal (not a database, locked, a newer schema) takes the connection along
            if new:
                conn.execute(f"PRAGMA page_size={_PAGE_SIZE}")
            if path is not None:
                mode = switch_to_wal(conn, path, self.busy_timeout_s)
                if str(mode).lower() != "wal":
                    log.warning("the ledger at %s could not switch to WAL mode (%s); several "
                                "kernels writing at once may wait on each other", path, mode)
                conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_s * 1000)}")
            if not self._migrated:
                migrate(conn)
                self._migrated = True
        except BaseException:
            conn.close()
            raise
        return conn

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """The query connection, locked for this thread (also used by the cache). The
        store's trouble is a LedgerError saying what to do (see `_problem`)."""
        with self._lock:
            if self._held.read is None:
                self._held.read = self._open()
            try:
                yield self._held.read
            except (OSError, sqlite3.Error) as exc:
                if is_store_problem(exc):
                    raise self._problem(exc) from exc
                raise

    def _writer_conn(self) -> sqlite3.Connection:
        if self._memory:  # one connection for everything, guarded by the lock
            with self._reading() as conn:
                return conn
        if self._held.write is None:
            conn = self._held.write = self._open()
            conn.execute(f"PRAGMA wal_autocheckpoint={_BACKSTOP_PAGES}")
            conn.execute(f"PRAGMA journal_size_limit={_WAL_LIMIT_BYTES}")
            self._page_size = conn.execute("PRAGMA page_size").fetchone()[0]
            return conn
        return self._held.write

    def _close_writer(self) -> None:
        conn, self._held.write = self._held.write, None
        if conn is not None:
            conn.close()

    def _after_fork(self) -> None:
        # The parent's connections and thread belong to the parent; start afresh.
        self._held.read = self._held.write = None  # not closed: they are the parent's
        self._recent = []
        self._lock = threading.RLock()
        self._writer.after_fork()
        self._checkpointer.after_fork()
        self._logged = 0
        if self._memory:
            self._migrated = False

    # -- writing ----------------------------------------------------------------------

    def write(self, record: CallRecord) -> None:
        """Queue one attempt; it reaches the database within milliseconds, off this thread."""
        if type(record) is not CallRecord and not isinstance(record, CallRecord):
            # Caught here, not on the writer thread, where it would stall every record after it.
            raise TypeError(f"the ledger keeps CallRecords, not {type(record).__name__}")
        for name, types, what in _NUMERIC_FIELDS:  # under a microsecond a record
            # Likewise a number field holding something else: it would fail in the writer's
            # transaction (binding, or packing a block), a programming error to show here.
            value = getattr(record, name)
            if value is not None and not isinstance(value, types):
                raise TypeError(f"CallRecord.{name} must be {what} or None, "
                                f"not {type(value).__name__}")
        # Lone surrogates and numbers past 64 bits are repaired (and noted) here, so the
        # writer's batch holds only what SQLite takes; see _repair.py.
        self._writer.put(storable(record))

    def flush(self, timeout: float | None = 60.0) -> None:
        """Block until everything written so far is in the database (durable)."""
        self._writer.flush(timeout)

    def pending(self) -> int:
        """Records queued but not yet in the database."""
        return self._writer.pending()

    @property
    def quarantined(self) -> int:
        """Records this ledger could not store and set aside (see _trouble.py)."""
        return self._quarantine.count

    def quarantined_records(self) -> list[tuple[str, CallRecord]]:
        """The newest records set aside, each with the reason (the side file has all)."""
        return list(self._quarantine.kept)

    def _rows(self, batch: list[CallRecord]) -> list[tuple[Any, ...]]:
        """The batch as rows. A record that cannot become one raises: the writer then
        splits the batch down to that record and sets it aside (see `BatchWriter`)."""
        return [to_row(r, self.text) for r in batch]

    def _write_batch(self, batch: list[CallRecord]) -> None:
        """Write one batch. The store's trouble is raised as the LedgerError saying what
        to do (the writer retries, within bounds); anything else is these records' fault
        (the writer splits the batch to find the one at fault)."""
        try:
            self._write_rows(batch)
        except LedgerError:
            raise
        except Exception as exc:
            if is_store_problem(exc):
                raise self._problem(exc) from exc
            raise

    def _write_rows(self, batch: list[CallRecord]) -> None:
        # Many records go in column by column (see `insert_rows`), a few row by row.
        cols: dict[str, list[Any]] | None = None
        rows: list[tuple[Any, ...]] = []
        if len(batch) >= FEW_ROWS:
            try:
                cols = to_columns(batch, self.text)
            except Exception:  # some record cannot be stored: find it, row by row
                rows = self._rows(batch)
        else:
            rows = self._rows(batch)
        if cols is None and not rows:
            return
        n = len(cols["call_id"]) if cols is not None else len(rows)
        conn = self._writer_conn()
        with self._lock if self._memory else contextlib.nullcontext():
            conn.execute("BEGIN IMMEDIATE")
            try:
                first = conn.execute("SELECT ifnull(max(id), 0) FROM calls").fetchone()[0] + 1
                if cols is not None:
                    insert_rows(conn, cols, n)
                else:
                    conn.executemany(INSERT_ROW, rows)
                last = conn.execute("SELECT max(id) FROM calls").fetchone()[0]
                if last - first + 1 == n:
                    ids: Sequence[int] = range(first, last + 1)
                else:  # not the usual max+1 numbering: ask which ids the rows got
                    ids = [r[0] for r in conn.execute(
                        "SELECT id FROM calls WHERE id >= ? ORDER BY id", (first,))]
                self._recent.append((ids, cols if cols is not None else rows))
                covered = _covered_last(conn)
                if last - covered >= _blocks.MIN_ROWS:
                    if last - covered <= _blocks.TAIL_ROWS:
                        _cover_tail(conn, self._recent)
                    self._recent = []
                elif self._recent and self._recent[0][0][0] <= covered:
                    self._recent = []  # someone else packed these rows
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                self._recent = []
                raise
        if not self._memory:
            self._log_grew(n, cols, rows)

    def _log_grew(self, n: int, cols: dict[str, list[Any]] | None,
                  rows: list[tuple[Any, ...]]) -> None:
        """Count what this commit added to the write-ahead log, roughly, and ask for a
        checkpoint every _CHECKPOINT_BYTES: the rows, plus the pages every commit rewrites
        whole (the last page of the table and of each index)."""
        if cols is not None:
            texts = sum(sum(map(len, filter(None, cols[name]))) for name in _TEXT_FIELDS)
        else:
            texts = sum(map(len, filter(None, itertools.chain.from_iterable(map(_texts_of, rows)))))
        self._logged += n * _ROW_BYTES + texts + 4 * self._page_size
        if self._logged >= _CHECKPOINT_BYTES:
            self._logged = 0
            self._checkpointer.request()

    def close(self) -> None:
        """Flush, then let go of connections and the writer thread (reopened on next use)."""
        self._writer.stop()
        self._checkpointer.stop()
        with self._lock:
            if self._held.read is not None and not self._memory:
                self._held.read.close()
                self._held.read = None

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading ----------------------------------------------------------------------

    def records(self, session: str | None = None, since: float | dt.datetime | None = None,
                tags: str | Iterable[str] | None = None, limit: int | None = None, *,
                call_ids: Iterable[str] | None = None) -> list[CallRecord]:
        """Attempts, oldest first: of one session, since a time, carrying every tag given,
        of the given calls; `limit` keeps the newest that many."""
        self.flush()
        where, args = filters(session, since, tags, call_ids)
        sql = f"SELECT * FROM ({_SELECT_WITH_ID}{where}"
        if limit is not None:
            sql += " ORDER BY id DESC LIMIT ?) ORDER BY id"
            args.append(int(limit))
        else:
            sql += ") ORDER BY id"
        with self._reading() as conn:
            rows = conn.execute(sql, args).fetchall()
        return [from_row(r[1:]) for r in rows]

    def count(self) -> int:
        """Attempts in the ledger."""
        self.flush()
        with self._reading() as conn:
            return int(conn.execute("SELECT count(*) FROM calls").fetchone()[0])

    def dataframe(self) -> pd.DataFrame:
        """Every attempt as a typed DataFrame, read from the column blocks (fast), plus the
        few newest rows no block covers yet."""
        from ._frame import frame_from_blocks

        self.flush()
        for tries in range(3):
            with self._reading() as conn:
                conn.execute("BEGIN")
                try:
                    total = conn.execute("SELECT count(*) FROM calls").fetchone()[0]
                    covered_last, covered = conn.execute(
                        "SELECT ifnull(max(last_id), 0), ifnull(sum(n), 0) FROM call_blocks"
                    ).fetchone()
                    tail_n = conn.execute("SELECT count(*) FROM calls WHERE id > ?",
                                          (covered_last,)).fetchone()[0]
                    consistent = covered + tail_n == total
                    if consistent and tail_n <= _blocks.TAIL_ROWS:
                        tail = conn.execute(f"{_SELECT_FOR_BLOCKS} WHERE id > ? ORDER BY id",
                                            (covered_last,)).fetchall()
                        blocks: Iterable[bytes] = (r[0] for r in conn.execute(
                            "SELECT data FROM call_blocks ORDER BY first_id"))
                        if tail:
                            blocks = itertools.chain(blocks, [_encode_selected(tail)])
                        try:
                            return frame_from_blocks(blocks, total)
                        except ValueError as exc:  # a block from another format version
                            log.info("bringing the ledger's column blocks up to date: %s", exc)
                            consistent = False
                finally:
                    conn.execute("COMMIT")
            if not consistent and not tries:
                with self._reading() as conn, _write_transaction(conn):
                    if _blocks.upgrade_stored(conn):
                        continue  # then read again; what is still amiss is rebuilt
            if not consistent or tries:
                self.rebuild_blocks()
            else:  # a long unpacked tail (the writer left it): pack it once, then read
                with self._reading() as conn, _write_transaction(conn):
                    _cover_tail(conn)
        raise LedgerError("the ledger's column blocks do not match its rows even after a rebuild")

    def rebuild_blocks(self) -> None:
        """Rewrite the column blocks from the rows (after rows were changed by hand)."""
        with self._reading() as conn, _write_transaction(conn):
            conn.execute("DELETE FROM call_blocks")
            _cover_tail(conn)

    def info(self) -> dict[str, Any]:
        self.flush()
        with self._reading() as conn:
            rows = conn.execute("SELECT count(*), min(timestamp), max(timestamp) FROM calls").fetchone()
            schema = conn.execute("SELECT max(number) FROM migrations").fetchone()[0]
            blocks = conn.execute("SELECT count(*) FROM call_blocks").fetchone()[0]
        return {"path": None if self._memory else str(self.path), "text": self.text,
                "attempts": rows[0], "first": rows[1], "last": rows[2], "schema": schema,
                "column_blocks": blocks, "pending": self.pending(),
                "quarantined": self.quarantined}


@contextlib.contextmanager
def _write_transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _covered_last(conn: sqlite3.Connection) -> int:
    """The last row id the column blocks cover (they cover every row up to it). Blocks are
    added in row order, so the newest block ends last: one row read, not a scan."""
    row = conn.execute("SELECT last_id FROM call_blocks ORDER BY id DESC LIMIT 1").fetchone()
    return int(row[0]) if row else 0


def _encode_selected(rows: Sequence[Sequence[Any]]) -> bytes:
    """The block of rows read with _SELECT_FOR_BLOCKS."""
    ids, *cols = zip(*rows, strict=True)
    return _blocks.encode(ids, dict(zip(_BLOCK_FIELDS, cols, strict=True)))


def _cover_tail(conn: sqlite3.Connection,
                recent: Sequence[tuple[Sequence[int], Any]] = ()) -> None:
    """Pack the rows no block covers yet into blocks, then merge small blocks (inside the
    caller's write transaction). `recent` are rows this process just wrote, each batch as
    its ids and its columns (or rows): when they are exactly the tail, they are packed
    without reading them back."""
    start = _covered_last(conn) + 1
    ids = [i for batch_ids, _ in recent for i in batch_ids]
    last = conn.execute("SELECT ifnull(max(id), 0) FROM calls").fetchone()[0]
    if ids and ids[0] == start and ids[-1] == last and len(ids) == last - start + 1:
        # Batches written as columns stay columns; runs of batches written as rows become
        # columns in one go.
        parts: list[dict[str, list[Any]]] = []
        for is_cols, run in itertools.groupby((part for _, part in recent),
                                              key=lambda part: isinstance(part, dict)):
            if is_cols:
                parts.extend(run)
            else:
                parts.append(columns_of([row for rows in run for row in rows]))
        cols = parts[0] if len(parts) == 1 else {
            name: list(itertools.chain.from_iterable(p[name] for p in parts))
            for name in _BLOCK_FIELDS}
        blobs: Iterable[tuple[int, int, int, bytes]] = [
            (len(ids), ids[0], ids[-1], _blocks.encode(range(start, last + 1), cols))]
    else:
        cur = conn.execute(f"{_SELECT_FOR_BLOCKS} WHERE id >= ? ORDER BY id", (start,))
        blobs = ((len(c), c[0][0], c[-1][0], _encode_selected(c))
                 for c in iter(lambda: cur.fetchmany(_blocks.TAIL_ROWS), []))
    for row in blobs:
        conn.execute("INSERT INTO call_blocks (n, first_id, last_id, data) VALUES (?, ?, ?, ?)",
                     row)
    _compact(conn)


def _compact(conn: sqlite3.Connection) -> None:
    """Merge small trailing column blocks (see `_blocks.plan_merge`), inside the caller's
    transaction."""
    tail = conn.execute("SELECT id, n FROM call_blocks ORDER BY id DESC LIMIT 80").fetchall()
    tail.reverse()
    while True:
        chosen = _blocks.plan_merge(tail)
        if not chosen:
            return
        marks = ", ".join("?" for _ in chosen)
        rows = conn.execute(f"SELECT id, n, first_id, last_id, data FROM call_blocks "
                            f"WHERE id IN ({marks}) ORDER BY id", chosen).fetchall()
        try:
            blob = _blocks.merge(r[4] for r in rows)
        except ValueError as exc:
            # A block of another format version (an older llmdispatch-nb wrote it). Raised
            # here, on the writer's thread, it would read as these records' fault and set
            # them aside: leave the blocks unmerged; the next read brings them up to date.
            log.info("leaving the ledger's column blocks unmerged: %s", exc)
            return
        n = sum(r[1] for r in rows)
        conn.execute(f"DELETE FROM call_blocks WHERE id IN ({marks})", chosen)
        new_id = conn.execute("INSERT INTO call_blocks (n, first_id, last_id, data) "
                              "VALUES (?, ?, ?, ?)",
                              (n, rows[0][2], rows[-1][3], blob)).lastrowid
        tail = [*tail[:-len(chosen)], (int(new_id or 0), n)]


# -- the process-wide ledger, and flushing at exit ----------------------------------------

_LIVE: weakref.WeakSet[Ledger] = weakref.WeakSet()
_defaults: dict[Path, Ledger] = {}
_defaults_lock = threading.Lock()


def default_ledger() -> Ledger:
    """The process-wide ledger at $LLMDISPATCH_HOME/ledger.db (the variable is read now)."""
    path = default_path().absolute()
    with _defaults_lock:
        ledger = _defaults.get(path)
        if ledger is None:
            ledger = _defaults[path] = Ledger(path)
        return ledger


def _flush_all_at_exit() -> None:
    for ledger in list(_LIVE):
        try:
            ledger.flush(timeout=10.0)
        except Exception as exc:
            log.error("the ledger %r lost %d records at exit: %s", ledger, ledger.pending(), exc)


def _after_fork_in_child() -> None:
    for ledger in list(_LIVE):
        ledger._after_fork()


atexit.register(_flush_all_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
