"""The response cache (keys, policy, hit, miss, expiry, eviction) and replay packs (what
is exported, the round trip, timing kept), on their own and behind a real Dispatcher."""

from __future__ import annotations

import json
import math
from pathlib import Path

import httpx
import pytest

from llmdispatch_nb import Dispatcher, Endpoint, Request, Response, Secret, Usage
from llmdispatch_nb._types import CallRecord
from llmdispatch_nb.ledger import (
    CachedAnswer,
    Ledger,
    LedgerError,
    ResponseCache,
    cacheable,
    export_pack,
    key_for,
    load_pack,
)
from llmdispatch_nb.notebook._display import footer_parts
from llmdispatch_nb.resilience import RetryPolicy
from llmdispatch_nb.sim import SimServer
from tests.conftest import CANARY_KEY


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def response(text: str = "Paris.", **kw: object) -> Response:
    values: dict[str, object] = dict(
        text=text, finish_reason="stop", raw_finish_reason="stop",
        usage=Usage(12, 3, cache_read_tokens=4, reasoning_tokens=1), vendor="openai",
        model="gpt-4o-mini-2024-07-18", model_requested="gpt-4o-mini", latency_s=0.84,
        ttft_s=0.31)
    values.update(kw)
    return Response(**values)  # type: ignore[arg-type]


# -- keys and policy -------------------------------------------------------------------


def test_key_covers_what_changes_an_answer_and_nothing_else() -> None:
    base = Request("What is the capital of France?", temperature=0, max_tokens=20)
    key = key_for("openai", "gpt-4o-mini", base)
    assert len(key) == 64 and key == key_for("openai", "gpt-4o-mini", base)
    same = [
        Request("What is the capital of France?", temperature=0.0, max_tokens=20),
        Request("What is the capital of France?", "openai:gpt-4o-mini", temperature=0,
                max_tokens=20, tags=["demo"], metadata={"cell": "3"}, user="u1"),
    ]
    assert all(key_for("openai", "gpt-4o-mini", r) == key for r in same)
    different = [
        key_for("azure", "gpt-4o-mini", base),
        key_for("openai", "gpt-4o", base),
        key_for("openai", "gpt-4o-mini", Request("What is the capital of Spain?", temperature=0,
                                                 max_tokens=20)),
        key_for("openai", "gpt-4o-mini", Request("What is the capital of France?",
                                                 system="Answer in French.", temperature=0,
                                                 max_tokens=20)),
        key_for("openai", "gpt-4o-mini", Request([{"role": "user", "content": "Hi"},
                                                  {"role": "assistant", "content": "Hello"},
                                                  {"role": "user", "content": "What is the "
                                                   "capital of France?"}],
                                                 temperature=0, max_tokens=20)),
        *(key_for("openai", "gpt-4o-mini", Request("What is the capital of France?", **p))
          for p in ({"temperature": 0, "max_tokens": 21}, {"temperature": 0.2, "max_tokens": 20},
                    {"temperature": 0, "max_tokens": 20, "top_p": 0.5},
                    {"temperature": 0, "max_tokens": 20, "stop": "."},
                    {"temperature": 0, "max_tokens": 20, "seed": 7})),
    ]
    assert key not in different and len(set(different)) == len(different)


def test_default_policy_caches_only_repeatable_requests(tmp_path: Path) -> None:
    assert cacheable(Request("hi", temperature=0))
    assert cacheable(Request("hi", temperature=0.7, seed=3))
    assert not cacheable(Request("hi"))
    assert not cacheable(Request("hi", temperature=0.7))
    ledger = Ledger.memory()
    assert ResponseCache(ledger, policy="always").cacheable(Request("hi"))
    assert not ResponseCache(ledger, policy="never").cacheable(Request("hi", temperature=0))
    assert ResponseCache(ledger, policy=lambda r: "cache me" in r.prompt_text).cacheable(
        Request("please cache me"))
    with pytest.raises(ValueError, match="deterministic"):
        ResponseCache(ledger, policy="sometimes")


# -- the cache -------------------------------------------------------------------------


def test_hit_miss_and_what_an_answer_keeps(tmp_path: Path) -> None:
    cache = ResponseCache(Ledger(tmp_path))
    assert cache and len(cache) == 0  # empty, yet a cache (`cache or None` keeps it)
    key = key_for("openai", "gpt-4o-mini", Request("capital?", temperature=0))
    assert cache.get(key) is None
    cache.put(key, response(), chunks=[(0.31, "Par"), (0.52, "is.")])
    hit = cache.get(key)
    assert hit is not None
    assert (hit.key, hit.text, hit.finish_reason, hit.model_served) == (
        key, "Paris.", "stop", "gpt-4o-mini-2024-07-18")
    assert hit.usage == Usage(12, 3, cache_read_tokens=4, reasoning_tokens=1)
    assert (hit.latency_s, hit.ttft_s) == (0.84, 0.31)
    assert hit.chunks == ((0.31, "Par"), (0.52, "is."))
    assert (hit.vendor, hit.model_requested) == ("openai", "gpt-4o-mini")
    # Another kernel on the same file sees it.
    assert ResponseCache(Ledger(tmp_path)).get(key) == hit
    info = cache.info()
    assert (info["entries"], info["hits"], info["misses"]) == (1, 1, 1)
    assert len(cache) == 1 and cache.clear() == 1 and cache.get(key) is None


def test_answers_expire_after_ttl() -> None:
    clock = Clock()
    cache = ResponseCache(Ledger.memory(), ttl_s=60, clock=clock)
    cache.put("k1", response())
    clock.now += 59
    assert cache.get("k1") is not None
    clock.now += 2
    assert cache.get("k1") is None
    assert cache.info()["expired"] == 1 and len(cache) == 0
    # Expired answers are swept when new ones arrive.
    cache.put("k2", response())
    clock.now += 61
    cache.put("k3", response())
    assert len(cache) == 1


def test_oldest_answers_are_evicted_past_max_entries() -> None:
    clock = Clock()
    cache = ResponseCache(Ledger.memory(), max_entries=3, clock=clock)
    for i in range(5):
        clock.now += 1
        cache.put(f"k{i}", response(f"answer {i}"))
    assert [cache.get(f"k{i}") is not None for i in range(5)] == [False, False, True, True, True]
    assert cache.info()["evicted"] == 2
    clock.now += 1
    cache.put("k2", response("newer answer 2"))  # replacing keeps one entry, now the newest
    clock.now += 1
    cache.put("k5", response("answer 5"))
    assert [cache.get(f"k{i}") is not None for i in range(6)] == [
        False, False, True, False, True, True]
    assert cache.get("k2").text == "newer answer 2"  # type: ignore[union-attr]


@pytest.mark.parametrize("text", ["hash", "off"])
def test_a_ledger_that_keeps_no_text_keeps_no_answers(text: str) -> None:
    cache = ResponseCache(Ledger.memory(text=text), policy="always")
    assert not cache.enabled and not cache.cacheable(Request("hi", temperature=0))
    cache.put("k", response())
    assert cache.get("k") is None and len(cache) == 0


def test_cache_rejects_nonsense_limits() -> None:
    with pytest.raises(ValueError):
        ResponseCache(Ledger.memory(), ttl_s=0)
    with pytest.raises(ValueError):
        ResponseCache(Ledger.memory(), max_entries=0)


# -- replay packs ----------------------------------------------------------------------


def recorded(i: int, **kw: object) -> CallRecord:
    values: dict[str, object] = dict(
        call_id=f"c{i}", attempt=1, timestamp=1_700_000_000.0 + i, vendor="openai",
        model_requested="gpt-4o-mini", model_served="gpt-4o-mini-2024-07-18", status="ok",
        session="nb1", streamed=True, latency_s=1.234567 + i, ttft_s=0.456789,
        input_tokens=11, output_tokens=2, cache_read_tokens=3, usage_source="reported",
        finish_reason="stop", tags=("demo",), cache_key=f"key{i}", prompt=f"q{i}",
        response=f"answer {i}", chunks=((0.456789, "answer"), (1.2, f" {i}")))
    values.update(kw)
    return CallRecord(**values)  # type: ignore[arg-type]


def test_pack_round_trip_keeps_text_usage_and_timing(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    originals = [recorded(i) for i in range(3)]
    for r in originals:
        ledger.write(r)
    path = tmp_path / "demo.jsonl"
    assert export_pack(path, ledger) == 3
    pack = load_pack(path)
    assert len(pack) == 3 and pack.header["format"] == "llmdispatch-replay"
    for r in originals:
        answer = pack.get(r.cache_key or "")
        assert answer is not None and answer.text == r.response
        assert answer.usage == Usage(11, 2, cache_read_tokens=3)
        assert answer.model_served == r.model_served and answer.finish_reason == "stop"
        assert math.isclose(answer.latency_s or 0, r.latency_s or 0, abs_tol=1e-6)
        assert math.isclose(answer.ttft_s or 0, r.ttft_s or 0, abs_tol=1e-6)
        assert len(answer.chunks) == len(r.chunks)
        for (o1, t1), (o2, t2) in zip(answer.chunks, r.chunks, strict=True):
            assert t1 == t2 and math.isclose(o1, o2, abs_tol=1e-6)
    assert pack.get("nope") is None


def test_pack_chooses_calls_and_keeps_only_replayable_ones(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    for r in [recorded(0), recorded(1, session="nb2", tags=("other",)),
              recorded(2, status="error", response=None), recorded(3, cache_key=None),
              recorded(4, cache_key="key0", response="a newer answer 0",
                       timestamp=1_800_000_000.0)]:
        ledger.write(r)
    assert export_pack(tmp_path / "all.jsonl", ledger) == 2
    assert load_pack(tmp_path / "all.jsonl").get("key0").text == "a newer answer 0"  # type: ignore[union-attr]
    assert export_pack(tmp_path / "nb2.jsonl", ledger, session="nb2") == 1
    assert load_pack(tmp_path / "nb2.jsonl").keys() == ["key1"]
    assert export_pack(tmp_path / "demo.jsonl", ledger, tags="demo") == 1
    assert export_pack(tmp_path / "ids.jsonl", ledger, call_ids=["c1"]) == 1


def test_pack_needs_full_text_and_a_pack_file(tmp_path: Path) -> None:
    hashed = Ledger(tmp_path / "h", text="hash")
    hashed.write(recorded(0))
    with pytest.raises(LedgerError, match="text='hash'"):
        export_pack(tmp_path / "x.jsonl", hashed)
    not_a_pack = tmp_path / "notes.jsonl"
    not_a_pack.write_text(json.dumps({"hello": 1}) + "\n")
    with pytest.raises(LedgerError, match="not a replay pack"):
        load_pack(not_a_pack)
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_text("{not json\n")
    with pytest.raises(LedgerError, match="not JSON"):
        load_pack(garbage)


def test_cached_answer_json_round_trip() -> None:
    answer = CachedAnswer.from_response("k", response(), [(0.1, "a"), (0.2, "b")], created=5.0)
    assert CachedAnswer.from_json(json.loads(json.dumps(answer.to_json()))) == answer


# -- behind a real Dispatcher ----------------------------------------------------------


def make_dispatcher(sim: SimServer, ledger: Ledger, **kw: object) -> Dispatcher:
    ep = Endpoint("openai", "openai", sim.base_url("openai"), key=Secret(CANARY_KEY),
                  simulated=True)
    return Dispatcher([ep], dotenv=False, ledger=ledger, retry=RetryPolicy.none(),
                      timeout=httpx.Timeout(2.0, connect=2.0), **kw)  # type: ignore[arg-type]


def test_a_repeated_deterministic_call_is_answered_from_the_cache(
        openai_sim: SimServer, tmp_path: Path) -> None:
    emu = openai_sim.emulators["openai"]
    emu.reset()
    ledger = Ledger(tmp_path)
    with make_dispatcher(openai_sim, ledger) as d:
        first = d.send("Name a river.", "openai:gpt-4o-mini", temperature=0, max_tokens=20)
        again = d.send("Name a river.", "openai:gpt-4o-mini", temperature=0, max_tokens=20)
        d.send("Name a river.", "openai:gpt-4o-mini", max_tokens=20)  # not repeatable: sent
    assert emu.count == 2
    assert again.text == first.text and again.cached
    recs = ledger.records()
    assert [r.status for r in recs] == ["ok", "cached", "ok"]
    hit = recs[1]
    # The hit's own latency (what this call waited); the original's in its own column.
    assert hit.cache_hit and hit.cost_usd == 0 and hit.original_latency_s == recs[0].latency_s
    assert hit.latency_s == again.latency_s and hit.latency_s != recs[0].latency_s
    # The trail says the answer was served, not retried (the footer read "retried").
    assert [a.status for a in again.attempts] == ["ok"]
    assert "retried" not in footer_parts(again) and "cached" in footer_parts(again)
    assert hit.cache_key == recs[0].cache_key
    assert ResponseCache(ledger).info()["entries"] == 1


def test_a_pack_recorded_with_a_key_replays_with_none(openai_sim: SimServer,
                                                      tmp_path: Path) -> None:
    emu = openai_sim.emulators["openai"]
    emu.reset()
    ledger = Ledger(tmp_path / "recorded")
    with make_dispatcher(openai_sim, ledger, cache=False) as d:
        streamed = d.stream("Tell me a story.", "openai:gpt-4o-mini", max_tokens=30,
                            tags=["demo"])
        pieces = [ev.text for ev in streamed if getattr(ev, "kind", "") == "text"]
        original = streamed.response
        d.send("Not for the demo.", "openai:gpt-4o-mini", max_tokens=30)
    pack = tmp_path / "demo.jsonl"
    assert export_pack(pack, ledger, tags="demo") == 1
    assert CANARY_KEY not in pack.read_text()
    (rec,) = ledger.records(tags="demo")
    answer = load_pack(pack).get(rec.cache_key or "")
    assert answer is not None and [t for _, t in answer.chunks] == pieces
    assert answer.latency_s == pytest.approx(original.latency_s, abs=1e-6)

    # Replayed: the emulator is not asked again, and the text comes back piece by piece.
    before = emu.count
    with make_dispatcher(openai_sim, Ledger(tmp_path / "binder"), cache=False,
                         replay=str(pack)) as binder:
        again = binder.stream("Tell me a story.", "openai:gpt-4o-mini", max_tokens=30)
        assert [ev.text for ev in again if getattr(ev, "kind", "") == "text"] == pieces
        assert again.response.text == original.text and again.response.cached
    assert emu.count == before
