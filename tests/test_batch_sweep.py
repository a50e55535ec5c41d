"""`sweep(..., mode="batch")` (the live sweep's DataFrame, from the batch engines) and
`%llm batch` in a real InteractiveShell against the emulators."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from llmdispatch_nb import Dispatcher
from llmdispatch_nb.batch import BatchJob
from llmdispatch_nb.batch._whatif import batch_total
from llmdispatch_nb.errors import ConfigurationError
from llmdispatch_nb.experiments import contains, recommend, sweep, what_if
from llmdispatch_nb.sim import SimServer
from llmdispatch_nb.sim._batch_core import engine
from tests._batch_support import batch_sim, dispatcher, fresh

from .test_magic_support import Notebook, one_error_line

pytest_plugins = ("tests.test_magic_support",)  # its fixtures: shell, nb, demo, d

OPENAI = "openai:gpt-4o-mini"
CLAUDE = "anthropic:claude-haiku-4-5"


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    yield from batch_sim()


def test_a_batch_sweep_has_the_live_sweeps_columns(sim: SimServer) -> None:
    fresh(sim)
    with dispatcher(sim) as d:
        args = (["Capital of {c}?"], [OPENAI, CLAUDE])
        kw = {"vars": {"c": ["France", "Peru"]}, "evaluators": [contains("a")],
              "dispatcher": d, "max_tokens": 30, "progress": False, "temperature": 0.0}
        live = sweep(*args, **kw)  # type: ignore[arg-type]
        batch = sweep(*args, **kw, mode="batch", name="batch-run")  # type: ignore[arg-type]
        assert list(batch.columns) == list(live.columns)
        assert list(batch["cell_id"]) == list(live["cell_id"])  # the same grid, the same ids
        assert (batch["status"] == "ok").all() and batch["contains:a"].notna().all()
        assert batch.attrs["mode"] == "batch" and d.batches()["batch-run"].state == "collected"
        # Half the price of the same tokens live.
        per_token_live = live["cost_usd"].sum() / (live["input_tokens"] + live["output_tokens"]).sum()
        per_token_batch = batch["cost_usd"].sum() / (batch["input_tokens"] + batch["output_tokens"]).sum()
        assert 0.3 < per_token_batch / per_token_live < 0.7
        with pytest.raises(ConfigurationError, match="mode must be one of"):
            sweep("x", [OPENAI], dispatcher=d, mode="bulk")
        # what_if and recommend: the same picks at the batch price.
        policies = ["cheapest", f"fixed:{CLAUDE}"]
        table = what_if(live, policies)
        assert table["batch_total_cost_usd"].to_list() == pytest.approx(
            (table["total_cost_usd"] * 0.5).to_list())
        assert what_if(batch, policies)["batch_total_cost_usd"].to_list() == pytest.approx(
            what_if(batch, policies)["total_cost_usd"].to_list())  # already batch prices
        rec = recommend(live, policies, batch=True)
        assert "as batches" in rec.reason and rec.policy == "cheapest"
        with pytest.raises(ConfigurationError, match="batch answers within hours"):
            recommend(live, policies, batch=True, max_latency_s=2.0)


def test_only_vendors_with_a_batch_engine_are_halved() -> None:
    assert batch_total(["openai:gpt-4o", "ollama:llama3.2", "google:gemini-2.5-flash"],
                       [1.0, 1.0, 2.0], already_batch=False) == pytest.approx(2.5)
    assert batch_total(["openai:gpt-4o"], [1.0], already_batch=True) == pytest.approx(1.0)


@pytest.fixture
def batch_d(d: Dispatcher) -> Iterator[Dispatcher]:
    for e in d.sim.emulators.values():
        engine(e).time_scale = 0.0
        engine(e).clear()
    yield d


def test_llm_batch_submit_status_wait_results(batch_d: Dispatcher, nb: Notebook) -> None:
    nb.ns["questions"] = ["What is 2+2?", "Name a colour."]
    run = nb.run("%llm batch submit questions gpt claude -m 30")
    assert run.success, run.stdout + run.stderr
    assert "submitted job bj_" in run.stdout and "4 requests in 2 vendor batches" in run.stdout
    job = nb.ns["_batch"]
    assert isinstance(job, BatchJob)
    listed = nb.run("%llm batch")
    assert listed.success and job.id in listed.published[-1].data["text/plain"]
    status = nb.run(f"%llm batch status {job.id}")
    assert status.success and "vendor batches" in status.stdout
    assert "claude-haiku-4-5" in status.published[-1].data["text/plain"]
    waited = nb.run("%llm batch wait")
    assert waited.success and "collected" in waited.stdout, waited.stdout + waited.stderr
    got = nb.run("%llm batch results -o df")
    assert got.success and len(nb.ns["df"]) == 4 and (nb.ns["df"]["status"] == "ok").all()


def test_llm_batch_errors_are_one_line(batch_d: Dispatcher, nb: Notebook) -> None:
    assert "usage: %llm batch" in one_error_line(nb.run("%llm batch frobnicate"))
    assert "no variable 'nosuch'" in one_error_line(nb.run("%llm batch submit nosuch gpt"))
    assert "no batch job 'bj_nope'" in one_error_line(nb.run("%llm batch status bj_nope"))
