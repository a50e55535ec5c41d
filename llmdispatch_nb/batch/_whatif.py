"""What a what-if policy would cost run as batches: the served runs' costs at the batch
price, for the targets whose vendor has a batch engine (`what_if`'s
`batch_total_cost_usd`, `recommend(..., batch=True)`).

Costs from a live source are list prices (halved here); a batch sweep's are batch prices
already (kept). A target on a vendor with no batch engine keeps its live cost.
"""

from __future__ import annotations

from typing import Any

from ._vendor import BATCH_DISCOUNT

# Endpoint names (the `vendor` of `vendor:model`) that run on a batch engine by default.
BATCH_VENDORS = frozenset({"openai", "anthropic", "google", "gemini", "azure"})


def batch_total(targets: Any, costs: Any, *, already_batch: bool) -> float:
    """The total of `costs` (one per served run, numpy) had every run with a batch engine
    gone as a batch."""
    import numpy as np

    cost = np.asarray(costs, dtype=np.float64)
    if already_batch or not len(cost):
        return float(np.nansum(cost))
    batchable = np.array([str(t).split(":", 1)[0] in BATCH_VENDORS for t in targets], dtype=bool)
    return float(np.nansum(np.where(batchable, cost * BATCH_DISCOUNT, cost)))


def is_batch_source(source: Any) -> bool:
    """A batch sweep's DataFrame (its costs are batch prices already)."""
    return getattr(source, "attrs", {}).get("mode") == "batch"
