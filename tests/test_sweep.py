"""sweep() over real loopback emulators: grid expansion, resuming without repeated calls,
the cache, errors as data, budget stops that leave the frame and the ledger consistent."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from llmdispatch_nb import Dispatcher, Endpoint, Secret
from llmdispatch_nb.errors import ConfigurationError, UnknownTargetError
from llmdispatch_nb.experiments import asweep, contains, describe, pivot, sweep
from llmdispatch_nb.experiments._grid import (
    Params,
    build_cells,
    read_prompts,
    read_targets,
    read_vars,
)
from llmdispatch_nb.ledger import Ledger, MemoryLedger
from llmdispatch_nb.resilience import Budget, Limit, RetryPolicy
from llmdispatch_nb.sim import SimServer, serve
from tests.conftest import CANARY_KEY, assert_no_canary

OPENAI = "openai:gpt-4o-mini"
CLAUDE = "anthropic:claude-haiku-4-5"


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    with serve(["openai", "anthropic"], time_scale=0) as s:
        yield s


@pytest.fixture(autouse=True)
def _fresh(sim: SimServer) -> None:
    for emu in sim.emulators.values():
        emu.reset()


def endpoints(sim: SimServer) -> list[Endpoint]:
    return [Endpoint("openai", "openai", sim.base_url("openai"), key=Secret(CANARY_KEY),
                     simulated=True),
            Endpoint("anthropic", "anthropic", sim.base_url("anthropic"),
                     key=Secret(CANARY_KEY), simulated=True)]


def dispatcher(sim: SimServer, ledger: Any = None, **kw: Any) -> Dispatcher:
    kw.setdefault("retry", RetryPolicy.none())
    return Dispatcher(endpoints(sim), dotenv=False,
                      ledger=ledger if ledger is not None else Ledger.memory(), **kw)


def requests(sim: SimServer) -> int:
    return sim.total_requests()


# -- the grid ------------------------------------------------------------------------------


def test_grid_is_templates_x_var_rows_x_targets_x_repeats() -> None:
    specs = read_prompts(["Capital of {country}?", "Say {word} in {country}"])
    rows = read_vars({"country": ["France", "Peru", "Japan"], "word": ["hi", "bye"]})
    assert len(rows) == 6 and rows[0] == {"country": "France", "word": "hi"}
    cells = build_cells(specs, rows, read_targets([OPENAI, CLAUDE]), 2, Params())
    assert len(cells) == 2 * 6 * 2 * 2
    assert len({c.cell_id for c in cells}) == len(cells)
    # A case is the question: the same for every target and repeat.
    assert len({c.case_id for c in cells}) == 2 * 6
    first = cells[0]
    assert (first.prompt, first.target, first.repeat) == ("Capital of France?", OPENAI, 0)
    assert [c.index for c in cells] == list(range(len(cells)))
    # Ids are stable: built again, they are the same.
    again = build_cells(specs, rows, [OPENAI, CLAUDE], 2, Params())
    assert [c.cell_id for c in again] == [c.cell_id for c in cells]
    # ...and they change with what is sent.
    other = build_cells(specs, rows, [OPENAI, CLAUDE], 2, Params(max_tokens=5))
    assert not {c.cell_id for c in other} & {c.cell_id for c in cells}


def test_var_rows_from_a_dataframe_and_prompts_from_a_column() -> None:
    frame = pd.DataFrame({"q": ["Capital of {country}?", "Largest city of {country}?"],
                          "expected": ["Paris", "Lima"]}, index=["capital", "city"])
    specs = read_prompts(frame.rename(columns={"q": "prompt"}))
    assert [s.prompt_id for s in specs] == ["capital", "city"]
    assert specs[1].own_vars == {"expected": "Lima"}
    assert [s.prompt_id for s in read_prompts(frame["q"])] == ["capital", "city"]
    rows = read_vars(pd.DataFrame({"country": ["France", "Peru"], "n": [1, 2]}))
    assert rows == [{"country": "France", "n": 1}, {"country": "Peru", "n": 2}]
    assert type(rows[1]["n"]) is int  # numpy scalars become plain values
    cells = build_cells(specs, rows, [OPENAI], 1, Params())
    assert [c.prompt for c in cells] == ["Capital of France?", "Capital of Peru?",
                                         "Largest city of France?", "Largest city of Peru?"]
    assert cells[3].vars == {"expected": "Lima", "country": "Peru", "n": 2}


def test_without_vars_prompts_are_sent_as_written() -> None:
    cells = build_cells(read_prompts('Return {"a": 1} as JSON'), read_vars(None), [OPENAI], 1,
                        Params())
    assert cells[0].prompt == 'Return {"a": 1} as JSON' and cells[0].template_error is None


def test_grid_refuses_what_cannot_be_a_sweep() -> None:
    with pytest.raises(ConfigurationError, match="unique"):
        read_prompts(pd.Series(["x", "y"], index=["a", "a"]))
    with pytest.raises(ConfigurationError, match="only once"):
        read_targets([OPENAI, OPENAI])
    with pytest.raises(ConfigurationError, match="clash"):
        build_cells(read_prompts("{text}"), read_vars({"text": ["a"]}), [OPENAI], 1, Params())
    with pytest.raises(ConfigurationError, match="n "):
        build_cells(read_prompts("x"), [{}], [OPENAI], 0, Params())
    with pytest.raises(ConfigurationError, match="no values"):
        read_vars({"a": []})


def test_sweep_runs_every_cell_once_and_returns_one_row_per_run(sim: SimServer) -> None:
    with dispatcher(sim) as d:
        df = sweep(["Capital of {country}?", "Spell {country} backwards"], [OPENAI, CLAUDE],
                   vars={"country": ["France", "Peru", "Japan"]}, n=2, dispatcher=d,
                   max_tokens=20, progress=False)
    assert len(df) == 2 * 3 * 2 * 2
    assert sim.emulators["openai"].count == 12 and sim.emulators["anthropic"].count == 12
    assert (df["status"] == "ok").all() and df["text"].str.len().gt(0).all()
    assert list(df.columns[:6]) == ["sweep_id", "cell_id", "case_id", "prompt_id", "prompt",
                                    "country"]
    combos = df.groupby(["prompt_id", "country", "target", "repeat"]).size()
    assert len(combos) == 24 and (combos == 1).all()
    assert set(df["vendor"]) == {"openai", "anthropic"}
    assert (df["cost_usd"] > 0).all() and (df["spent_usd"] == df["cost_usd"]).all()
    assert df["input_tokens"].dtype == "Int64" and (df["output_tokens"] <= 20).all()
    assert not df["cached"].any() and not df["resumed"].any()
    assert df["prompt"].iloc[0] == "Capital of France?"
    assert df.attrs["sweep_id"] == df["sweep_id"].iloc[0]
    assert "24 ok, 0 error, 0 not_run" in describe(df)
    assert_no_canary(df.to_csv(), describe(df))


def test_every_run_is_tagged_with_the_sweep_and_its_cell(sim: SimServer) -> None:
    ledger = Ledger.memory()
    with dispatcher(sim, ledger) as d:
        df = sweep("Hello {who}", [OPENAI], vars={"who": ["a", "b"]}, dispatcher=d,
                   tags=["team-x"], progress=False)
    records = ledger.records(tags=f"sweep:{df.attrs['sweep_id']}")
    assert len(records) == 2
    by_call = {r.call_id: r for r in records}
    for row in df.itertuples():
        tags = by_call[row.call_id].tags
        assert f"cell:{row.cell_id}" in tags and "team-x" in tags and "sweep" in tags


def test_a_missing_var_is_an_error_row_and_is_never_sent(sim: SimServer) -> None:
    with dispatcher(sim) as d:
        df = sweep(["Capital of {country}?", "Translate {word} to {lang}"], [OPENAI],
                   vars={"country": ["France"]}, dispatcher=d, progress=False)
    assert list(df["status"]) == ["ok", "error"]
    bad = df.iloc[1]
    assert bad["error_type"] == "KeyError" and "'word'" in bad["error"]
    assert bad["prompt"] == "Translate {word} to {lang}"
    assert requests(sim) == 1


def test_a_failed_run_is_an_error_row_and_the_sweep_goes_on(sim: SimServer) -> None:
    sim.emulators["anthropic"].faults.script("400")
    with dispatcher(sim) as d:
        df = sweep("Q{i}", [CLAUDE], vars={"i": [1, 2, 3]}, dispatcher=d, concurrency=1,
                   progress=False)
    assert list(df["status"]) == ["error", "ok", "ok"]
    assert df["error_type"].iloc[0] == "BadRequestError" and pd.isna(df["text"].iloc[0])
    assert pd.isna(df["cost_usd"].iloc[0]) and df["spent_usd"].iloc[0] == 0


def test_an_unknown_target_fails_before_anything_is_sent(sim: SimServer) -> None:
    with dispatcher(sim) as d, pytest.raises(UnknownTargetError):
        sweep("x", [OPENAI, "nosuchvendor:model"], dispatcher=d, progress=False)
    assert requests(sim) == 0


# -- resuming ------------------------------------------------------------------------------


def test_resuming_a_half_done_sweep_sends_only_what_is_missing(sim: SimServer,
                                                                tmp_path: Path) -> None:
    grid: dict[str, Any] = {"prompts": ["Capital of {country}?", "Name a river in {country}"],
                            "vars": {"country": ["France", "Peru", "Japan"]}, "n": 2}
    # First pass: one target only, and three of its runs fail.
    sim.emulators["openai"].faults.script("400", None, "400", None, "400")
    with dispatcher(sim, Ledger(tmp_path)) as d:
        first = sweep(targets=[OPENAI], dispatcher=d, concurrency=1, progress=False, **grid)
    assert (first["status"] == "error").sum() == 3 and requests(sim) == 12
    # Second pass, a new dispatcher (a new session, a new kernel) on the same ledger file,
    # with a second target added: the sweep id is the same, so only the 3 failed cells
    # and the new target's 12 are sent.
    with dispatcher(sim, Ledger(tmp_path)) as d:
        second = sweep(targets=[OPENAI, CLAUDE], dispatcher=d, progress=False, **grid)
    assert second.attrs["sweep_id"] == first.attrs["sweep_id"]
    assert sim.emulators["openai"].count == 12 + 3
    assert sim.emulators["anthropic"].count == 12
    assert (second["status"] == "ok").all()
    kept = second[second["resumed"]]
    assert len(kept) == 9 and set(kept["target"]) == {OPENAI}
    assert (kept["spent_usd"] == 0).all() and (kept["cost_usd"] > 0).all()
    # The resumed rows carry the first pass's answers.
    old = first.set_index("cell_id")
    for row in kept.itertuples():
        assert row.text == old.loc[row.cell_id, "text"]
        assert row.call_id == old.loc[row.cell_id, "call_id"]
    # A third pass sends nothing at all.
    before = requests(sim)
    with dispatcher(sim, Ledger(tmp_path)) as d:
        third = sweep(targets=[OPENAI, CLAUDE], dispatcher=d, progress=False, **grid)
    assert requests(sim) == before and third["resumed"].all()
    assert third["text"].tolist() == second["text"].tolist()


def test_resume_false_sends_again(sim: SimServer) -> None:
    with dispatcher(sim) as d:
        sweep("Hi {x}", [OPENAI], vars={"x": [1, 2]}, dispatcher=d, progress=False)
        again = sweep("Hi {x}", [OPENAI], vars={"x": [1, 2]}, dispatcher=d, progress=False,
                      resume=False)
    assert requests(sim) == 4 and not again["resumed"].any()


def test_resume_works_with_a_list_backed_ledger(sim: SimServer) -> None:
    with dispatcher(sim, MemoryLedger()) as d:
        sweep("Hi {x}", [OPENAI], vars={"x": [1, 2]}, dispatcher=d, progress=False)
        again = sweep("Hi {x}", [OPENAI], vars={"x": [1, 2]}, dispatcher=d, progress=False)
    assert requests(sim) == 2 and again["resumed"].all()


def test_deterministic_cells_come_from_the_cache_priced_at_list(sim: SimServer) -> None:
    with dispatcher(sim) as d:
        assert d.cache is not None
        fresh = sweep("Define {w}", [OPENAI, CLAUDE], vars={"w": ["tide", "moss"]},
                      temperature=0, dispatcher=d, progress=False)
        # resume=False: the ledger is not asked, but the response cache still answers.
        again = sweep("Define {w}", [OPENAI, CLAUDE], vars={"w": ["tide", "moss"]},
                      temperature=0, dispatcher=d, progress=False, resume=False)
    assert requests(sim) == 4
    assert again["cached"].all() and (again["spent_usd"] == 0).all()
    assert again["text"].tolist() == fresh["text"].tolist()
    assert again["cost_usd"].tolist() == pytest.approx(fresh["cost_usd"].tolist())


def test_repeats_after_the_first_are_fresh_samples(sim: SimServer) -> None:
    with dispatcher(sim) as d:
        df = sweep("Define tide", [OPENAI], n=3, temperature=0, dispatcher=d, progress=False,
                   resume=False)
        df2 = sweep("Define tide", [OPENAI], n=3, temperature=0, dispatcher=d, progress=False,
                    resume=False)
    # Repeat 0 comes from the cache the second time; repeats 1 and 2 are sent again.
    assert requests(sim) == 3 + 2
    assert df2["cached"].tolist() == [True, False, False] and not df["cached"].any()


# -- budgets -------------------------------------------------------------------------------


def _consistent(df: pd.DataFrame, ledger: Ledger, sim: SimServer) -> None:
    """Every run answered, errored or not run; the ledger holds exactly what was sent."""
    assert set(df["status"]) <= {"ok", "error", "not_run"}
    records = ledger.records(tags=f"sweep:{df.attrs['sweep_id']}")
    sent = [r for r in records if r.status in ("ok", "error")]
    assert len(sent) == requests(sim)
    ok_calls = {r.call_id for r in records if r.status == "ok"}
    assert set(df.loc[df["status"] == "ok", "call_id"]) == ok_calls
    refused = [r for r in records if r.status == "refused"]
    assert len(refused) == (df["error_type"] == "BudgetExceededError").sum()
    assert df.loc[df["status"] == "not_run", "call_id"].isna().all()
    assert (df.loc[df["status"] == "not_run", "spent_usd"] == 0).all()


def test_a_budget_refusal_stops_the_sweep_and_marks_the_rest_not_run(sim: SimServer) -> None:
    ledger = Ledger.memory()
    with dispatcher(sim, ledger, budget=Budget(0.004)) as d:
        df = sweep("Write about {topic}", [CLAUDE], vars={"topic": list(range(30))},
                   max_tokens=100, dispatcher=d, concurrency=1, progress=False)
        spent = d.budget.spent
    counts = df["status"].value_counts()
    assert 0 < counts["ok"] < 30 and counts["not_run"] == 30 - counts["ok"]
    # One at a time: the runs before the refusal answered, everything after is not run.
    first_stop = df.index[df["status"] == "not_run"][0]
    assert (df["status"].iloc[:first_stop] == "ok").all()
    assert df["error_type"].iloc[first_stop] == "BudgetExceededError"
    assert (df["error_type"].iloc[first_stop + 1:] == "NotRun").all()
    assert "budget" in df["error"].iloc[-1]
    assert df["spent_usd"].sum() == pytest.approx(spent)
    _consistent(df, ledger, sim)


def test_a_budget_stop_with_many_runs_in_flight_stays_consistent(sim: SimServer) -> None:
    ledger = Ledger.memory()
    with dispatcher(sim, ledger, budget=Budget(0.01)) as d:
        df = sweep("Write about {topic}", [CLAUDE, OPENAI], vars={"topic": list(range(60))},
                   max_tokens=100, dispatcher=d, progress=False)
    counts = df["status"].value_counts()
    assert counts.get("not_run", 0) > 0 and counts.get("ok", 0) > 0
    assert counts.sum() == 120
    _consistent(df, ledger, sim)


def test_max_cost_caps_this_sweep_only(sim: SimServer) -> None:
    ledger = Ledger.memory()
    with dispatcher(sim, ledger) as d:
        df = sweep("Write about {topic}", [CLAUDE], vars={"topic": list(range(20))},
                   max_tokens=100, dispatcher=d, concurrency=2, max_cost=0.003,
                   progress=False)
        assert (df["status"] == "not_run").any()
        assert 0 < df["spent_usd"].sum() <= 0.003
        # The cap was for that call only: the dispatcher is not left limited.
        after = sweep("Write about {topic}", [CLAUDE], vars={"topic": list(range(20))},
                      max_tokens=100, dispatcher=d, progress=False)
    assert (after["status"] == "ok").all()
    assert after["resumed"].sum() == (df["status"] == "ok").sum()


# -- concurrency, async, views -------------------------------------------------------------


def test_limits_and_concurrency_hold(sim: SimServer) -> None:
    seen: list[int] = []
    with dispatcher(sim, limits={"openai": Limit(concurrent=3)}) as d:
        def watch(record: Any) -> None:
            seen.append(d.limiter.snapshot()["openai"]["in_flight"])

        d.on_record(watch)
        df = sweep("Q{i}", [OPENAI], vars={"i": list(range(40))}, dispatcher=d,
                   progress=False)
    assert (df["status"] == "ok").all() and max(seen) <= 3


def test_asweep_from_async_code(sim: SimServer) -> None:
    async def main(d: Dispatcher) -> pd.DataFrame:
        return await asweep("Q{i}", [OPENAI, CLAUDE], vars={"i": [1, 2]}, dispatcher=d,
                            progress=False, evaluators=[contains("simulated")])

    with dispatcher(sim) as d:
        df = asyncio.run(main(d))
    assert len(df) == 4 and (df["contains:simulated"] == 1.0).all()


def test_text_progress_shows_done_failed_and_spend(sim: SimServer,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    sim.emulators["openai"].faults.script("400")
    with dispatcher(sim) as d:
        sweep("Q{i}", [OPENAI], vars={"i": [1, 2, 3]}, dispatcher=d, concurrency=1)
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert "3/3 done" in last and "1 failed" in last and "$" in last


def test_pivot_by_target(sim: SimServer) -> None:
    sim.emulators["anthropic"].faults.script("400")
    with dispatcher(sim) as d:
        df = sweep("Q{i}", [OPENAI, CLAUDE], vars={"i": [1, 2, 3]}, dispatcher=d,
                   concurrency=1, evaluators={"short": lambda t, r: len(t) < 10},
                   progress=False)
    p = pivot(df)
    assert list(p.index) == [OPENAI, CLAUDE]
    assert p.loc[CLAUDE, "runs"] == 3 and p.loc[CLAUDE, "errors"] == 1 and p.loc[CLAUDE, "ok"] == 2
    ok = df[(df["target"] == CLAUDE) & (df["status"] == "ok")]
    assert p.loc[CLAUDE, "cost_usd"] == pytest.approx(ok["cost_usd"].mean())
    assert p.loc[CLAUDE, "latency_s"] == pytest.approx(ok["latency_s"].mean())
    assert p.loc[OPENAI, "short"] == 0.0 and "score" in p.columns


def test_targets_sharing_a_capped_vendor_share_one_lane(sim: SimServer) -> None:
    from llmdispatch_nb.experiments._sweep import _lanes

    cells = build_cells(read_prompts(["a", "b"]), [{}],
                        ["openai:gpt-4o-mini", "openai:gpt-4o", CLAUDE], 1, Params())
    with dispatcher(sim, limits={"openai": Limit(concurrent=5)}) as d:
        lanes = _lanes(d, cells, None)
        capped = _lanes(d, cells, 3)
    assert sorted((lane.width, len(lane.queue)) for lane in lanes) == [(5, 4), (8, 2)]
    openai = next(lane for lane in lanes if lane.width == 5)
    # The vendor's targets interleave in grid order, so neither waits for the other.
    assert [c.target for c in openai.queue][:2] == ["openai:gpt-4o-mini", "openai:gpt-4o"]
    assert sorted(lane.width for lane in capped) == [3, 3]


def test_widget_progress_counts_done_failed_not_run_and_spend() -> None:
    from llmdispatch_nb.experiments._progress import TextProgress, WidgetProgress, make_progress

    bar = WidgetProgress(3, "sweep x")
    bar.add("ok", 0.001)
    bar.add("error")
    bar.add("not_run")
    bar.close()
    assert bar.bar.value == 3 and bar.bar.bar_style == "danger"
    assert bar.text.value == "sweep x: 3/3 done · 1 failed · 1 not run · $0.001 spent"
    # Outside a kernel the bar is a text line; progress=False shows nothing.
    assert isinstance(make_progress(True, 1, "s"), TextProgress)
    assert type(make_progress(False, 1, "s")).__name__ == "Progress"
