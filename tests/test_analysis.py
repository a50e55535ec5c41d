"""llmdispatch_nb.analysis: the typed calls() frame from every kind of source, summary()
agreeing with summarize_stats on the same records, and the figures (traces, not pixels)."""

from __future__ import annotations

import math
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llmdispatch_nb import analysis
from llmdispatch_nb._types import CallRecord
from llmdispatch_nb.analysis import SUMMARY_COLUMNS, calls, summary
from llmdispatch_nb.ledger import Ledger, MemoryLedger, default_ledger, summarize_stats
from llmdispatch_nb.ledger._frame import frame_from_records

MODELS = {"openai": ["gpt-4o", "gpt-4o-mini"], "anthropic": ["claude-haiku-4-5"],
          "azure": ["gpt-4o"]}


def workload(n_calls: int = 300, seed: int = 5) -> list[CallRecord]:
    """Calls with retries, fallbacks across vendors, failures, cache hits, unknown prices."""
    rng = random.Random(seed)
    out: list[CallRecord] = []
    t = 1_750_000_000.0
    for c in range(n_calls):
        plan = [(v, m) for v in MODELS for m in MODELS[v]]
        vendor, model = rng.choice(plan)
        fell_back = False
        for step in range(rng.choice([1, 1, 1, 2, 3])):
            attempt = step + 1
            if step == 2:  # fall back to another vendor
                vendor, model = rng.choice([p for p in plan if p[0] != vendor])
                fell_back = True
            last = step == 2 or rng.random() < 0.5
            status = rng.choice(["ok", "ok", "ok", "cached", "error"]) if last else "error"
            ok = status != "error"
            t += rng.uniform(0.1, 5)
            latency = rng.lognormvariate(0, 0.6)
            streamed = rng.random() < 0.5
            out.append(CallRecord(
                call_id=f"call{c}", attempt=attempt, timestamp=t, vendor=vendor,
                model_requested=model, model_served=f"{model}-x" if ok else None, status=status,
                error_class=None if ok else rng.choice(["RateLimitError", "ServerError", None]),
                http_status=200 if ok else rng.choice([429, 500, None]),
                session=rng.choice(["nb1", "nb2"]), retried=attempt > 1 and not fell_back,
                fell_back=fell_back and step == 2, streamed=streamed, latency_s=latency,
                ttft_s=latency * 0.3 if streamed and ok else None,
                input_tokens=rng.randint(5, 500) if ok else None,
                output_tokens=rng.randint(0, 300) if ok else None,
                cost_usd=(None if vendor == "azure" else (0.0 if status == "cached"
                                                          else rng.random() / 100))
                if ok else None,
                cache_hit=status == "cached", tags=("demo",) if c % 4 == 0 else (),
                usage_source="reported" if ok else None))
            if last:
                break
    return out


@pytest.fixture(scope="module")
def recs() -> list[CallRecord]:
    return workload()


@pytest.fixture(scope="module")
def frame(recs: list[CallRecord]) -> pd.DataFrame:
    ledger = Ledger.memory()
    for r in recs:
        ledger.write(r)
    return calls(ledger)


def test_calls_is_tidy_and_typed(frame: pd.DataFrame, recs: list[CallRecord]) -> None:
    assert len(frame) == len(recs)
    for column in ("call_id", "session", "vendor", "model", "model_served", "status",
                   "error_class", "price_source", "tags"):
        assert isinstance(frame[column].dtype, pd.CategoricalDtype), column
    assert str(frame["timestamp"].dtype) == "datetime64[us, UTC]"
    for column in ("http_status", "input_tokens", "output_tokens", "cache_read_tokens"):
        assert str(frame[column].dtype) == "Int64", column
    for column in ("latency_s", "ttft_s", "cost_usd", "tokens_per_s"):
        assert str(frame[column].dtype) == "Float64", column
    for column in ("retried", "fell_back", "streamed", "cache_hit", "simulated"):
        assert frame[column].dtype == np.bool_, column
    assert list(frame["vendor"].cat.categories) == sorted(MODELS)
    # Values, nulls included, as recorded.
    assert list(frame["call_id"].astype(str)) == [r.call_id for r in recs]
    assert [None if pd.isna(v) else v for v in frame["output_tokens"]] == [
        r.output_tokens for r in recs]
    assert [None if pd.isna(v) else v for v in frame["cost_usd"]] == [r.cost_usd for r in recs]
    assert list(frame["timestamp"]) == [
        pd.Timestamp(round(r.timestamp * 1e6), unit="us", tz="UTC") for r in recs]
    rates = [None if pd.isna(v) else v for v in frame["tokens_per_s"]]
    assert all((a is None and b is None) or math.isclose(a, b)  # type: ignore[arg-type]
               for a, b in zip(rates, [r.output_tokens_per_s for r in recs], strict=True))
    assert set(frame["tags"]) == {"demo", ""}


def test_every_source_gives_the_same_frame(frame: pd.DataFrame, recs: list[CallRecord],
                                           tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "file")
    plain = MemoryLedger()
    for r in recs:
        ledger.write(r)
        plain.write(r)
        default_ledger().write(r)
    for source in (ledger, recs, plain, str(tmp_path / "file"), None):
        pd.testing.assert_frame_equal(calls(source), frame)
    # The block-packed read equals a direct pack of the records (many batches merged).
    pd.testing.assert_frame_equal(ledger.dataframe(), frame_from_records(recs))


def test_a_dispatcher_source_means_its_session(recs: list[CallRecord]) -> None:
    class Notebook:  # the two attributes calls() reads from a Dispatcher
        def __init__(self, ledger: Ledger, session: str) -> None:
            self.ledger, self.session = ledger, session

    ledger = Ledger.memory()
    for r in recs:
        ledger.write(r)
    mine = calls(Notebook(ledger, "nb1"))
    assert len(mine) == sum(r.session == "nb1" for r in recs) and set(mine["session"]) == {"nb1"}


def test_calls_filters(frame: pd.DataFrame, recs: list[CallRecord]) -> None:
    assert len(calls(recs, session="nb2")) == sum(r.session == "nb2" for r in recs)
    since = recs[100].timestamp
    assert len(calls(recs, since=since)) == len(recs) - 100
    assert len(calls(recs, since=pd.Timestamp(since, unit="s", tz="UTC"))) == len(recs) - 100
    tagged = calls(recs, tags="demo")
    assert len(tagged) == sum("demo" in r.tags for r in recs) and set(tagged["tags"]) == {"demo"}
    with pytest.raises(TypeError, match="calls\\(\\) reads"):
        calls([1, 2, 3])


def test_empty_ledger_gives_empty_typed_frames_and_figures() -> None:
    empty = calls(Ledger.memory())
    assert len(empty) == 0 and str(empty["latency_s"].dtype) == "Float64"
    assert isinstance(empty["vendor"].dtype, pd.CategoricalDtype)
    assert len(summary(empty)) == 0 and list(summary(empty).columns[2:]) == list(SUMMARY_COLUMNS)
    for make in FIGURES:
        assert len(make(empty).data) == 0


# -- summary() and summarize_stats agree ----------------------------------------------


def close(a: object, b: object) -> bool:
    if b is None:
        return bool(pd.isna(a))
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)  # type: ignore[arg-type]


def agree(row: pd.Series, stats: dict) -> None:  # type: ignore[type-arg]
    for column, value in (
            ("calls", stats["calls"]), ("attempts", stats["attempts"]),
            ("successes", stats["successes"]), ("success_rate", stats["success_rate"]),
            ("retries", stats["retries"]), ("fallbacks", stats["fallbacks"]),
            ("cache_hits", stats["cache_hits"]),
            ("latency_p50_s", stats["latency_s"]["p50"]),
            ("latency_p95_s", stats["latency_s"]["p95"]),
            ("ttft_p50_s", stats["ttft_s"]["p50"]), ("ttft_p95_s", stats["ttft_s"]["p95"]),
            ("tokens_per_s", stats["tokens_per_s"]), ("input_tokens", stats["input_tokens"]),
            ("output_tokens", stats["output_tokens"]), ("total_cost_usd", stats["cost_usd"]),
            ("mean_cost_usd", stats["mean_cost_usd"]),
            ("cost_per_1k_tokens", stats["cost_per_1k_tokens"]),
            ("unknown_cost", stats["unknown_cost"])):
        assert close(row[column], value), (column, row[column], value)


def test_summary_agrees_with_summarize_stats(frame: pd.DataFrame, recs: list[CallRecord]) -> None:
    stats = summarize_stats(recs)
    assert stats["attempts"] > stats["calls"] > stats["successes"] > 0
    assert stats["retries"] and stats["fallbacks"] and stats["unknown_cost"]
    per_model = summary(frame)
    assert [f"{v}:{m}" for v, m in zip(per_model["vendor"], per_model["model"], strict=True)] \
        == list(stats["per_model"])
    for _, row in per_model.iterrows():
        agree(row, stats["per_model"][f"{row['vendor']}:{row['model']}"])
    for _, row in summary(frame, by="vendor").iterrows():
        agree(row, stats["per_vendor"][row["vendor"]])
    totals = summary(frame, by=())
    assert len(totals) == 1
    agree(totals.iloc[0], stats)
    # A frame filtered first, and a frame of another shape (no categoricals), agree too.
    nb1 = frame[frame["session"] == "nb1"]
    agree(summary(nb1, by=()).iloc[0], summarize_stats([r for r in recs if r.session == "nb1"]))
    plain = frame.astype({"vendor": str, "model": str, "call_id": str})
    pd.testing.assert_frame_equal(summary(plain), per_model)


def test_percentiles_interpolate_like_numpy() -> None:
    from llmdispatch_nb.ledger import percentile

    values = sorted(random.Random(1).random() for _ in range(101))
    for q in (0, 0.5, 0.95, 0.99, 1):
        assert math.isclose(percentile(values, q) or 0, float(np.quantile(values, q)))
    assert percentile([], 0.5) is None


# -- figures ----------------------------------------------------------------------------

FIGURES = [analysis.latency_figure, analysis.ttft_figure, analysis.tradeoff_figure,
           analysis.spend_figure, analysis.error_figure, analysis.throughput_figure]


def test_distribution_figures(frame: pd.DataFrame) -> None:
    for make in (analysis.latency_figure, analysis.ttft_figure):
        fig = make(frame)
        assert [t.type for t in fig.data] == ["box"] * len(fig.data)
        assert [t.name for t in fig.data] == sorted(MODELS)
    fig = analysis.latency_figure(frame[frame["vendor"] == "openai"])
    assert [t.name for t in fig.data] == ["openai"]
    ok = frame[frame["status"].isin(["ok", "cached"]) & (frame["vendor"] == "anthropic")]
    (box,) = [t for t in analysis.latency_figure(frame).data if t.name == "anthropic"]
    assert math.isclose(box.median[0], float(np.median(ok["latency_s"].to_numpy(float))))
    per_model = analysis.throughput_figure(frame)
    assert [t.name for t in per_model.data] == sorted(
        f"{v}:{m}" for v in MODELS for m in MODELS[v])
    with pytest.raises(ValueError, match="by must be"):
        analysis.latency_figure(frame, by="session")


def test_tradeoff_spend_and_error_figures(frame: pd.DataFrame, recs: list[CallRecord]) -> None:
    trade = analysis.tradeoff_figure(frame)
    assert {t.name for t in trade.data} == {"openai", "anthropic"}  # azure has no prices
    assert all(t.mode == "markers+text" for t in trade.data)
    assert sorted(m for t in trade.data for m in t.text) == sorted(
        ["gpt-4o", "gpt-4o-mini", "claude-haiku-4-5"])

    spend = analysis.spend_figure(frame)
    priced = sorted({r.vendor for r in recs if r.cost_usd is not None})
    assert [t.name for t in spend.data] == ["total", *priced]
    total = spend.data[0]
    assert math.isclose(total.y[-1], sum(r.cost_usd or 0 for r in recs))
    assert list(total.y) == sorted(total.y)

    errors = analysis.error_figure(frame)
    assert {t.name for t in errors.data} == {"RateLimitError", "ServerError", "unknown"}
    assert all(t.type == "bar" for t in errors.data)
    failed = sum(r.status == "error" for r in recs)
    shares = {x: 0.0 for x in errors.data[0].x}
    for t in errors.data:
        for x, y in zip(t.x, t.y, strict=True):
            shares[x] += y
    attempts = frame.groupby(["vendor", "model"], observed=True).size()
    assert math.isclose(sum(shares[f"{v}:{m}"] * n for (v, m), n in attempts.items()), failed)


def test_figures_serialise(frame: pd.DataFrame) -> None:
    for make in FIGURES:
        assert len(make(frame).to_json()) < 200_000


def test_importing_analysis_imports_neither_pandas_nor_plotly() -> None:
    code = ("import sys, llmdispatch_nb.analysis, llmdispatch_nb.ledger\n"
            "print([m for m in ('pandas', 'plotly', 'numpy') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]"
