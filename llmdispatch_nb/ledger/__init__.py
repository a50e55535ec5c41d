"""The call ledger: every attempt as a `CallRecord`.

(Placeholder until the ledger issue lands: an in-memory list the dispatcher writes to.)
"""

from __future__ import annotations

import threading

from .._types import CallRecord


class MemoryLedger:
    def __init__(self) -> None:
        self.records: list[CallRecord] = []
        self._lock = threading.Lock()

    def write(self, record: CallRecord) -> None:
        with self._lock:
            self.records.append(record)

    def flush(self) -> None:
        pass


def default_ledger() -> MemoryLedger:
    return MemoryLedger()
