"""What `Dispatcher.batch` and `Dispatcher.batches` do (the dispatcher only delegates).

`submit` builds the items, reserves the worst case from the budget, stores the job, then
submits each part, storing the job again after each is accepted (so a kernel that dies
mid-submission leaves a job whose accepted batches another kernel still collects).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ._job import BatchJob, sender
from ._submit import (
    check_grid_args,
    grid_items,
    new_job_id,
    plan_parts,
    request_items,
    reserve,
    submit_parts,
)

if TYPE_CHECKING:
    from .._dispatcher import Dispatcher
    from ..ledger._batches import BatchStore


def store_of(d: Dispatcher) -> BatchStore:
    """The dispatcher's batch job store (kept on the dispatcher, made on first use)."""
    from ..ledger._batches import BatchStore

    found = d.__dict__.get("_batch_store")
    if found is None:
        found = d.__dict__["_batch_store"] = BatchStore(d.ledger)
    return found


def submit(d: Dispatcher, prompts: Any, targets: Any = None, vars: Any = None, n: int = 1,
           evaluators: Any = None, *, system: str | None = None, max_tokens: int | None = None,
           temperature: float | None = None, tags: Sequence[str] = (),
           max_cost: float | None = None, name: str | None = None,
           max_per_batch: int | None = None,
           max_tokens_per_batch: int | None = None) -> BatchJob:
    """`Dispatcher.batch`: submit, return the `BatchJob` at once.

    `prompts`, `targets`, `vars`, `n`, `evaluators`, `system`, `max_tokens`,
    `temperature`, `tags`, `max_cost` and `name` are `sweep()`'s (the same grid and ids);
    a list of `Request`s (or of message lists) is sent as given, once per target.
    `max_per_batch` and `max_tokens_per_batch` cut the work into more vendor batches than
    the engines' own limits would (request count, input size), e.g. for an account's
    enqueued-token limit."""
    check_grid_args(prompts)
    tags = (tags,) if isinstance(tags, str) else tuple(tags)
    first = prompts[0] if isinstance(prompts, list | tuple) and prompts else None
    if first is not None and not isinstance(first, str) and vars is None:
        sid = name
        items = request_items(d, prompts, targets, tags, {
            k: v for k, v in {"system": system, "max_tokens": max_tokens,
                              "temperature": temperature}.items() if v is not None})
    else:
        sid, items = grid_items(d, prompts, targets, vars, n, system, max_tokens, temperature,
                                tags, name)
    reservation = reserve(d, items, tags, max_cost)
    job_id = new_job_id()
    parts = plan_parts(items, max_per_batch, 0, max_tokens_per_batch)
    store = store_of(d)
    try:
        store.add(job_id, session=d.session, name=sid, state="running", items=items, parts=parts)
    except BaseException:
        reservation.release()
        raise
    stored = store.get(job_id)
    assert stored is not None
    job = BatchJob(d, store, stored, evaluators=evaluators, reservation=reservation)
    job._items = items
    d.run(submit_parts(d, job_id, job.parts, {it["cid"]: it for it in items}, sender(d),
                       job._save))
    return job


class JobList(list[BatchJob]):
    """`d.batches()`: newest first; `jobs["bj_..."]` picks one by id."""

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            for job in self:
                if job.id == key or job.name == key:
                    return job
            raise KeyError(f"no batch job {key!r} in this ledger")
        return super().__getitem__(key)


def batches(d: Dispatcher, *, session: str | None = None, limit: int | None = 50) -> JobList:
    """The batch jobs the ledger holds (of every kernel sharing it), newest first."""
    store = store_of(d)
    return JobList(BatchJob(d, store, s) for s in store.jobs(session=session, limit=limit))
