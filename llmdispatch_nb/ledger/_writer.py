"""The ledger's writer: callers append, one background thread writes in batches.

`put` is an append to a deque and, at most, setting an event: nothing on the caller's
thread touches SQLite. The thread drains what has piled up (up to `batch_size` at a time)
and hands it to `sink`, which writes one transaction. Under load the batches grow by
themselves; when idle, a record is written within a few milliseconds.

A few records alone wait up to `linger_s` for company before they are written: one
transaction per notebook call cost more than the call's own bookkeeping, and a
transaction for three costs little more than for one. `flush` cuts the wait short.

`flush` appends a marker and waits until the thread has written everything before it.
A batch that fails to write is never retried forever. When the records are at fault (the
sink raises anything `retry_for` gives no time for), the batch is split in halves and
each half written on its own, down to the one record that cannot be stored, which goes
to `give_up` (the ledger's quarantine) while every record around it is written. When the
store itself fails (locked, disk full, unwritable), the batch is retried with backoff for
as long as `retry_for(error)` says (long for a lock another kernel holds, briefly for a
store that is broken), then handed to `give_up`; while the store keeps failing, later
batches get one try each, so `flush` answers at once. The thread exits after `idle_exit_s` without
work (so a test suite that opens hundreds of ledgers does not keep hundreds of threads)
and is started again by the next `put`.

`Checkpointer` is the ledger's second thread: it copies the write-ahead log into the
database file when the writer asks, so the writer never waits on that copy.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ._errors import LedgerError

log = logging.getLogger("llmdispatch_nb.ledger")


class _Marker:
    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


def _end_thread(owner: BatchWriter | Checkpointer, timeout: float | None) -> None:
    """Wake `owner`'s thread with `_stopping` set and wait for it to end (a thread cannot
    wait for itself; the next use starts another)."""
    thread = owner._thread
    if thread is None or thread is threading.current_thread():
        return
    owner._stopping = True
    owner._wake.set()
    thread.join(timeout)
    owner._stopping = False


class BatchWriter:
    def __init__(self, sink: Callable[[list[Any]], None], *, name: str,
                 batch_size: int = 5000, idle_exit_s: float = 5.0, linger_s: float = 0.02,
                 on_exit: Callable[[], None] | None = None,
                 give_up: Callable[[list[Any], BaseException], None] | None = None,
                 retry_for: Callable[[BaseException], float | None] = lambda exc: 60.0
                 ) -> None:
        self._sink = sink
        self._give_up = give_up
        self._retry_for = retry_for
        self._name = name
        self.batch_size = batch_size
        self.linger_s = linger_s
        self.idle_exit_s = idle_exit_s
        self._on_exit = on_exit
        self._reset()

    def _reset(self) -> None:
        self._pending: deque[Any] = deque()
        self._wake = threading.Event()
        self._urgent = threading.Event()  # someone is flushing: no lingering
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._busy = False
        self._stopping = False
        self._inflight = 0  # taken off the queue, not yet written
        self.last_error: BaseException | None = None
        self.failing = False  # the store failed past its retries and has not written since
        self.written = 0

    def after_fork(self) -> None:
        """In a forked child: the parent's queue and thread are the parent's to finish."""
        self._reset()

    # -- the caller's side ------------------------------------------------------------

    def put(self, item: Any) -> None:
        self._pending.append(item)
        if self._thread is None or not self._wake.is_set():
            self._kick()

    def pending(self) -> int:
        """Records not yet written: queued, or in the batch being written."""
        return self._inflight + sum(1 for x in list(self._pending) if type(x) is not _Marker)

    def idle(self) -> bool:
        """Nothing queued and nothing being written (reads the flag after the queue)."""
        return not self._pending and not self._busy

    def flush(self, timeout: float | None = None) -> None:
        """Block until everything put before this call is written."""
        if self.idle():
            return
        if threading.current_thread() is self._thread:
            return  # the sink itself asked; it is writing right now
        marker = _Marker()
        self._pending.append(marker)
        self._urgent.set()
        self._kick()
        if not marker.done.wait(timeout):
            why = f": {type(self.last_error).__name__}: {self.last_error}" if self.last_error else ""
            raise LedgerError(f"the ledger could not write {self.pending()} queued records within "
                              f"{timeout:g} s{why}")

    def stop(self, timeout: float | None = 10.0) -> None:
        """Write what is queued, then end the thread (the next `put` starts another)."""
        self.flush(timeout)
        _end_thread(self, timeout)

    def _kick(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                    self._thread.start()
                    return
        if not self._wake.is_set():
            self._wake.set()

    # -- the writer thread ------------------------------------------------------------

    def _run(self) -> None:
        me = threading.current_thread()
        pending = self._pending
        while True:
            if not pending:
                self._wake.clear()
                # A put between the check and the clear left its item: look again.
                idle_for = 0.0 if self._stopping else self.idle_exit_s
                if not pending and not self._wake.wait(idle_for):
                    with self._lock:
                        if pending:
                            continue
                        self._close_quietly()
                        self._thread = None
                        # A put that saw this thread registered only set the event.
                        if not pending:
                            return
                        self._thread = me
                continue
            if self.linger_s and len(pending) < 64 and not self._urgent.is_set():
                self._urgent.wait(self.linger_s)
            self._urgent.clear()
            self._busy = True
            batch: list[Any] = []
            markers: list[_Marker] = []
            while pending and len(batch) < self.batch_size:
                item = pending.popleft()
                if type(item) is _Marker:
                    markers.append(item)
                else:
                    batch.append(item)
            if batch:
                self._inflight = len(batch)
                self._write(batch)
                self._inflight = 0
            for m in markers:
                m.done.set()
            self._busy = False

    def _write(self, batch: list[Any]) -> None:
        delay = 0.02
        first_failure: float | None = None
        while True:
            try:
                self._sink(batch)
            except Exception as exc:
                patience = self._retry_for(exc)
                if patience is None:  # something in these records
                    if len(batch) == 1 or self._give_up is None:
                        self._abandon(batch, exc)
                        return
                    half = len(batch) // 2  # at most log2(batch_size) levels deep
                    self._write(batch[:half])
                    self._write(batch[half:])
                    return
                if self.last_error is None and not isinstance(exc, LedgerError):
                    # (a LedgerError was said by whoever raised it, once)
                    log.warning("ledger write failed (%s: %s); retrying for up to %g s before "
                                "setting the records aside", type(exc).__name__, exc, patience)
                self.last_error = exc
                self._close_quietly()
                now = time.monotonic()
                first_failure = now if first_failure is None else first_failure
                if self.failing or now + delay - first_failure > patience:
                    self.failing = True
                    self._abandon(batch, exc)
                    return
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            if self.last_error is not None or self.failing:
                log.info("ledger writes recovered")
                self.last_error = None
                self.failing = False
            self.written += len(batch)
            return

    def _abandon(self, batch: list[Any], exc: BaseException) -> None:
        if self._give_up is None:
            log.error("the ledger dropped %d records it could not write (%s: %s)",
                      len(batch), type(exc).__name__, exc)
            return
        try:
            self._give_up(batch, exc)
        except Exception:  # the writer thread must go on whatever happens here
            log.exception("the ledger could not set aside %d records", len(batch))

    def _close_quietly(self) -> None:
        if self._on_exit is not None:
            try:
                self._on_exit()
            except Exception:
                log.debug("closing the ledger's writer connection failed", exc_info=True)


class Checkpointer:
    """Copies the write-ahead log into the database file on a thread of its own.

    SQLite does this inside the COMMIT that pushes the log past its limit, so the writer
    used to stop for the copy and its two fsyncs: a fifth of its time under load, most of
    it waiting on the disk. Here the writer only calls `request()`; a PASSIVE checkpoint
    never blocks the writer (it copies what was committed before it began) and is skipped
    while another connection (another kernel's checkpointer) runs one. The writer's own
    connection keeps SQLite's automatic checkpoint as a backstop, at a higher limit, in
    case this thread falls behind. The thread exits after `idle_exit_s` without requests.
    """

    def __init__(self, connect: Callable[[], Any], *, name: str, idle_exit_s: float = 5.0) -> None:
        self._connect = connect
        self._name = name
        self.idle_exit_s = idle_exit_s
        self._reset()

    def _reset(self) -> None:
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.done = 0  # checkpoints run (for tests and curiosity)

    def after_fork(self) -> None:
        self._reset()

    def request(self) -> None:
        self._wake.set()
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name=self._name,
                                                    daemon=True)
                    self._thread.start()

    def stop(self, timeout: float | None = 10.0) -> None:
        _end_thread(self, timeout)

    def _run(self) -> None:
        conn = None
        try:
            while True:
                if not self._wake.wait(self.idle_exit_s) or self._stopping:
                    with self._lock:
                        if not self._wake.is_set() or self._stopping:
                            self._thread = None
                            return
                self._wake.clear()
                try:
                    if conn is None:
                        conn = self._connect()
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    self.done += 1
                except Exception as exc:  # the writer's own checkpoints still run
                    log.debug("background checkpoint failed: %s: %s", type(exc).__name__, exc)
                    if conn is not None:
                        conn.close()
                    conn = None
        finally:
            if conn is not None:
                conn.close()
