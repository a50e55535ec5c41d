"""The call ledger: every attempt as a `CallRecord` in SQLite, a response cache, replay packs.

    from llmdispatch_nb.ledger import Ledger, ResponseCache, export_pack, load_pack
    ledger = Ledger()                        # $LLMDISPATCH_HOME/ledger.db, WAL, mode 0600
    ledger.records(session="abc", tags="demo", limit=20)
    summarize_stats(ledger.records())        # totals, percentiles, per vendor and model
    ledger.dataframe()                       # typed pandas frame (llmdispatch_nb.analysis)
    PostgresLedger("postgresql://...")       # a team's ledger (or LLMDISPATCH_LEDGER=...)

Nothing here imports pandas or numpy until a frame is asked for.
"""

from __future__ import annotations

import threading

from .._types import CallRecord
from ._cache import CachedAnswer, ResponseCache, cacheable, key_for
from ._errors import LedgerError
from ._packs import ReplayPack, export_pack, load_pack
from ._postgres import PostgresLedger, configured_ledger, open_ledger
from ._rows import TEXT_MODES, TextMode
from ._stats import percentile, summarize_stats
from ._store import Ledger, default_ledger, default_path, ledger_home

__all__ = [
    "TEXT_MODES",
    "CachedAnswer",
    "Ledger",
    "LedgerError",
    "MemoryLedger",
    "PostgresLedger",
    "ReplayPack",
    "ResponseCache",
    "TextMode",
    "cacheable",
    "configured_ledger",
    "default_ledger",
    "default_path",
    "export_pack",
    "key_for",
    "ledger_home",
    "load_pack",
    "open_ledger",
    "percentile",
    "summarize_stats",
]


class MemoryLedger:
    """A plain list of records, nothing more: for tests that inspect `records` directly.

    `Ledger.memory()` is the in-memory ledger with the full query API.
    """

    def __init__(self) -> None:
        self.records: list[CallRecord] = []
        self._lock = threading.Lock()

    def write(self, record: CallRecord) -> None:
        with self._lock:
            self.records.append(record)

    def flush(self, timeout: float | None = None) -> None:
        pass
