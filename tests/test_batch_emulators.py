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


# -- Anthropic Message Batches --------------------------------------------------------------


@pytest.fixture
def ant(sim: SimServer) -> Iterator[Any]:
    import anthropic

    with anthropic.Anthropic(api_key="sk-ant-test", base_url=sim.base_url("anthropic"),
                             max_retries=0) as c:
        yield c


def _ant_requests(n: int, model: str = "claude-haiku-4-5") -> list[dict[str, Any]]:
    return [{"custom_id": f"r{i}", "params": {
        "model": model, "max_tokens": 40, "messages": [{"role": "user", "content": f"Q {i}?"}]}}
        for i in range(n)]


def test_anthropic_sdk_runs_a_message_batch(sim: SimServer, ant: Any) -> None:
    reqs = _ant_requests(4)
    reqs[2]["params"]["model"] = "claude-nonexistent"
    b = ant.messages.batches.create(requests=reqs)
    assert b.type == "message_batch" and b.processing_status == "in_progress"
    assert b.request_counts.processing == 4 and b.results_url is None
    done = _wait(lambda: ant.messages.batches.retrieve(b.id),
                 lambda x: x.processing_status == "ended")
    assert (done.request_counts.succeeded, done.request_counts.errored) == (3, 1)
    assert done.ended_at is not None and done.results_url
    results = {r.custom_id: r.result for r in ant.messages.batches.results(b.id)}
    assert results["r0"].type == "succeeded" and results["r0"].message.content[0].text
    assert results["r2"].type == "errored"
    assert results["r2"].error.error.type == "not_found_error"
    assert b.id in [x.id for x in ant.messages.batches.list()]
    assert ant.messages.batches.delete(b.id).type == "message_batch_deleted"


def test_anthropic_batch_faults_and_cancel(sim: SimServer, ant: Any) -> None:
    eng = engine(sim.emulators["anthropic"])
    eng.faults.script("expired")
    b = ant.messages.batches.create(requests=_ant_requests(4))
    done = _wait(lambda: ant.messages.batches.retrieve(b.id),
                 lambda x: x.processing_status == "ended")
    assert (done.request_counts.succeeded, done.request_counts.expired) == (2, 2)
    eng.time_scale = 10.0
    c = ant.messages.batches.create(requests=_ant_requests(3))
    assert ant.messages.batches.cancel(c.id).processing_status == "canceling"
    done = _wait(lambda: ant.messages.batches.retrieve(c.id),
                 lambda x: x.processing_status == "ended")
    assert done.request_counts.canceled == 3 and done.cancel_initiated_at is not None
    assert {r.result.type for r in ant.messages.batches.results(c.id)} == {"canceled"}


def test_anthropic_refuses_duplicate_custom_ids(sim: SimServer, ant: Any) -> None:
    import anthropic

    reqs = _ant_requests(2)
    reqs[1]["custom_id"] = "r0"
    with pytest.raises(anthropic.BadRequestError, match="Duplicate custom_id"):
        ant.messages.batches.create(requests=reqs)


# -- Gemini Batch Mode ----------------------------------------------------------------------


@pytest.fixture
def gem(sim: SimServer) -> Iterator[Any]:
    from google import genai
    from google.genai import types as genai_types

    c = genai.Client(api_key="gemini-test", http_options=genai_types.HttpOptions(
        base_url=sim.base_url("google"), api_version="v1beta"))
    yield c
    c.close()


def _gem_requests(n: int) -> list[dict[str, Any]]:
    return [{"contents": [{"role": "user", "parts": [{"text": f"Question {i}?"}]}],
             "config": {"max_output_tokens": 40}} for i in range(n)]


def test_gemini_sdk_runs_an_inline_batch(sim: SimServer, gem: Any) -> None:
    job = gem.batches.create(model="gemini-2.0-flash", src=_gem_requests(3),
                             config={"display_name": "sweep"})
    assert job.name.startswith("batches/") and job.display_name == "sweep"
    assert job.state.name in ("JOB_STATE_PENDING", "JOB_STATE_RUNNING")
    done = _wait(lambda: gem.batches.get(name=job.name), lambda x: x.done)
    assert done.state.name == "JOB_STATE_SUCCEEDED" and done.end_time is not None
    responses = done.dest.inlined_responses
    assert len(responses) == 3 and all(r.response.text for r in responses)
    assert responses[0].response.usage_metadata.candidates_token_count > 0
    assert job.name in [j.name for j in gem.batches.list()]


@pytest.mark.parametrize(("fault", "state"), [("expired", "JOB_STATE_EXPIRED"),
                                              ("failed", "JOB_STATE_FAILED"),
                                              ("partial", "JOB_STATE_SUCCEEDED")])
def test_gemini_batch_faults(sim: SimServer, gem: Any, fault: str, state: str) -> None:
    engine(sim.emulators["google"]).faults.script(fault)
    job = gem.batches.create(model="gemini-2.0-flash", src=_gem_requests(3))
    done = _wait(lambda: gem.batches.get(name=job.name), lambda x: x.done)
    assert done.state.name == state
    if fault == "partial":
        errors = [r.error for r in done.dest.inlined_responses]
        assert errors[2] is not None and errors[0] is None


def test_gemini_cancel(sim: SimServer, gem: Any) -> None:
    engine(sim.emulators["google"]).time_scale = 10.0
    job = gem.batches.create(model="gemini-2.0-flash", src=_gem_requests(2))
    gem.batches.cancel(name=job.name)
    done = _wait(lambda: gem.batches.get(name=job.name), lambda x: x.done)
    assert done.state.name == "JOB_STATE_CANCELLED" and done.dest is None


# -- Azure OpenAI global batch ----------------------------------------------------------------


def test_azure_sdk_runs_a_global_batch(sim: SimServer) -> None:
    import openai

    lines = _openai_lines(3).replace(b'"url": "/v1/chat/completions"',
                                     b'"url": "/chat/completions"')
    with openai.AzureOpenAI(api_key="az-test", azure_endpoint=sim.base_url("azure"),
                            api_version="2024-10-21", max_retries=0) as client:
        f = client.files.create(file=("in.jsonl", io.BytesIO(lines)), purpose="batch")
        engine(sim.emulators["azure"]).faults.script("expired")  # Azure does not expire batches
        b = client.batches.create(input_file_id=f.id, endpoint="/chat/completions",  # type: ignore[arg-type]
                                  completion_window="24h")
        done = _wait(lambda: client.batches.retrieve(b.id),
                     lambda x: x.status in ("completed", "expired", "failed"))
        assert done.status == "completed" and done.request_counts.completed == 3
        out = [json.loads(x) for x in client.files.content(done.output_file_id).text.splitlines()]
        assert {x["response"]["body"]["model"] for x in out} == {"gpt-4o-mini-2024-07-18"}
        assert "prompt_filter_results" in out[0]["response"]["body"]  # Azure's own annotations
