"""`d.batch(...)` on Anthropic's Message Batches, Gemini's Batch Mode and Azure OpenAI's
global batch (emulated), and one sweep spread over several vendors' batch engines."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmdispatch_nb.batch import is_batch
from llmdispatch_nb.sim import SimServer
from llmdispatch_nb.sim._batch_core import engine
from tests._batch_support import batch_sim, dispatcher, fresh, ledger_file
from tests.conftest import assert_no_canary

CLAUDE = "anthropic:claude-haiku-4-5"
OPENAI = "openai:gpt-4o-mini"


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    yield from batch_sim()


@pytest.fixture(autouse=True)
def _fresh(sim: SimServer) -> None:
    fresh(sim)


def _done(job: Any) -> Any:
    return job.wait(poll_s=0.05, progress=False)


def test_anthropic_batch_end_to_end(sim: SimServer, tmp_path: Path) -> None:
    ledger = ledger_file(tmp_path)
    with dispatcher(sim, ledger) as d:
        job = d.batch("Capital of {c}?", [CLAUDE], vars={"c": ["France", "Peru", "Japan"]},
                      max_tokens=50)
        assert job.parts[0]["remote_id"].startswith("msgbatch_")
        df = _done(job).results()
        assert list(df["status"]) == ["ok"] * 3 and df["text"].str.len().min() > 0
        rows = ledger.records(tags=f"batch:{job.id}")
        assert len(rows) == 3 and all(is_batch(r) for r in rows)
        assert rows[0].route_reason.startswith("batch anthropic msgbatch_")
        assert all(r.cost_usd and r.input_tokens for r in rows)
        assert_no_canary(*(repr(r) for r in rows), df.to_csv())


def test_anthropic_per_request_errors_and_expiry(sim: SimServer) -> None:
    emu = sim.emulators["anthropic"]
    with dispatcher(sim) as d:
        emu.faults.script(None, "400")
        df = _done(d.batch(["A?", "B?", "C?"], [CLAUDE], max_tokens=10)).results()
        assert list(df["status"]) == ["ok", "error", "ok"]
        assert df.loc[1, "error_type"] == "BadRequestError"
        engine(emu).faults.script("expired")
        job = d.batch(["A?", "B?", "C?", "D?"], [CLAUDE], max_tokens=10)
        df = _done(job).results()
        assert list(df["status"]) == ["ok", "ok", "error", "error"]
        assert set(df["error_type"].dropna()) == {"BatchRequestError"}
        assert job.retry_failed() == 2
        assert (_done(job).results()["status"] == "ok").all()


def test_a_sweep_over_two_vendors_is_one_job_of_two_batches(sim: SimServer) -> None:
    with dispatcher(sim) as d:
        job = d.batch(["Q{i}?"], [OPENAI, CLAUDE], vars={"i": [1, 2, 3]}, max_tokens=20)
        assert sorted(p["kind"] for p in job.parts) == ["anthropic", "openai"]
        df = _done(job).results()
        assert len(df) == 6 and (df["status"] == "ok").all()
        assert set(df["vendor"]) == {"openai", "anthropic"}
        assert list(df["target"]) == [OPENAI, CLAUDE] * 3  # the grid's own order


GEMINI = "google:gemini-2.0-flash"


def test_gemini_batch_end_to_end_with_per_request_errors(sim: SimServer, tmp_path: Path) -> None:
    ledger = ledger_file(tmp_path)
    emu = sim.emulators["google"]
    with dispatcher(sim, ledger) as d:
        emu.faults.script(None, "400")
        job = d.batch(["A?", "B?", "C?"], [GEMINI], max_tokens=30)
        assert job.parts[0]["remote_id"].startswith("batches/")
        df = _done(job).results()
        assert list(df["status"]) == ["ok", "error", "ok"]
        assert df.loc[1, "error_type"] == "BadRequestError"
        rows = ledger.records(tags=f"batch:{job.id}")
        assert len(rows) == 3 and rows[0].route_reason.startswith("batch gemini batches/")
        assert_no_canary(*(repr(r) for r in rows), df.to_csv())


@pytest.mark.parametrize("fault", ["expired", "failed"])
def test_gemini_whole_batch_outcomes_and_retry(sim: SimServer, fault: str) -> None:
    engine(sim.emulators["google"]).faults.script(fault)
    with dispatcher(sim) as d:
        job = d.batch(["A?", "B?"], [GEMINI], max_tokens=30)
        df = _done(job).results()
        assert (df["status"] == "error").all() and set(df["error_type"]) == {"BatchRequestError"}
        assert job.retry_failed() == 2
        assert (_done(job).results()["status"] == "ok").all()


def test_cancel_keeps_nothing_running(sim: SimServer) -> None:
    for name in ("openai", "anthropic", "google"):
        engine(sim.emulators[name]).time_scale = 10.0
    with dispatcher(sim) as d:
        job = d.batch(["A?", "B?"], [OPENAI, CLAUDE, GEMINI], max_tokens=30)
        job.cancel()
        df = _done(job).results()
        assert len(df) == 6 and (df["status"] == "error").all()
        assert df["error"].str.contains("cancelled").all()


def test_azure_global_batch_end_to_end(sim: SimServer, tmp_path: Path) -> None:
    ledger = ledger_file(tmp_path)
    with dispatcher(sim, ledger) as d:
        job = d.batch(["A?", "B?", "C?"], ["azure:gpt-4o-mini"], max_tokens=30)
        assert job.parts[0]["kind"] == "azure"
        df = _done(job).results()
        assert (df["status"] == "ok").all() and set(df["vendor"]) == {"azure"}
        rows = ledger.records(tags=f"batch:{job.id}")
        assert len(rows) == 3 and all(r.cost_usd for r in rows)
        assert rows[0].route_reason.startswith("batch azure batch_")
        assert len(engine(sim.emulators["azure"]).items) == 1
        assert not engine(sim.emulators["openai"]).items
        assert_no_canary(*(repr(r) for r in rows), df.to_csv())


@pytest.mark.parametrize("target", [OPENAI, CLAUDE, GEMINI])
def test_a_results_body_past_the_one_answer_cap_is_still_read(sim: SimServer, target: str,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # One answer may be at most ~2 KB here; the batch's results body holds eight of them.
    monkeypatch.setenv("LLMDISPATCH_MAX_BODY_MB", "0.002")
    with dispatcher(sim) as d:
        job = d.batch([f"Question {i}, at some length please." for i in range(8)], [target],
                      max_tokens=200)
        df = _done(job).results()
        assert (df["status"] == "ok").all() and len(df) == 8
