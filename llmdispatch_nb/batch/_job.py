"""`BatchJob`: the handle on work submitted to the vendors' batch engines.

    job = d.batch(["Capital of {c}?"], ["openai:gpt-4o-mini", "claude"], vars={"c": [...]})
    job.status()        # per vendor batch: its status and counts (one poll)
    job.wait()          # poll until every batch ends, then collect; Ctrl-C stops waiting only
    job.results()       # the DataFrame a live sweep gives (evaluators applied)
    job.cancel()        # ask the vendors to stop; work already done is still collected
    job.retry_failed()  # send expired, cancelled and failed requests again, as new batches

The job lives in the ledger (`ledger/_batches.py`) from the moment it is submitted, so
`d.batches()` in another kernel finds it, and `wait()`/`results()` there collect what is
left. A handle holds nothing the ledger does not, except the evaluators it was given
and the budget reservation of the process that submitted it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import httpx

from .._transport import map_httpx_error
from ..vendors import Endpoint, adapter_for
from ._collect import call_id, failed_cids, latest, recorded, records_for
from ._submit import PENDING, plan_parts, submit_parts
from ._vendor import ENDED, RUNNING, batch_vendor

if TYPE_CHECKING:
    import pandas as pd

    from .._dispatcher import Dispatcher
    from ..ledger._batches import BatchStore, StoredJob


def sender(d: Dispatcher) -> Any:
    """`send_for(endpoint)`: the dispatcher's pooled client, errors mapped the live way."""

    def send_for(ep: Endpoint) -> Any:
        adapter = adapter_for(ep.kind)

        async def send(req: httpx.Request) -> httpx.Response:
            client = d._client_for_loop()
            try:
                resp = await client.send(req)
                await resp.aread()
            except httpx.HTTPError as exc:
                raise map_httpx_error(exc, ep.name) from None
            if resp.status_code >= 400:
                raise adapter.map_error(resp, ep)
            return resp

        return send

    return send_for


class BatchJob:
    """One submission to the batch engines (several vendor batches). See the module doc."""

    def __init__(self, d: Dispatcher, store: BatchStore, stored: StoredJob, *,
                 evaluators: Any = None, reservation: Any = None) -> None:
        self.dispatcher = d
        self.store = store
        self.id = stored.id
        self.name = stored.name
        self.session = stored.session
        self.created = stored.created
        self.parts: list[dict[str, Any]] = stored.parts
        self.state = stored.state
        self.updated = stored.updated
        self.evaluators = evaluators
        self._reservation = reservation
        self._items: list[dict[str, Any]] | None = None

    def __repr__(self) -> str:
        return (f"BatchJob({self.id!r}, {self.state}, {self.total} requests in "
                f"{len(self.parts)} vendor batches)")

    @property
    def items(self) -> list[dict[str, Any]]:
        if self._items is None:
            self._items = self.store.items(self.id)
        return self._items

    @property
    def total(self) -> int:
        return sum(len(p["custom_ids"]) for p in self.parts)

    def _save(self) -> None:
        ended = all(p["state"] == ENDED for p in self.parts)
        collected = ended and all(p.get("collected") for p in self.parts)
        self.state = "collected" if collected else "ended" if ended else "running"
        self.store.update(self.id, state=self.state, parts=self.parts)
        self.updated = time.time()

    def _reload(self) -> None:
        """Take another kernel's progress (it may have polled or collected since)."""
        fresh = self.store.get(self.id)
        if fresh is not None:
            self.parts, self.state, self.updated = fresh.parts, fresh.state, fresh.updated

    # -- polling ------------------------------------------------------------------------

    async def _refresh(self) -> None:
        send_for = sender(self.dispatcher)
        changed = False
        for part in self.parts:
            if part["state"] != RUNNING:
                continue
            ep = self.dispatcher.endpoints[part["endpoint"]]
            vendor = batch_vendor(part["kind"])
            resp = await send_for(ep)(vendor.status_request(ep, part))
            part.update(vendor.read_status(part, resp.json()))
            if part["state"] == ENDED and not part.get("ended_at"):
                part["ended_at"] = time.time()
            changed = True
        if changed:
            self._save()

    def status(self) -> dict[str, Any]:
        """One poll of every running vendor batch: the job's state and each batch's."""
        self._reload()
        self.dispatcher.run(self._refresh())
        return {"job": self.id, "state": self.state, "requests": self.total,
                "batches": [{"vendor": p["endpoint"], "model": p["model"],
                             "batch_id": p.get("remote_id"), "status": p["status"],
                             "requests": len(p["custom_ids"]), "counts": p.get("counts") or {},
                             "collected": bool(p.get("collected")), "error": p.get("error")}
                            for p in self.parts]}

    @property
    def done(self) -> bool:
        return all(p["state"] == ENDED for p in self.parts)

    def wait(self, *, poll_s: float = 2.0, timeout_s: float | None = None,
             progress: Any = True, resubmit_after_s: float = 600.0) -> BatchJob:
        """Poll until every vendor batch ends, then collect its answers into the ledger.

        A progress bar in a notebook, a line now and then in a script. Interrupting
        (Ctrl-C, the stop button) stops waiting only: the batches run on, and `wait()` here
        or in another kernel (`d.batches()`) picks up where this left off. A part that a
        kernel died before submitting (still pending, the job untouched for
        `resubmit_after_s`) is submitted here."""
        from ..experiments._progress import make_progress

        bar = make_progress(progress, self.total, f"batch {self.id}")
        end = None if timeout_s is None else time.monotonic() + timeout_s
        try:
            while True:
                self.status()
                self._submit_abandoned(resubmit_after_s)
                bar.done = sum(len(p["custom_ids"]) if p["state"] == ENDED else
                               int((p.get("counts") or {}).get("completed") or 0)
                               + int((p.get("counts") or {}).get("failed") or 0)
                               if p["state"] == RUNNING else 0 for p in self.parts)
                bar.show()
                if self.done or (end is not None and time.monotonic() >= end):
                    break
                time.sleep(poll_s)
        except KeyboardInterrupt:
            bar.close()
            print(f"stopped waiting; the batches run on. Pick up later with "
                  f"d.batches()['{self.id}'].wait()")
            return self
        bar.close()
        if self.done:
            self.collect()
        return self

    def _submit_abandoned(self, after_s: float) -> None:
        """Submit the parts left pending by a kernel that died while submitting (the job
        not updated for `after_s`: a live submitter stores it after every part)."""
        if self._reservation is not None or not any(p["state"] == PENDING for p in self.parts):
            return  # this handle is the submitter, or nothing is pending
        if time.time() - self.updated < after_s:
            return
        items = {it["cid"]: it for it in self.items}
        self.dispatcher.run(submit_parts(self.dispatcher, self.id, self.parts, items,
                                         sender(self.dispatcher), self._save))

    # -- collecting ---------------------------------------------------------------------

    def collect(self) -> int:
        """Write the answers of every ended, uncollected vendor batch to the ledger (each
        once, whoever collected before); returns how many attempts were written now."""
        self._reload()
        return self.dispatcher.run(self._collect())

    async def _collect(self) -> int:
        d = self.dispatcher
        uncollected = any(p["state"] == ENDED and not p.get("collected") for p in self.parts)
        if not uncollected and (self._reservation is None or self.state != "collected"):
            return 0  # nothing to collect or settle: no need to read the job's rows back
        items = {it["cid"]: it for it in self.items}
        send_for = sender(d)
        have = recorded(d, self.id)
        cost = sum(r.cost_usd or 0.0 for r in have.values())
        written = 0
        for part in self.parts:
            if part["state"] != ENDED or part.get("collected"):
                continue
            ep: Endpoint | None = d.endpoints.get(part["endpoint"])
            outcomes: Mapping[str, Any] = {}
            if ep is not None and part.get("remote_id"):
                outcomes = await batch_vendor(part["kind"]).results(send_for(ep), ep, part)
            for record in records_for(d, self.id, self.session, part, outcomes, items, have):
                d.record(record)
                cost += record.cost_usd or 0.0
                written += 1
            if hasattr(d.ledger, "flush"):
                d.ledger.flush()  # the rows are stored before the part is marked collected
            part["collected"] = True
            self._save()
        if self.state == "collected" and self._reservation is not None:
            self._reservation.settle(cost)
            self._reservation = None
        return written

    def spent(self) -> float:
        """What the job's collected answers cost (at the batch price)."""
        return sum(r.cost_usd or 0.0 for r in recorded(self.dispatcher, self.id).values())

    # -- acting on the batches -----------------------------------------------------------

    def cancel(self) -> dict[str, Any]:
        """Ask every running vendor batch to stop. Answers already made are still
        collected (the vendors keep them); the rest become 'cancelled' rows."""
        self._reload()
        send_for = sender(self.dispatcher)

        async def go() -> None:
            for part in self.parts:
                if part["state"] == RUNNING:
                    ep = self.dispatcher.endpoints[part["endpoint"]]
                    vendor = batch_vendor(part["kind"])
                    resp = await send_for(ep)(vendor.cancel_request(ep, part))
                    part.update(vendor.read_status(part, resp.json()))
            self._save()

        self.dispatcher.run(go())
        return self.status()

    def retry_failed(self, *, max_per_batch: int | None = None) -> int:
        """Send the requests whose newest attempt failed (expired, cancelled, errored) again
        as new vendor batches of this job; returns how many were sent. Collect first."""
        self.collect()
        have = recorded(self.dispatcher, self.id)
        again = set(failed_cids(self.id, self.items, have))
        if not again:
            return 0
        rounds = {cid: max((a for (c, a) in have if c == call_id(self.id, cid)), default=0)
                  for cid in again}
        new_parts = []
        for round_ in sorted(set(rounds.values())):
            chosen = [it for it in self.items if rounds.get(it["cid"]) == round_]
            new_parts += plan_parts(chosen, max_per_batch, round_)
        self.parts.extend(new_parts)
        self._save()
        items = {it["cid"]: it for it in self.items}
        self.dispatcher.run(submit_parts(self.dispatcher, self.id, self.parts, items,
                                         sender(self.dispatcher), self._save))
        return len(again)

    # -- the DataFrame ------------------------------------------------------------------

    def results(self, evaluators: Any = None, *, wait: bool = False) -> pd.DataFrame:
        """One row per grid cell, as `sweep()` gives (status, text, tokens, cost at the
        batch price, latency = turnaround, one column per evaluator, score). Collects what
        has ended first; cells whose batch still runs are 'pending' rows."""
        from ._frame import job_frame

        if wait:
            self.wait()
        else:
            self.collect()
        return job_frame(self, evaluators if evaluators is not None else self.evaluators)

    def costs(self) -> pd.DataFrame:
        """Per vendor and model: what the answers cost as a batch, what the same tokens
        cost live (list price), and the difference."""
        from ._frame import cost_table

        self.collect()
        return cost_table(self)

    def newest_records(self) -> dict[str, Any]:
        return latest(recorded(self.dispatcher, self.id))

