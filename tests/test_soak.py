"""A small reliability soak (the full one is `bench/soak.py`, run by `python -m bench`).

A few hundred calls over the four emulators with a quarter of the answers faulty (429 with
a wait in seconds and in milliseconds or RetryInfo, 500, 503, 529, resets, hangs, cut and
failed streams), fallbacks across vendors, half of the calls streamed. Asserted: no call is
lost, the ledger holds exactly one row per request the emulators received (in total and
per call, vendor by vendor), and no retry went out sooner than the wait the error asked
for. Timings are printed, never asserted.
"""

from __future__ import annotations

from bench.soak import Sent, SoakResult, _compare, asked_wait, run_soak
from llmdispatch_nb._types import CallRecord


def test_small_soak_loses_nothing_and_every_ledger_row_matches_a_request() -> None:
    # A read timeout well above a busy server's answer time: a request the client gave up on
    # before the server read it is never logged by the emulator, which would read as a
    # missing request rather than what it is.
    res = run_soak(320, concurrency=32, phases=2, read_timeout_s=2.0, seed=7)
    print("\n" + res.summary())
    assert res.calls == 320
    assert res.lost == 0, res.lost_examples
    assert res.answered + sum(res.typed_errors.values()) == res.calls
    # The mix really was faulty, and retries after a named wait really happened.
    assert sum(n for kind, n in res.faults_injected.items() if kind != "none") > 20
    assert res.retries_after_a_wait > 0
    assert res.ledger_rows == res.emulator_total == res.wire_requests
    assert res.ledger_by_vendor == res.emulator_requests
    assert res.calls_with_count_mismatch == 0, res.mismatch_examples
    assert res.early_retries_wire == 0, res.early_examples
    assert res.early_retries_ledger == 0, res.early_examples


def _record(attempt: int, vendor: str, start: float, latency: float, status: str) -> CallRecord:
    return CallRecord(call_id="c1", attempt=attempt, timestamp=start, vendor=vendor,
                      model_requested="m", model_served=None, status=status,
                      latency_s=latency, prompt="[soak call #5] hi")


def test_the_soak_check_catches_a_retry_sent_before_the_wait_and_a_missing_row() -> None:
    # The checker must be able to fail: a 429 asking for 50 ms, retried after 10 ms.
    cand = "1111/v1/chat/completions|gpt-4o-mini"
    sent = [Sent(5, cand, 10.000, 10.002, 429, 0.05), Sent(5, cand, 10.012, 10.014, 200, None)]
    rows = [_record(1, "openai", 1000.000, 0.002, "error"),
            _record(2, "openai", 1000.012, 0.002, "ok")]
    res = SoakResult()
    _compare(res, range(5, 6), sent, rows, {"1111": "openai"})
    assert res.retries_after_a_wait == 1
    assert res.early_retries_wire == 1 and res.early_retries_ledger == 1
    assert res.min_margin_wire_ms is not None and res.min_margin_wire_ms < 0

    # The same retry after 60 ms passes; a request with no ledger row is a mismatch.
    sent[1] = Sent(5, cand, 10.062, 10.064, 200, None)
    ok = SoakResult()
    _compare(ok, range(5, 6), sent, [rows[0], _record(2, "openai", 1000.062, 0.002, "ok")],
             {"1111": "openai"})
    assert ok.early_retries_wire == 0 and ok.early_retries_ledger == 0
    missing = SoakResult()
    _compare(missing, range(5, 6), sent, rows[:1], {"1111": "openai"})
    assert missing.calls_with_count_mismatch == 1


def test_the_wait_an_error_asks_for_is_read_as_each_vendor_writes_it() -> None:
    import httpx

    assert asked_wait(httpx.Headers({"retry-after-ms": "30", "retry-after": "1"}), b"") == 0.03
    assert asked_wait(httpx.Headers({"retry-after": "2"}), b"") == 2.0
    gemini = (b'{"error": {"code": 429, "details": [{"@type": '
              b'"type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "0.05s"}]}}')
    assert asked_wait(httpx.Headers({}), gemini) == 0.05
    assert asked_wait(httpx.Headers({}), b"not json") is None
