"""The ledger under records it cannot store as they are: lone surrogates in a prompt, a
system prompt, a tag or a vendor's answer, a usage count past 64 bits (from a tiny
misbehaving server of this test's own, over loopback), rows SQLite refuses. Each is
repaired and noted, or set aside on its own; the records after it are written, and
`stats()`/`close()` answer at once. A seeded loop of a few hundred mixed records checks
the class, and an `on_record` sink that raises never breaks a call."""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from llmdispatch_nb import Dispatcher, Endpoint, Secret
from llmdispatch_nb._types import CallRecord
from llmdispatch_nb.errors import RequestValidationError
from llmdispatch_nb.ledger import Ledger, LedgerError
from llmdispatch_nb.ledger._writer import BatchWriter
from llmdispatch_nb.resilience import RetryPolicy
from tests.conftest import CANARY_KEY


class Vendor:
    """An OpenAI-shaped server that answers what the test sets: the text and the usage."""

    def __init__(self) -> None:
        self.text = "fine"
        self.usage: dict[str, Any] = {"prompt_tokens": 3, "completion_tokens": 2}
        self.received = 0
        vendor = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                vendor.received += 1
                body = json.dumps({  # ensure_ascii: a lone surrogate goes out as \\ud83d
                    "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-mini",
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": vendor.text}}],
                    "usage": vendor.usage}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def vendor() -> Iterator[Vendor]:
    v = Vendor()
    yield v
    v.close()


def dispatcher(vendor: Vendor, ledger: Ledger, cache: bool = False) -> Dispatcher:
    ep = Endpoint("openai", "openai", vendor.base_url, key=Secret(CANARY_KEY))
    return Dispatcher([ep], dotenv=False, ledger=ledger, cache=cache, retry=RetryPolicy.none(),
                      timeout=httpx.Timeout(5.0, connect=5.0))


def test_the_writer_keeps_writing_after_each_poisoned_record(vendor: Vendor,
                                                             tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    d = dispatcher(vendor, ledger)
    target = "openai:gpt-4o-mini"
    # A lone surrogate in what would be sent is refused at the door, with what to do
    # (no vendor reads one); nothing is sent, so there is no attempt to record.
    for prompt, system in (("a broken \ud83d emoji", None), ("fine", "system \udc00 prompt")):
        with pytest.raises(RequestValidationError, match="lone surrogate"):
            d.send(prompt, target, system=system)
    # What is kept only here (a tag) or comes back from the vendor is repaired on the way in.
    assert d.send("fine", target, tags=["tag\ud800"]).text == "fine"
    vendor.text = "an answer with half an emoji \ud83d"
    assert d.send("answer", target).text == vendor.text
    vendor.text, vendor.usage = "big", {"prompt_tokens": 2**70, "completion_tokens": 1}
    assert d.send("usage", target).text == "big"
    vendor.text, vendor.usage = "after", {"prompt_tokens": 3, "completion_tokens": 2}
    assert d.send("plain after", target).text == "after"

    t0 = time.monotonic()
    stats = d.stats()
    d.close()
    assert time.monotonic() - t0 < 10  # a gross stall only (it used to wait 60 s, then fail)
    assert stats["attempts"] == 4 and stats["successes"] == 4 and stats["quarantined"] == 0
    recs = ledger.records()
    assert [r.status for r in recs] == ["ok"] * 4
    notes = [r.repaired for r in recs]
    assert recs[0].tags == ("tag\ufffd",) and "tags" in (notes[0] or "")
    assert recs[1].response == "an answer with half an emoji \ufffd" and "response" in (notes[1] or "")
    # The adapter does not believe 2**70 and estimates (another guard); had it passed the
    # count on, the ledger would store NULL with a note (test below).
    assert recs[2].input_tokens is None or 0 <= recs[2].input_tokens < 2**63
    assert recs[3].prompt == "plain after" and recs[3].repaired is None
    assert vendor.received == 4
    ledger.close()


def test_an_answer_with_a_lone_surrogate_is_cached_as_it_came(vendor: Vendor,
                                                             tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    vendor.text = "half an emoji \ud83d"
    with dispatcher(vendor, ledger, cache=True) as d:
        first = d.send("q", "openai:gpt-4o-mini", temperature=0)
        again = d.send("q", "openai:gpt-4o-mini", temperature=0)
    assert again.cached and again.text == first.text == vendor.text  # the cache is lossless
    assert vendor.received == 1
    assert [r.response for r in ledger.records()] == ["half an emoji \ufffd"] * 2
    ledger.close()


def record(i: int, **kw: Any) -> CallRecord:
    base = CallRecord(call_id=f"call-{i:04d}", attempt=1, timestamp=1_700_000_000.0 + i,
                      vendor="openai", model_requested="gpt-4o-mini", model_served="gpt-4o-mini",
                      status="ok", session="s", latency_s=0.5, input_tokens=3, output_tokens=4,
                      prompt=f"prompt {i}", response=f"answer {i}")
    return dataclasses.replace(base, **kw)


def test_a_row_sqlite_refuses_is_set_aside_alone_and_counted(tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    # A NaN timestamp passes every check in Python; SQLite stores NaN as NULL and the NOT
    # NULL column refuses the row inside the transaction, with 299 good rows around it.
    ledger = Ledger(tmp_path)
    good = [record(i) for i in range(300)]
    bad = record(999, timestamp=float("nan"))
    ledger._writer.linger_s = 1.0  # let the whole burst gather into one batch
    for r in [*good[:150], bad, *good[150:]]:
        ledger.write(r)
    t0 = time.monotonic()
    assert [r.call_id for r in ledger.records()] == [r.call_id for r in good]
    assert time.monotonic() - t0 < 10
    assert ledger.quarantined == 1 and "IntegrityError" in ledger.quarantined_records()[0][0]
    side = tmp_path / "ledger.db.quarantine.jsonl"
    (line,) = side.read_text().splitlines()
    assert json.loads(line)["record"]["call_id"] == "call-0999"
    assert oct(side.stat().st_mode & 0o777) == "0o600"
    assert caplog.text.count("could not store") == 1
    ledger.close()


def test_a_count_past_64_bits_is_stored_as_null_with_a_note() -> None:
    ledger = Ledger.memory()
    ledger.write(record(1, input_tokens=2**70, output_tokens=-(2**64), cost_usd=2**70))
    (r,) = ledger.records()
    assert r.input_tokens is None and r.output_tokens is None and r.cost_usd == 2.0**70
    assert r.repaired == ("input_tokens: 2**70 does not fit 64 bits, stored as NULL; "
                          "output_tokens: -18446744073709551616 does not fit 64 bits, "
                          "stored as NULL")


def test_stats_count_what_was_set_aside(vendor: Vendor, tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    with dispatcher(vendor, ledger) as d:
        d.send("one", "openai:gpt-4o-mini")
        d.ledger.write(record(1, session=d.session, chunks=(("not a time", "x"),)))
        stats = d.stats()
    assert stats["attempts"] == 1 and stats["quarantined"] == 1
    assert ledger.info()["quarantined"] == 1
    ledger.close()
    side = (tmp_path / "ledger.db.quarantine.jsonl").read_bytes()
    assert b"not a time" in side and CANARY_KEY.encode() not in side


# -- the class, fuzzed ------------------------------------------------------------------

POISONS: list[tuple[str, Any]] = [
    ("prompt", "a\ud83d"), ("response", "\udfff b"), ("error_message", "\ud800"),
    ("session", "s\udc80"), ("model_served", "\udbff"), ("request_id", "r\ud800q"),
    ("input_tokens", 2**70), ("output_tokens", -(2**64)), ("reasoning_tokens", 2**63),
    ("http_status", 10**30), ("attempt", 2**64), ("cost_usd", 10**400), ("latency_s", 2**80),
    ("tags", ("ok", "bad\udcff")), ("params", {"stop": ["\ud83d"], "temperature": 0}),
    ("params", {"key\udc00": 1}), ("chunks", ((0.1, "x\ud800"), (0.2, "y"))),
    # Not repairable: set aside.
    ("chunks", (("soon", "x"),)), ("timestamp", float("nan")), ("params", {1: "a", "b": 2}),
]


def test_fuzzed_records_are_all_stored_or_set_aside(tmp_path: Path) -> None:
    rng = random.Random(1414)
    ledger = Ledger(tmp_path)
    written: list[CallRecord] = []
    for i in range(400):
        r = record(i)
        if rng.random() < 0.4:
            for name, value in rng.sample(POISONS, rng.randint(1, 3)):
                r = dataclasses.replace(r, **{name: value})
        written.append(r)
        ledger.write(r)
        if rng.random() < 0.05:
            ledger.flush(timeout=10)  # batches of every size, some of one record
    t0 = time.monotonic()
    stored = ledger.records()
    assert time.monotonic() - t0 < 10
    assert len(stored) + ledger.quarantined == len(written)
    aside = {r.call_id for _, r in ledger.quarantined_records()}
    kept = {r.call_id: r for r in stored}
    for r in written:
        assert (r.call_id in kept) != (r.call_id in aside), r.call_id
        if r.call_id in kept:
            s = kept[r.call_id]
            # Every text reads back as UTF-8 SQLite could store; a repair says so.
            assert (s.prompt or "").encode() and (s.response or "").encode()
            assert bool(s.repaired) == (s.prompt != r.prompt or s.response != r.response
                                        or s.input_tokens != r.input_tokens
                                        or s.tags != r.tags or s.session != r.session
                                        or s.chunks != r.chunks or s.params != r.params
                                        or s.error_message != r.error_message
                                        or s.request_id != r.request_id
                                        or s.model_served != r.model_served
                                        or s.output_tokens != r.output_tokens
                                        or s.reasoning_tokens != r.reasoning_tokens
                                        or s.http_status != r.http_status
                                        or s.attempt != r.attempt or s.cost_usd != r.cost_usd
                                        or s.latency_s != r.latency_s)
    # The column blocks (the analysis path) read every stored row too.
    assert len(ledger.dataframe()) == len(stored)
    ledger.close()


# -- an on_record sink that raises ----------------------------------------------------


def test_a_sink_that_raises_is_logged_once_and_never_breaks_a_call(
        vendor: Vendor, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    seen: list[str] = []

    def broken(record: CallRecord) -> None:
        raise RuntimeError("the dashboard is down")

    ledger = Ledger(tmp_path)
    with dispatcher(vendor, ledger) as d, caplog.at_level(logging.ERROR):
        d.on_record(broken)
        d.on_record(lambda r: seen.append(r.call_id))  # a sink after it still runs
        for _ in range(3):
            assert d.send("hello", "openai:gpt-4o-mini").text == "fine"
    assert len(seen) == 3 and len(ledger.records()) == 3
    assert caplog.text.count("the on_record sink") == 1 and "dashboard is down" in caplog.text
    ledger.close()


# -- the writer's bounds --------------------------------------------------------------


def test_the_writer_never_retries_one_batch_forever() -> None:
    broken = True
    tries: list[list[int]] = []
    stored: list[int] = []
    set_aside: list[list[int]] = []

    def sink(batch: list[int]) -> None:
        tries.append(list(batch))
        if broken:
            raise LedgerError("the store is broken")
        if 13 in batch:
            raise ValueError("13 cannot be stored")
        stored.extend(batch)

    def retry_for(exc: BaseException) -> float | None:
        return 0.2 if isinstance(exc, LedgerError) else None

    w = BatchWriter(sink, name="test-writer", linger_s=0.5, retry_for=retry_for,
                    give_up=lambda batch, exc: set_aside.append(list(batch)))
    w.put(1)
    w.flush(timeout=10)  # answers once the retries are spent
    assert set_aside == [[1]] and w.failing and len(tries) > 1
    before = len(tries)
    w.put(2)
    w.flush(timeout=10)
    assert set_aside[-1] == [2] and len(tries) == before + 1  # one try while still failing
    broken = False
    for i in range(3, 40):
        w.put(i)
    w.flush(timeout=10)
    # The store is back; the batch holding 13 is split down to it, the rest written in order.
    assert stored == [i for i in range(3, 40) if i != 13]
    assert set_aside[-1] == [13] and not w.failing
    assert len(tries) - before - 1 < 2 * 6 + 2  # log2(37) levels of halves, not 37 singles
    w.stop()
