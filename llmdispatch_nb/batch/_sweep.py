"""`sweep(..., mode="batch")`: the same grid and DataFrame as a live sweep, run on the
vendors' batch engines (submitted as one job, waited for, collected from the ledger).

A wait interrupted (or a kernel lost) leaves the job running: `d.batches()` finds it,
and its `results()` gives the frame this call would have returned.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError

if TYPE_CHECKING:
    import pandas as pd

    from .._dispatcher import Dispatcher

MODES = ("live", "batch")


def batch_sweep(d: Dispatcher, mode: str, prompts: Any, targets: Any, vars: Any, n: int,
                evaluators: Any, *, system: str | None, max_tokens: int | None,
                temperature: float | None, tags: Sequence[str], progress: Any,
                max_cost: float | None, name: str | None,
                structured: tuple[Any, Sequence[Any], str | None]) -> pd.DataFrame:
    if mode not in MODES:
        raise ConfigurationError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    schema, tools, tool_choice = structured
    if schema is not None or tools or tool_choice is not None:
        raise ConfigurationError("mode='batch' sends plain prompts; run schema= and tools= "
                                 "sweeps live (mode='live')")
    job = d.batch(prompts, targets, vars, n, evaluators, system=system, max_tokens=max_tokens,
                  temperature=temperature, tags=tags, max_cost=max_cost, name=name)
    job.wait(progress=progress)
    return job.results()
