"""The emulated batch engines seen through the vendors' official SDKs: the same objects,
state machines, output files and results streams a real batch gives (vendor-protocols §15).

Each test starts its own emulator with the batch clock at 0 (a batch ends at the first
look after its answers are ready), and scripts batch fates on `emulator.batches.faults`.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from llmdispatch_nb.sim import SimServer, serve
from llmdispatch_nb.sim._batch_core import engine


@pytest.fixture
def sim() -> Iterator[SimServer]:
    with serve(["openai", "anthropic", "google", "azure"], time_scale=0) as s:
        for e in s.emulators.values():
            engine(e).time_scale = 0.0
        yield s


def _wait(poll: Any, done: Any, limit_s: float = 30.0) -> Any:
    end = time.monotonic() + limit_s  # a gross stall, not a timing assertion
    while True:
        obj = poll()
        if done(obj):
            return obj
        assert time.monotonic() < end, f"the batch never ended: {obj}"
        time.sleep(0.02)


def _openai_lines(n: int, model: str = "gpt-4o-mini", url: str = "/v1/chat/completions") -> bytes:
    return b"".join(json.dumps({
        "custom_id": f"r{i}", "method": "POST", "url": url,
        "body": {"model": model, "messages": [{"role": "user", "content": f"Question {i}?"}],
                 "max_tokens": 40}}).encode() + b"\n" for i in range(n))


@pytest.fixture
def oai(sim: SimServer) -> Iterator[Any]:
    import openai

    with openai.OpenAI(api_key="sk-test", base_url=sim.base_url("openai"), max_retries=0) as c:
        yield c


def test_openai_sdk_runs_a_batch_end_to_end(sim: SimServer, oai: Any) -> None:
    client = oai
    f = client.files.create(file=("in.jsonl", io.BytesIO(_openai_lines(5))), purpose="batch")
    assert f.purpose == "batch" and f.bytes > 0
    b = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                              completion_window="24h", metadata={"sweep": "s1"})
    assert b.status in ("validating", "in_progress") and b.request_counts is not None
    done = _wait(lambda: client.batches.retrieve(b.id), lambda x: x.status == "completed")
    assert done.request_counts.total == 5 and done.request_counts.completed == 5
    assert done.output_file_id and done.error_file_id is None and done.completed_at
    assert done.usage is not None and done.usage.output_tokens > 0
    lines = [json.loads(x) for x in client.files.content(done.output_file_id).text.splitlines()]
    assert sorted(x["custom_id"] for x in lines) == [f"r{i}" for i in range(5)]
    first = lines[0]["response"]
    assert first["status_code"] == 200 and first["body"]["object"] == "chat.completion"
    assert first["body"]["usage"]["completion_tokens"] > 0
    assert next(x.id for x in client.batches.list()) == b.id


def test_openai_per_request_errors_go_to_the_error_file(sim: SimServer, oai: Any) -> None:
    client = oai
    bad = _openai_lines(2) + _openai_lines(1, model="gpt-nonexistent").replace(b'"r0"', b'"bad"')
    f = client.files.create(file=("in.jsonl", io.BytesIO(bad)), purpose="batch")
    b = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                              completion_window="24h")
    done = _wait(lambda: client.batches.retrieve(b.id), lambda x: x.status == "completed")
    assert (done.request_counts.completed, done.request_counts.failed) == (2, 1)
    err = [json.loads(x) for x in client.files.content(done.error_file_id).text.splitlines()]
    assert err[0]["custom_id"] == "bad" and err[0]["response"]["status_code"] == 404
    assert err[0]["response"]["body"]["error"]["code"] == "model_not_found"


@pytest.mark.parametrize(("fault", "status"), [("failed", "failed"), ("expired", "expired"),
                                               ("partial", "completed")])
def test_openai_batch_faults(sim: SimServer, oai: Any, fault: str, status: str) -> None:
    client = oai
    engine(sim.emulators["openai"]).faults.script(fault)
    f = client.files.create(file=("in.jsonl", io.BytesIO(_openai_lines(6))), purpose="batch")
    b = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                              completion_window="24h")
    done = _wait(lambda: client.batches.retrieve(b.id),
                 lambda x: x.status in ("completed", "failed", "expired"))
    assert done.status == status
    if fault == "failed":
        assert done.errors is not None and done.errors.data and done.output_file_id is None
        return
    failed = 3 if fault == "expired" else 2
    assert (done.request_counts.completed, done.request_counts.failed) == (6 - failed, failed)
    err = [json.loads(x) for x in client.files.content(done.error_file_id).text.splitlines()]
    if fault == "expired":
        assert {e["error"]["code"] for e in err} == {"batch_expired"}
    else:
        assert {e["response"]["status_code"] for e in err} == {500}


def test_openai_refuses_a_mismatched_line_at_validation(sim: SimServer, oai: Any) -> None:
    client = oai
    f = client.files.create(file=("in.jsonl", io.BytesIO(_openai_lines(2, url="/v1/embeddings"))),
                            purpose="batch")
    b = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                              completion_window="24h")
    assert b.status == "failed" and b.errors and b.errors.data
    assert b.errors.data[0].code == "mismatched_endpoint" and b.errors.data[0].line == 1


def test_openai_cancel_keeps_the_work_done(sim: SimServer, oai: Any) -> None:
    client = oai
    eng = engine(sim.emulators["openai"])
    eng.time_scale = 10.0  # a long batch: cancelled while it runs
    f = client.files.create(file=("in.jsonl", io.BytesIO(_openai_lines(4))), purpose="batch")
    b = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                              completion_window="24h")
    c = client.batches.cancel(b.id)
    assert c.status == "cancelling"
    done = _wait(lambda: client.batches.retrieve(b.id), lambda x: x.status == "cancelled")
    assert done.request_counts.failed == 4 and done.error_file_id
    err = [json.loads(x) for x in client.files.content(done.error_file_id).text.splitlines()]
    assert {e["error"]["code"] for e in err} == {"batch_cancelled"}
