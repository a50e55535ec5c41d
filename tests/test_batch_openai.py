"""`d.batch(...)` on OpenAI's Batch API (emulated): a job returned at once, stored in the
ledger, collected exactly once as ledger attempts at the batch price, resumable from a
new process killed or not, per-request failures as typed errors, limits, the budget."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmdispatch_nb.batch import BATCH_DISCOUNT, is_batch
from llmdispatch_nb.errors import BudgetExceededError
from llmdispatch_nb.experiments import contains
from llmdispatch_nb.ledger import Ledger, summarize_stats
from llmdispatch_nb.sim import SimServer
from llmdispatch_nb.sim._batch_core import engine
from tests._batch_support import batch_sim, dispatcher, fresh, ledger_file
from tests.conftest import assert_no_canary

OPENAI = "openai:gpt-4o-mini"


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    yield from batch_sim()


@pytest.fixture(autouse=True)
def _fresh(sim: SimServer) -> None:
    fresh(sim)


def test_a_sweep_grid_runs_as_a_batch_and_lands_in_the_ledger(sim: SimServer, tmp_path: Path) -> None:
    ledger = ledger_file(tmp_path)
    with dispatcher(sim, ledger) as d:
        job = d.batch("Capital of {country}?", [OPENAI], vars={"country": ["France", "Peru"]},
                      n=2, max_tokens=60, evaluators=[contains("Paris")])
        assert job.total == 4 and job.state == "running"
        stored = d.batches()[job.id]
        assert stored.parts[0]["remote_id"] == job.parts[0]["remote_id"]
        df = job.wait(poll_s=0.05, progress=False).results()
        assert list(df["status"]) == ["ok"] * 4 and df["text"].str.len().min() > 0
        assert "contains" in df.columns[-3:].tolist() or "score" in df.columns
        assert df.attrs["batch_job"] == job.id and df.attrs["sweep_id"]
        records = ledger.records(tags=f"batch:{job.id}")
        assert len(records) == 4 and all(is_batch(r) for r in records)
        r = records[0]
        assert r.route_reason == f"batch openai {job.parts[0]['remote_id']}"
        assert "batch 50%" in (r.price_source or "")
        live = d._price(d.endpoints["openai"], "gpt-4o-mini", _usage(r)).usd
        assert live is not None and r.cost_usd == pytest.approx(live * BATCH_DISCOUNT)
        p = job.parts[0]
        assert r.latency_s == pytest.approx(max(0.0, p["ended_at"] - p["created_at"]))
        assert {"sweep", "batch"} <= set(r.tags)
        assert_no_canary(*(repr(x) for x in records), df.to_csv(), repr(job.status()))
        # Collected once: a second look writes nothing.
        assert job.collect() == 0 and ledger.count() == 4


def _usage(r: object) -> object:
    from llmdispatch_nb._types import Usage

    return Usage(input_tokens=r.input_tokens or 0, output_tokens=r.output_tokens or 0)  # type: ignore[attr-defined]


def test_stats_keep_batch_turnaround_out_of_live_latency(sim: SimServer, tmp_path: Path) -> None:
    from llmdispatch_nb.analysis import summary

    eng = engine(sim.emulators["openai"])
    eng.time_scale = 100.0
    with dispatcher(sim, ledger_file(tmp_path)) as d:
        d.send("Hello there", OPENAI, max_tokens=20)
        job = d.batch(["Q1", "Q2"], [OPENAI], max_tokens=20)
        for b in eng.items.values():  # it was submitted an hour ago, and has just ended
            b.created -= 3600
            b.due = b.created + 3600
        job.wait(poll_s=0.05, progress=False)
        records = d.session_records()
        assert sorted(round(r.latency_s or 0) for r in records if is_batch(r)) == [3600, 3600]
        live = max(r.latency_s or 0 for r in records if not is_batch(r))
        stats = summarize_stats(records)
        assert stats["successes"] == 3 and stats["latency_s"]["n"] == 1
        assert stats["latency_s"]["p99"] == pytest.approx(live)
        table = summary(d.ledger.dataframe()).frame
        assert table["latency_p95_s"].iloc[0] == pytest.approx(live)
        assert table["successes"].iloc[0] == 3


def test_a_grid_larger_than_one_batch_is_split(sim: SimServer) -> None:
    with dispatcher(sim) as d:
        job = d.batch([f"Question {i}" for i in range(7)], [OPENAI], max_tokens=10,
                      max_per_batch=3)
        assert [len(p["custom_ids"]) for p in job.parts] == [3, 3, 1]
        assert len({p["remote_id"] for p in job.parts}) == 3
        df = job.wait(poll_s=0.05, progress=False).results()
        assert (df["status"] == "ok").all() and len(df) == 7
        assert len(engine(sim.emulators["openai"]).items) == 3


def test_a_grid_over_the_enqueued_token_limit_is_split(sim: SimServer) -> None:
    with dispatcher(sim) as d:
        prompt = "word " * 100  # about 125 prompt tokens each
        job = d.batch([prompt + str(i) for i in range(6)], [OPENAI], max_tokens=10,
                      max_tokens_per_batch=300)
        assert [len(p["custom_ids"]) for p in job.parts] == [2, 2, 2]
        assert (job.wait(poll_s=0.05, progress=False).results()["status"] == "ok").all()


def test_per_request_failures_are_typed_errors_and_retry_failed_resends(sim: SimServer) -> None:
    emu = sim.emulators["openai"]
    with dispatcher(sim) as d:
        emu.faults.script(None, "400", None)  # the second request of the batch is refused
        job = d.batch(["A?", "B?", "C?"], [OPENAI], max_tokens=10)
        df = job.wait(poll_s=0.05, progress=False).results()
        assert list(df["status"]) == ["ok", "error", "ok"]
        assert df.loc[1, "error_type"] == "BadRequestError"
        assert job.retry_failed() == 1
        df = job.wait(poll_s=0.05, progress=False).results()
        assert list(df["status"]) == ["ok"] * 3 and df.loc[1, "attempts"] == 2
        assert job.retry_failed() == 0


@pytest.mark.parametrize("fault", ["expired", "failed"])
def test_expired_and_failed_batches_become_error_rows(sim: SimServer, fault: str) -> None:
    engine(sim.emulators["openai"]).faults.script(fault)
    with dispatcher(sim) as d:
        job = d.batch(["A?", "B?", "C?", "D?"], [OPENAI], max_tokens=10)
        df = job.wait(poll_s=0.05, progress=False).results()
        bad = df[df["status"] == "error"]
        assert len(bad) == (2 if fault == "expired" else 4)
        assert set(bad["error_type"]) == {"BatchRequestError"}
        assert bad["error"].str.contains("retry_failed").all()
        assert job.retry_failed() == len(bad)
        df = job.wait(poll_s=0.05, progress=False).results()
        assert (df["status"] == "ok").all()


def test_a_budget_refuses_a_batch_it_cannot_hold(sim: SimServer) -> None:
    with dispatcher(sim, budget=0.0001) as d:
        with pytest.raises(BudgetExceededError, match="batch of 50 requests"):
            d.batch([f"Q{i} " * 50 for i in range(50)], [OPENAI], max_tokens=1000)
        assert not engine(sim.emulators["openai"]).items and not d.batches()
        assert d.budget.reserved == 0


def test_the_budget_holds_the_worst_case_until_collection(sim: SimServer) -> None:
    engine(sim.emulators["openai"]).time_scale = 100.0  # still running while we look
    with dispatcher(sim, budget=10.0) as d:
        job = d.batch(["A?", "B?"], [OPENAI], max_tokens=100)
        held = d.budget.reserved
        assert held > 0
        engine(sim.emulators["openai"]).time_scale = 0.0
        for b in engine(sim.emulators["openai"]).items.values():
            b.due = b.created
        job.wait(poll_s=0.05, progress=False)
        assert d.budget.reserved == 0 and 0 < d.budget.spent <= held
        assert d.budget.spent == pytest.approx(job.spent())


_CHILD = textwrap.dedent("""
    import json, sys, time
    from llmdispatch_nb import Dispatcher, Endpoint, Secret
    from llmdispatch_nb.ledger import Ledger
    base, db, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    ep = Endpoint("openai", "openai", base, key=Secret("sk-child"), simulated=True)
    d = Dispatcher([ep], dotenv=False, ledger=Ledger(db))
    if mode == "submit":
        job = d.batch([f"Question {i}" for i in range(6)], ["openai:gpt-4o-mini"],
                      max_tokens=10, max_per_batch=4)
        print(json.dumps({"job": job.id}), flush=True)
        job.wait(poll_s=0.05, progress=False)   # killed while in here
        print("never", flush=True)
    else:
        job = d.batches()[mode]
        job.wait(poll_s=0.05, progress=False)
        df = job.results()
        print(json.dumps({"ok": int((df["status"] == "ok").sum())}), flush=True)
    d.close()
""")


def _child(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.Popen([sys.executable, "-c", _CHILD, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def test_a_kernel_killed_mid_wait_is_resumed_by_another_exactly_once(sim: SimServer,
                                                                    tmp_path: Path) -> None:
    eng = engine(sim.emulators["openai"])
    eng.time_scale = 1000.0  # the batches run on well after the first process dies
    db = str(tmp_path / "ledger.db")
    first = _child(sim.base_url("openai"), db, "submit")
    assert first.stdout is not None
    line = first.stdout.readline()
    job_id = json.loads(line)["job"]
    time.sleep(0.3)  # it is polling now
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=30)  # reaps it and closes its pipes
    assert first.returncode == -signal.SIGKILL
    assert len(eng.items) == 2  # both vendor batches were submitted before the kill
    for b in eng.items.values():  # the window ends
        b.due = b.created
    second = _child(sim.base_url("openai"), db, job_id)
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err[-2000:]
    assert json.loads(out.strip().splitlines()[-1]) == {"ok": 6}
    # A third process collecting again (even with the parts marked uncollected, as if the
    # second had died between writing rows and marking) writes nothing twice.
    with Ledger(db) as ledger:
        from llmdispatch_nb.ledger._batches import BatchStore

        store = BatchStore(ledger)
        stored = store.get(job_id)
        assert stored is not None and stored.state == "collected"
        store.update(job_id, state="ended", parts=[{**p, "collected": False} for p in stored.parts])
    third = _child(sim.base_url("openai"), db, job_id)
    out, err = third.communicate(timeout=120)
    assert third.returncode == 0, err[-2000:]
    with Ledger(db) as ledger:
        rows = ledger.records(tags=f"batch:{job_id}")
        assert len(rows) == 6 and len({r.call_id for r in rows}) == 6


def test_a_job_stored_but_never_submitted_is_submitted_by_the_next_kernel(sim: SimServer) -> None:
    from llmdispatch_nb.batch._api import store_of
    from llmdispatch_nb.batch._submit import plan_parts, request_items

    with dispatcher(sim) as d:
        # What a kernel killed between storing the job and submitting it leaves behind.
        items = request_items(d, ["A?", "B?"], [OPENAI], (), {"max_tokens": 10})
        store_of(d).add("bj_orphan", session=d.session, name=None, state="running",
                        items=items, parts=plan_parts(items))
        job = d.batches()["bj_orphan"]
        assert job.parts[0]["state"] == "pending" and not engine(sim.emulators["openai"]).items
        df = job.wait(poll_s=0.05, progress=False, resubmit_after_s=0).results()
        assert (df["status"] == "ok").all() and len(engine(sim.emulators["openai"]).items) == 1


def test_interrupting_the_wait_leaves_the_batches_running(sim: SimServer,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from llmdispatch_nb.experiments._progress import Progress

    class StopButton(Progress):
        pressed = False

        def show(self) -> None:  # the user presses stop (once) while the bar is drawn
            if not self.pressed:
                self.pressed = True
                raise KeyboardInterrupt

    eng = engine(sim.emulators["openai"])
    eng.time_scale = 100.0
    with dispatcher(sim) as d:
        job = d.batch(["A?", "B?"], [OPENAI], max_tokens=10)
        assert job.wait(poll_s=0.05, progress=StopButton(2, "x")) is job
        assert "stopped waiting; the batches run on" in capsys.readouterr().out
        assert job.state == "running"
        assert all(b.cancelled_at is None for b in eng.items.values())
        for b in eng.items.values():
            b.due = b.created
        assert (job.wait(poll_s=0.05, progress=False).results()["status"] == "ok").all()


def test_a_second_batch_cannot_spend_what_the_first_holds(sim: SimServer) -> None:
    engine(sim.emulators["openai"]).time_scale = 100.0  # the first is still running
    with dispatcher(sim) as d:
        prompts = [f"Q{i}" for i in range(10)]
        d.batch(prompts, [OPENAI], max_tokens=500)
        held = d.budget.reserved
        d.budget.set_limit(held * 1.5)
        with pytest.raises(BudgetExceededError, match="reserved"):
            d.batch(prompts, [OPENAI], max_tokens=500)
        assert len(engine(sim.emulators["openai"]).items) == 1 and d.budget.reserved == held
