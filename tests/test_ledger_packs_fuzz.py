"""Replay packs are shared files, so untrusted: a pack cut short or with any field of the
wrong type loads or raises one `LedgerError` naming file, line and field (a seeded loop of
a few hundred mutations of a valid pack); a replay keeps within the call's deadline; a
written pack is mode 0600."""

from __future__ import annotations

import copy
import json
import random
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from llmdispatch_nb import Dispatcher, Endpoint, Secret, Usage
from llmdispatch_nb._types import CallRecord
from llmdispatch_nb.ledger import (
    CachedAnswer,
    Ledger,
    LedgerError,
    ReplayPack,
    export_pack,
    key_for,
    load_pack,
)
from llmdispatch_nb.resilience import RetryPolicy
from llmdispatch_nb.sim import SimServer
from tests.conftest import CANARY_KEY

HEADER = {"format": "llmdispatch-replay", "version": 1, "created": 1.0, "count": 2,
          "session": "s", "tags": ["demo"]}


def answer(key: str = "k1", chunks: tuple[tuple[float, str], ...] = ((0.1, "Hel"), (0.2, "lo"))
           ) -> CachedAnswer:
    return CachedAnswer(key=key, text="".join(t for _, t in chunks), finish_reason="stop",
                        usage=Usage(5, 7, 1, 0, 2), model_served="gpt-4o-mini-2024",
                        latency_s=0.3, ttft_s=0.1, chunks=chunks, vendor="openai",
                        model_requested="gpt-4o-mini", raw_finish_reason="stop", created=2.0)


def valid_lines() -> list[Any]:
    return [HEADER, answer("k1").to_json(), answer("k2", ((0.0, "Hi"),)).to_json()]


def write(path: Path, lines: list[Any]) -> Path:
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def check_loaded(pack: ReplayPack) -> None:
    """What loaded is what serving needs: the types `serve_recorded` relies on."""
    for a in pack:
        assert isinstance(a.key, str) and isinstance(a.text, str)
        assert isinstance(a.finish_reason, str) and isinstance(a.model_served, str)
        for n in (a.usage.input_tokens, a.usage.output_tokens, a.usage.reasoning_tokens):
            assert type(n) is int and 0 <= n < 2**63
        for v in (a.latency_s, a.ttft_s):
            assert v is None or (isinstance(v, float) and 0 <= v < float("inf"))
        for offset, piece in a.chunks:
            assert 0 <= offset < float("inf") and isinstance(piece, str)


SWAPS: list[Any] = [None, True, 0, -1, 1.5, float("nan"), float("inf"), 2**70, "", "x",
                    [], [1, "a"], {}, {"a": 1}, [[[]]], [["x", 1]], [[1.0]]]


def paths(value: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every place in a JSON value: keys of objects, indexes of lists."""
    yield at
    if isinstance(value, dict):
        for k, v in value.items():
            yield from paths(v, (*at, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from paths(v, (*at, i))


def mutate(rng: random.Random, lines: list[Any]) -> str:
    """A valid pack changed one to three ways: a value swapped for another type, a field
    dropped, a line replaced, the text cut short, or nesting beyond any parser's depth."""
    lines = copy.deepcopy(lines)
    for _ in range(rng.randint(1, 3)):
        kind = rng.random()
        line_no = rng.randrange(len(lines))
        places = [p for p in paths(lines[line_no]) if p]
        if kind < 0.6 and places:
            where = rng.choice(places)
            parent = lines[line_no]
            for step in where[:-1]:
                parent = parent[step]
            if rng.random() < 0.8:
                parent[where[-1]] = copy.deepcopy(rng.choice(SWAPS))
            elif isinstance(parent, dict):
                del parent[where[-1]]
        elif kind < 0.75:
            lines[line_no] = copy.deepcopy(rng.choice(SWAPS))
        elif kind < 0.8:
            lines[line_no] = "DEEP"  # spelled out below: json.dumps cannot nest that deep
    depth = rng.choice((10, 5000))
    text = "".join(json.dumps(x) + "\n" for x in lines).replace(
        '"DEEP"', "[" * depth + "1" + "]" * depth)
    if rng.random() < 0.35:
        text = text[:rng.randrange(len(text) + 1)]
    if rng.random() < 0.05:
        return text.encode()[:-1].decode("utf-8", "ignore") + "\udcff"  # written raw below
    return text


def test_a_valid_pack_loads(tmp_path: Path) -> None:
    pack = load_pack(write(tmp_path / "ok.jsonl", valid_lines()))
    assert len(pack) == 2 and pack.get("k1") == answer("k1")
    check_loaded(pack)


def test_fuzzed_packs_load_or_raise_one_ledger_error(tmp_path: Path) -> None:
    rng = random.Random(14)
    outcomes = {"loaded": 0, "refused": 0}
    for case in range(400):
        text = mutate(rng, valid_lines())
        path = tmp_path / f"case{case}.jsonl"
        path.write_bytes(text.encode("utf-8", "surrogateescape"))
        try:
            pack = load_pack(path)
        except LedgerError as exc:
            outcomes["refused"] += 1
            assert str(path) in str(exc), exc  # names the file (and the line, below)
            continue
        except Exception as exc:  # pragma: no cover - the failure this test is for
            raise AssertionError(f"case {case}: {type(exc).__name__}: {exc}\n{text[:300]!r}") from exc
        outcomes["loaded"] += 1
        check_loaded(pack)
    # Both kinds happen: the mutations are neither all harmless nor all fatal.
    assert outcomes["loaded"] > 20 and outcomes["refused"] > 100, outcomes


@pytest.mark.parametrize(("line", "field"), [
    ({**answer().to_json(), "usage": {"input_tokens": "12"}}, "usage.input_tokens"),
    ({**answer().to_json(), "usage": {"output_tokens": 2**70}}, "usage.output_tokens"),
    ({**answer().to_json(), "usage": [1, 2]}, "usage"),
    ({**answer().to_json(), "chunks": [[float("inf"), "x"]]}, "chunks[0][0]"),
    ({**answer().to_json(), "chunks": [[0.1, "a"], [-5, "b"]]}, "chunks[1][0]"),
    ({**answer().to_json(), "chunks": [[0.1, {"t": 1}]]}, "chunks[0][1]"),
    ({**answer().to_json(), "chunks": "abc"}, "chunks"),
    ({**answer().to_json(), "latency_s": float("nan")}, "latency_s"),
    ({**answer().to_json(), "text": ["a"]}, "text"),
    ({**answer().to_json(), "key": None}, "key"),
    ([1, 2, 3], "(line)"),
])
def test_each_bad_field_is_named_with_file_and_line(tmp_path: Path, line: Any, field: str) -> None:
    path = write(tmp_path / "bad.jsonl", [HEADER, answer("ok").to_json(), line])
    with pytest.raises(LedgerError) as caught:
        load_pack(path)
    assert f"{path}:3: field {field!r}" in str(caught.value)


def test_bytes_that_are_not_utf8_or_json_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_bytes(json.dumps(HEADER).encode() + b"\n{\"key\": \"\xff\"}\n")
    with pytest.raises(LedgerError, match=rf"{path}:2 is not UTF-8"):
        load_pack(path)
    path.write_text(json.dumps(HEADER) + "\n" + "[" * 100_000 + "\n")
    with pytest.raises(LedgerError, match=rf"{path}:2 is not JSON"):
        load_pack(path)
    with pytest.raises(LedgerError, match="cannot read the replay pack"):
        load_pack(tmp_path / "missing.jsonl")


def test_a_written_pack_is_private(tmp_path: Path) -> None:
    ledger = Ledger.memory()
    ledger.write(CallRecord(call_id="c", attempt=1, timestamp=1.0, vendor="openai",
                            model_requested="m", model_served="m", status="ok",
                            response="answer", cache_key="k", tags=("t\udc80ag",)))
    target = tmp_path / "shared.jsonl"
    assert export_pack(target, ledger, tags="t\udc80ag") == 1  # found as the ledger keeps it
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert load_pack(target).header["tags"] == ["t\udc80ag"]  # as asked, escaped
    # A lone surrogate in what the pack says of itself is written as its JSON escape.
    assert export_pack(target, ledger, tags="no\udc80such") == 0
    assert load_pack(target).header["tags"] == ["no\udc80such"]


# -- a replay within the call's deadline --------------------------------------------


def replaying_dispatcher(sim: SimServer, pack: str, deadline_s: float) -> Dispatcher:
    ep = Endpoint("openai", "openai", sim.base_url("openai"), key=Secret(CANARY_KEY),
                  simulated=True)
    return Dispatcher([ep], dotenv=False, ledger=Ledger.memory(), cache=False, replay=pack,
                      retry=RetryPolicy.none(), deadline_s=deadline_s,
                      timeout=httpx.Timeout(2.0, connect=2.0))


def test_a_replay_keeps_within_the_call_deadline(openai_sim: SimServer, tmp_path: Path) -> None:
    # Recorded: a 20 s stall before the second piece. The call allows 1 s.
    path = tmp_path / "slow.jsonl"
    with replaying_dispatcher(openai_sim, str(write(path, [HEADER])), 1.0) as d:
        key = key_for("openai", "gpt-4o-mini", d.request("Tell me", max_tokens=20))
    slow = answer(key, ((0.0, "Once"), (20.0, " upon"), (20.1, " a time")))
    write(path, [HEADER, slow.to_json()])
    with replaying_dispatcher(openai_sim, str(path), 1.0) as d:
        t0 = time.monotonic()
        s = d.stream("Tell me", "openai:gpt-4o-mini", max_tokens=20)
        text = "".join(getattr(ev, "text", "") for ev in s)
        took = time.monotonic() - t0
        assert text == "Once upon a time" and s.response.cached
        assert took < 10, took  # a gross stall only: the recorded gap was 20 s
        (rec,) = d.ledger.records()
        assert rec.original_latency_s == slow.latency_s and rec.latency_s == s.response.latency_s


def test_an_unchecked_infinite_offset_does_not_hang(openai_sim: SimServer, tmp_path: Path) -> None:
    # A pack built in code is not validated; the replay's own caps still hold.
    path = write(tmp_path / "p.jsonl", [HEADER])
    with replaying_dispatcher(openai_sim, str(path), 1.0) as d:
        key = key_for("openai", "gpt-4o-mini", d.request("Go", max_tokens=20))
        d.replay_packs.append(ReplayPack([answer(key, ((float("inf"), "x"), (float("nan"), "y")))]))
        t0 = time.monotonic()
        assert "".join(getattr(ev, "text", "") for ev in d.stream("Go", "openai:gpt-4o-mini",
                                                                   max_tokens=20)) == "xy"
        assert time.monotonic() - t0 < 10
