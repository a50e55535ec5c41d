"""Big sweeps on the vendors' batch engines: half the price, and they outlive the kernel.

    job = d.batch(prompts, targets, vars=..., n=..., evaluators=...)   # returns at once
    job.wait(); df = job.results()          # the DataFrame a live sweep gives
    d.batches()                             # jobs in the ledger, from any kernel

OpenAI's Batch API, Anthropic's Message Batches, Gemini's Batch Mode and Azure OpenAI's
global batch. Work is split per vendor and model and by each engine's limits; the job
is stored in the ledger when submitted; every answer becomes one ledger attempt at the
batch price, with the batch's turnaround as its latency (kept out of live latency stats).
"""

from __future__ import annotations

from ._api import batches, submit
from ._collect import is_batch
from ._job import BatchJob
from ._vendor import BATCH_DISCOUNT, BatchRequestError

__all__ = ["BATCH_DISCOUNT", "BatchJob", "BatchRequestError", "batches", "is_batch", "submit"]
