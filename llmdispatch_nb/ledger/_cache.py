"""The response cache: re-running a cell answers from the ledger's database, not the bill.

    cache = ResponseCache(ledger, ttl_s=None, max_entries=10_000)
    key = key_for("openai", "gpt-4o-mini", request)
    if cache.cacheable(request) and (hit := cache.get(key)):
        ...  # serve hit.text; record it with cost 0, status "cached", hit.latency_s kept
    else:
        cache.put(key, response, chunks=[(0.41, "Hello"), (0.43, " world")])

The key is a sha256 over a canonical JSON of the vendor, the model, the system prompt,
the turns and the sampling parameters (max_tokens, temperature, top_p, stop, seed); tags,
metadata and the end-user id do not change an answer and are left out. By default only
requests that ask for a repeatable answer are cached: temperature 0, or a seed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._types import Request, Response, Usage
from ._errors import LedgerError
from ._repair import replace_surrogates

if TYPE_CHECKING:
    from ._store import Ledger

log = logging.getLogger("llmdispatch_nb.ledger")
KEY_VERSION = 1
Policy = Callable[[Request], bool]
Chunks = tuple[tuple[float, str], ...]


# One encoder for every key: json.dumps with options builds a new encoder per call, which
# cost more than the hash (this runs once per call, on the caller's path).
_canonical = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode


def key_for(vendor: str, model: str, request: Request) -> str:
    """The cache (and replay) key of sending `request` to `vendor`'s `model`."""
    payload = {
        "v": KEY_VERSION,
        "vendor": vendor,
        "model": model,
        "system": request.system,
        # An image or file counts by its hash (its bytes never reach the key's JSON); a turn
        # without one keeps the key it had before attachments existed.
        "messages": [[m.role, m.content, *[a.sha256 or a.url for a in m.attachments]]
                     for m in request.messages],
        "max_tokens": request.max_tokens,
        # 0 and 0.0 ask for the same thing.
        "temperature": None if request.temperature is None else float(request.temperature),
        "top_p": None if request.top_p is None else float(request.top_p),
        "stop": list(request.stop),
        "seed": request.seed,
    }
    if request.reasoning is not None:  # only then: keys of calls without it stay as they were
        payload["reasoning"] = request.reasoning
    if request.schema is not None:  # the same question with a schema is another question
        payload["schema"] = [request.schema.name, request.schema.json_schema]
    text = _canonical(payload)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def cacheable(request: Request) -> bool:
    """The default policy: cache only what asks to be repeatable (temperature 0 or a seed)."""
    return request.temperature == 0 or request.seed is not None


POLICIES: dict[str, Policy] = {
    "deterministic": cacheable,
    "always": lambda request: True,
    "never": lambda request: False,
}


def as_chunks(chunks: Iterable[tuple[float, str]] | None) -> Chunks:
    return tuple((float(o), str(t)) for o, t in chunks or ())


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    """A recorded answer, enough to serve it again: text, usage, timing, stream pieces."""

    key: str
    text: str
    finish_reason: str
    usage: Usage
    model_served: str
    latency_s: float | None
    ttft_s: float | None
    chunks: Chunks = ()  # (seconds since send, text) of a streamed answer, if it was
    vendor: str | None = None
    model_requested: str | None = None
    raw_finish_reason: str | None = None
    created: float = 0.0

    @classmethod
    def from_response(cls, key: str, response: Response,
                      chunks: Iterable[tuple[float, str]] | None = None,
                      created: float | None = None) -> CachedAnswer:
        return cls(key=key, text=response.text, finish_reason=response.finish_reason,
                   usage=response.usage, model_served=response.model,
                   latency_s=response.latency_s, ttft_s=response.ttft_s,
                   chunks=as_chunks(chunks), vendor=response.vendor,
                   model_requested=response.model_requested,
                   raw_finish_reason=response.raw_finish_reason,
                   created=time.time() if created is None else created)

    def to_json(self) -> dict[str, Any]:
        u = self.usage
        return {
            "key": self.key, "text": self.text, "finish_reason": self.finish_reason,
            "raw_finish_reason": self.raw_finish_reason,
            "usage": {"input_tokens": u.input_tokens, "output_tokens": u.output_tokens,
                      "cache_read_tokens": u.cache_read_tokens,
                      "cache_write_tokens": u.cache_write_tokens,
                      "reasoning_tokens": u.reasoning_tokens, "source": u.source},
            "model_served": self.model_served, "vendor": self.vendor,
            "model_requested": self.model_requested, "latency_s": self.latency_s,
            "ttft_s": self.ttft_s, "chunks": [[round(o, 6), t] for o, t in self.chunks],
            "created": self.created,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CachedAnswer:
        u = data.get("usage") or {}
        usage = Usage(input_tokens=int(u.get("input_tokens") or 0),
                      output_tokens=int(u.get("output_tokens") or 0),
                      cache_read_tokens=int(u.get("cache_read_tokens") or 0),
                      cache_write_tokens=int(u.get("cache_write_tokens") or 0),
                      reasoning_tokens=int(u.get("reasoning_tokens") or 0),
                      source="estimated" if u.get("source") == "estimated" else "reported")
        return cls(key=str(data["key"]), text=str(data.get("text") or ""),
                   finish_reason=str(data.get("finish_reason") or "stop"), usage=usage,
                   model_served=str(data.get("model_served") or data.get("model_requested") or ""),
                   latency_s=_opt_float(data.get("latency_s")),
                   ttft_s=_opt_float(data.get("ttft_s")),
                   chunks=as_chunks(data.get("chunks")), vendor=data.get("vendor"),
                   model_requested=data.get("model_requested"),
                   raw_finish_reason=data.get("raw_finish_reason"),
                   created=float(data.get("created") or 0.0))


def _answer_json(data: dict[str, Any]) -> str:
    """The answer as JSON SQLite can store: UTF-8 as it is, unless some text holds a lone
    surrogate, which only an escape (ASCII JSON) keeps; it reads back the same."""
    text = json.dumps(data, ensure_ascii=False)
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            return json.dumps(data)
    return text


def _text(value: str | None) -> str | None:
    return None if value is None else replace_surrogates(value)[0]


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


class ResponseCache:
    """Exact-match answers kept in the ledger's database (table `cache`).

    `ttl_s`: answers older than this are not served (None: kept until evicted).
    `max_entries`: past this, the oldest answers are dropped (None: no limit).
    `policy`: which requests may be cached: "deterministic" (default: temperature 0 or a
    seed), "always", "never", or a function of the `Request`.

    A ledger told not to keep texts (`text="hash"` or `"off"`) gets a cache that keeps
    nothing either: a cached answer is the answer's text on disk.
    """

    def __init__(self, ledger: Ledger | None = None, *, ttl_s: float | None = None,
                 max_entries: int | None = 10_000, policy: str | Policy = "deterministic",
                 clock: Callable[[], float] = time.time) -> None:
        if ledger is None:
            from ._store import default_ledger

            ledger = default_ledger()
        if isinstance(policy, str):
            if policy not in POLICIES:
                raise ValueError(f"cache policy must be one of {', '.join(POLICIES)} or a "
                                 f"function of the request; got {policy!r}")
            policy = POLICIES[policy]
        if ttl_s is not None and ttl_s <= 0:
            raise ValueError("ttl_s must be positive (or None for no expiry)")
        if max_entries is not None and max_entries < 1:
            raise ValueError("max_entries must be at least 1 (or None for no limit)")
        self.ledger = ledger
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.policy: Policy = policy
        self._clock = clock
        self.hits = self.misses = self.expired = self.evicted = 0
        self._told: set[str] = set()  # trouble already logged as a warning

    key_for = staticmethod(key_for)

    @property
    def enabled(self) -> bool:
        return self.ledger.text == "full"

    def cacheable(self, request: Request) -> bool:
        return self.enabled and bool(self.policy(request))

    def get(self, key: str) -> CachedAnswer | None:
        """The answer kept under `key`, or None (missing, expired, or the ledger's store
        is in trouble: a cache must never fail the call it would have saved)."""
        try:
            return self._get(key)
        except Exception as exc:
            self._trouble(exc, "read")
            self.misses += 1
            return None

    def _trouble(self, exc: Exception, doing: str) -> None:
        """Say a store problem once (the ledger's warning); anything else at debug level."""
        from ._trouble import is_store_problem

        if isinstance(exc, LedgerError) or is_store_problem(exc):
            self.ledger._problem(exc)
        else:  # a row that is not an answer, say: once per kind, then quietly
            said = f"{doing} {type(exc).__name__}"
            log.log(logging.DEBUG if said in self._told else logging.WARNING,
                    "the response cache could not %s an answer (%s: %s); the call goes on "
                    "without it", doing, type(exc).__name__, exc)
            self._told.add(said)

    def _get(self, key: str) -> CachedAnswer | None:
        with self.ledger._reading() as conn:
            row = conn.execute("SELECT created, answer FROM cache WHERE key = ?", (key,)).fetchone()
            if row is not None and self._expired(row[0]):
                conn.execute("DELETE FROM cache WHERE key = ? AND created = ?", (key, row[0]))
                self.expired += 1
                row = None
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        return CachedAnswer.from_json(json.loads(row[1]))

    def put(self, key: str, response: Response | CachedAnswer,
            chunks: Iterable[tuple[float, str]] | None = None) -> CachedAnswer:
        """Keep `response` under `key` (replacing what was there); returns the answer as kept
        (not kept at all when the ledger keeps no texts, nor when its store is in trouble:
        the answer was paid for, and the caller gets it either way)."""
        now = self._clock()
        if isinstance(response, CachedAnswer):
            answer = response
            if chunks is not None:
                answer = CachedAnswer.from_json({**answer.to_json(), "chunks": list(chunks)})
        else:
            answer = CachedAnswer.from_response(key, response, chunks, created=now)
        data = {**answer.to_json(), "key": key, "created": now}
        if not self.enabled:
            return CachedAnswer.from_json(data)
        try:
            self._put(key, now, answer, data)
        except Exception as exc:
            self._trouble(exc, "keep")
        return CachedAnswer.from_json(data)

    def _put(self, key: str, now: float, answer: CachedAnswer, data: dict[str, Any]) -> None:
        with self.ledger._reading() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("INSERT OR REPLACE INTO cache (key, created, vendor, model, answer) "
                             "VALUES (?, ?, ?, ?, ?)",
                             (key, now, _text(answer.vendor), _text(answer.model_requested),
                              _answer_json(data)))
                if self.ttl_s is not None:
                    self.expired += conn.execute("DELETE FROM cache WHERE created < ?",
                                                 (now - self.ttl_s,)).rowcount
                if self.max_entries is not None:
                    self.evicted += conn.execute(
                        "DELETE FROM cache WHERE rowid IN (SELECT rowid FROM cache "
                        "ORDER BY created DESC, rowid DESC LIMIT -1 OFFSET ?)",
                        (self.max_entries,)).rowcount
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def clear(self) -> int:
        """Drop every kept answer; returns how many there were."""
        with self.ledger._reading() as conn:
            return int(conn.execute("DELETE FROM cache").rowcount)

    def __bool__(self) -> bool:
        return True  # an empty cache is still a cache (`cache or None` must keep it)

    def __len__(self) -> int:
        with self.ledger._reading() as conn:
            return int(conn.execute("SELECT count(*) FROM cache").fetchone()[0])

    def info(self) -> dict[str, Any]:
        with self.ledger._reading() as conn:
            n, oldest, newest = conn.execute(
                "SELECT count(*), min(created), max(created) FROM cache").fetchone()
        return {"enabled": self.enabled, "entries": n, "oldest": oldest, "newest": newest,
                "ttl_s": self.ttl_s,
                "max_entries": self.max_entries, "hits": self.hits, "misses": self.misses,
                "expired": self.expired, "evicted": self.evicted}

    def _expired(self, created: float) -> bool:
        return self.ttl_s is not None and created < self._clock() - self.ttl_s

    def __repr__(self) -> str:
        return (f"ResponseCache({self.ledger!r}, ttl_s={self.ttl_s}, "
                f"max_entries={self.max_entries})")
