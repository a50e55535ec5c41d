"""What a `Dispatcher` reads back from its ledger and hands on to the batch engines.

`stats()` and `session_records()` read this session's attempts from the ledger,
`load_replay()` adds a replay pack whose answers are served before any vendor is asked,
and `batch()`/`batches()` hand prompts to `llmdispatch_nb.batch` (the vendors' batch
engines, at half price). None of it is on the call path, so it lives apart from the call
flow in `_dispatcher.py`, as a base class of `Dispatcher` (the public methods stay its own).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from ._types import CallRecord

if TYPE_CHECKING:  # for the type checker only: the batch functions take the Dispatcher
    from ._dispatcher import Dispatcher


class LedgerViews:
    """The `Dispatcher`'s ledger reads, replay packs and batch jobs."""

    ledger: Any
    session: str
    replay_packs: list[Any]

    def load_replay(self, path: str) -> int:
        """Serve the answers recorded in a replay pack (see `ledger.export_pack`) before
        asking any vendor; returns how many answers it holds."""
        from .ledger import load_pack

        pack = load_pack(path)
        self.replay_packs.append(pack)
        return len(pack)

    def batch(self, prompts: Any, targets: Any = None, vars: Any = None, n: int = 1,
              evaluators: Any = None, **options: Any) -> Any:
        """Submit prompts (a sweep's grid, or a list of Requests) to the vendors' batch
        engines at half price; returns a `BatchJob` at once (see `llmdispatch_nb.batch`)."""
        from .batch import submit

        return submit(cast("Dispatcher", self), prompts, targets, vars, n, evaluators, **options)

    def batches(self, *, session: str | None = None, limit: int | None = 50) -> Any:
        """The batch jobs in the ledger, of any kernel sharing it, newest first."""
        from .batch import batches

        return batches(cast("Dispatcher", self), session=session, limit=limit)

    def stats(self, *, session: str | None = None) -> dict[str, Any]:
        """Totals, successes, failures, retries, fallbacks, latency and time-to-first-token
        percentiles, tokens and cost, overall and per vendor and model, from the ledger's
        per-attempt records of this dispatcher's session (or `session`)."""
        from .ledger import summarize_stats

        out = summarize_stats(self.session_records(session))
        # Records the ledger could not store and set aside (of every session; see README).
        out["quarantined"] = getattr(self.ledger, "quarantined", 0)
        return out

    def session_records(self, session: str | None = None) -> list[CallRecord]:
        if hasattr(self.ledger, "flush"):
            self.ledger.flush()
        sess = session or self.session
        if callable(getattr(self.ledger, "records", None)):
            return list(self.ledger.records(session=sess))
        return [r for r in getattr(self.ledger, "records", []) if r.session == sess]
