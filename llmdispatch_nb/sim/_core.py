"""What every emulator shares: model profiles, deterministic synthetic text, pacing, and
the fault plan that tests and notebooks script.

The text is synthetic and says so; its length, the time to its first token and its pace
follow per-model profiles so emulated vendors differ the way real ones do. Prices are not
here: the core prices an emulated call from the model's real list price.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
import threading
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ._answers import Question, answer_text

if TYPE_CHECKING:
    from ..catalogue import ModelInfo

# -- model profiles ----------------------------------------------------------------------


def _day(iso: str) -> int:
    """A release date as the Unix time the vendors' model listings show."""
    return int(datetime.fromisoformat(iso).replace(tzinfo=UTC).timestamp())


@dataclass(frozen=True)
class Profile:
    """How a model behaves in the emulator: seconds to first token, tokens per second,
    answer length. Its limits and capabilities (context window, output cap, reasoning,
    which parameters it takes) are the model catalogue's, the same the adapters read; only
    a model the catalogue lacks (a local one) carries its own `window`."""

    served: str  # the model name the vendor reports back (often dated)
    ttft_s: float
    tokens_per_s: float
    answer_tokens: tuple[int, int] = (60, 260)
    window: int | None = None  # the emulator's own context window, for models not catalogued
    jitter: float = 0.15  # +- fraction applied to ttft and to each token gap
    created: int = 1_715_000_000
    vendor: str = ""  # the catalogue vendor whose entry gives the limits (set by PROFILES)
    model: str = ""

    @property
    def info(self) -> ModelInfo:
        """The catalogue's entry for this model (read on first use, not at import)."""
        from ..catalogue import lookup

        return lookup(self.vendor, self.model or self.served, warn=self.window is None)

    @property
    def context_window(self) -> int:
        return self.window if self.window is not None else self.info.context_window

    @property
    def max_output_tokens(self) -> int:
        return self.info.max_output_tokens


def _table(vendor: str, profiles: dict[str, Profile]) -> dict[str, Profile]:
    return {m: replace(p, vendor=vendor, model=m) for m, p in profiles.items()}


# Speeds are the emulator's own (a rough likeness of each model's pace); the model list per
# vendor is what the emulated vendor lists, newest models included, local models only under
# the OpenAI-compatible (Ollama-like) table.
PROFILES: dict[str, dict[str, Profile]] = {
    "openai": _table("openai", {
        "gpt-4o": Profile("gpt-4o-2024-08-06", 0.45, 85, created=1_722_814_719),
        "gpt-4o-mini": Profile("gpt-4o-mini-2024-07-18", 0.35, 110, created=1_721_172_741),
        "gpt-4.1": Profile("gpt-4.1-2025-04-14", 0.50, 75),
        "gpt-4.1-mini": Profile("gpt-4.1-mini-2025-04-14", 0.35, 105),
        "gpt-4.1-nano": Profile("gpt-4.1-nano-2025-04-14", 0.25, 150),
        "o4-mini": Profile("o4-mini-2025-04-16", 1.60, 130, (120, 400)),
        "o3": Profile("o3-2025-04-16", 2.20, 90, (120, 400), created=_day("2025-04-16")),
        "gpt-5": Profile("gpt-5-2025-08-07", 2.00, 80, (120, 400), created=_day("2025-08-07")),
        "gpt-5-mini": Profile("gpt-5-mini-2025-08-07", 1.20, 120, (120, 400), created=_day("2025-08-07")),
        "gpt-5-nano": Profile("gpt-5-nano-2025-08-07", 0.80, 160, (100, 300), created=_day("2025-08-07")),
        "gpt-5.1": Profile("gpt-5.1-2025-11-13", 1.00, 90, (120, 400), created=_day("2025-11-13")),
        "gpt-5.2": Profile("gpt-5.2-2025-12-11", 1.00, 90, (120, 400), created=_day("2025-12-11")),
        "gpt-5.4": Profile("gpt-5.4-2026-03-05", 1.10, 85, (120, 400), created=_day("2026-03-05")),
        "gpt-5.4-mini": Profile("gpt-5.4-mini-2026-03-17", 0.70, 130, (100, 300), created=_day("2026-03-17")),
        "gpt-5.5": Profile("gpt-5.5-2026-04-23", 1.20, 85, (120, 400), created=_day("2026-04-23")),
    }),
    "anthropic": _table("anthropic", {
        "claude-sonnet-4-5": Profile("claude-sonnet-4-5-20250929", 0.80, 62),
        "claude-haiku-4-5": Profile("claude-haiku-4-5-20251001", 0.45, 125),
        "claude-opus-4-1": Profile("claude-opus-4-1-20250805", 1.20, 38),
        "claude-opus-4-5": Profile("claude-opus-4-5-20251101", 1.10, 45, created=_day("2025-11-24")),
        "claude-opus-4-6": Profile("claude-opus-4-6", 1.10, 45, created=_day("2026-02-05")),
        "claude-sonnet-4-6": Profile("claude-sonnet-4-6", 0.75, 65, created=_day("2026-02-17")),
        "claude-opus-4-7": Profile("claude-opus-4-7", 1.00, 50, created=_day("2026-04-16")),
    }),
    "google": _table("google", {
        "gemini-2.5-flash": Profile("gemini-2.5-flash", 0.55, 185),
        "gemini-2.5-pro": Profile("gemini-2.5-pro", 1.40, 95),
        "gemini-2.0-flash": Profile("gemini-2.0-flash", 0.30, 210),
        "gemini-3-pro-preview": Profile("gemini-3-pro-preview", 1.50, 90),
        "gemini-3-flash-preview": Profile("gemini-3-flash-preview", 0.60, 180),
        "gemini-3.1-pro-preview": Profile("gemini-3.1-pro-preview", 1.40, 95),
        "gemini-3.1-flash-lite": Profile("gemini-3.1-flash-lite", 0.35, 220),
        "gemini-3.5-flash": Profile("gemini-3.5-flash", 0.55, 190),
    }),
    # Azure serves OpenAI's models under deployment names the user picks.
    "azure": _table("azure", {
        "gpt-4o": Profile("gpt-4o-2024-08-06", 0.55, 80),
        "gpt-4o-mini": Profile("gpt-4o-mini-2024-07-18", 0.40, 100),
    }),
    # An OpenAI-compatible local server (Ollama-like): quick to start, slow to write. Local
    # models are not in the catalogue, so their windows are the emulator's own.
    "compat": _table("compat", {
        "llama3.2": Profile("llama3.2", 0.15, 45, window=131_072),
        "qwen3:8b": Profile("qwen3:8b", 0.25, 30, window=40_960),
    }),
}


def profile_for(vendor: str, model: str) -> Profile | None:
    return PROFILES.get(vendor, {}).get(model)


# -- synthetic text --------------------------------------------------------------------

# What the answer says and its shape are `_answers.py`'s; here it becomes counted tokens.
_TOKEN = re.compile(r"\s*\S+")


@dataclass(frozen=True)
class Generation:
    tokens: tuple[str, ...]  # each piece is one counted output token
    finish: str  # "stop" or "length"
    input_tokens: int

    @property
    def text(self) -> str:
        return "".join(self.tokens)


def count_tokens(text: str) -> int:
    """The emulator's own token count: about four characters a token."""
    return max(1, (len(text) + 3) // 4) if text else 0


def generate(
    prompt_text: str,
    model: str,
    *,
    vendor: str = "",
    max_tokens: int | None = None,
    stop: Sequence[str] = (),
    seed: int | None = None,
    question: Question | None = None,
) -> Generation:
    """Deterministic for the same prompt, model and seed, so caches and replays can be checked.

    `prompt_text` is everything the request carries (system and every turn, joined): it
    seeds the answer and is what the input is counted from. `question` is what the answer
    responds to (the latest user turn, the shape asked for); without one, the prompt's
    last line is the question. A token is one word with the space or newlines before it."""
    profile = profile_for(vendor, model)
    lo, hi = profile.answer_tokens if profile else (60, 260)
    digest = hashlib.sha256(f"{vendor}|{model}|{seed}|{prompt_text}".encode()).digest()
    rng = random.Random(digest)
    want = rng.randint(lo, hi)
    if question is None or not question.text.strip():
        lines = [line for line in prompt_text.splitlines() if line.strip()]
        question = Question(lines[-1] if lines else "", *(
            (question.instructions, question.shape) if question else ()))
    tokens = _TOKEN.findall(answer_text(question, model, rng, want))
    finish = "stop"
    if stop:
        text = "".join(tokens)
        cut = min((text.index(s) for s in stop if s in text), default=None)
        if cut is not None:
            kept: list[str] = []
            used = 0
            for tok in tokens:
                if used + len(tok) > cut:
                    if cut > used:
                        kept.append(tok[: cut - used])
                    break
                kept.append(tok)
                used += len(tok)
            tokens = kept
    if max_tokens is not None and len(tokens) > max_tokens:
        tokens = tokens[:max_tokens]
        finish = "length"
    return Generation(tuple(tokens), finish, count_tokens(prompt_text))


async def paced(
    tokens: Iterable[str], profile: Profile | None, time_scale: float, rng: random.Random
) -> AsyncIterator[str]:
    """Yield tokens at the profile's pace: the first after ttft, then one every 1/tps.

    Each token is due at a time fixed from the start, as a model's tokens are: a busy
    server loop that wakes late for one token does not push every later one back too
    (with sleeps of one gap each, an answer of 50 tokens on a loop a millisecond late
    per wake came out a tenth slower than its profile)."""
    if profile is None or time_scale <= 0:
        for t in tokens:
            yield t
        return
    j = profile.jitter
    loop = asyncio.get_running_loop()
    due = loop.time() + profile.ttft_s * time_scale * rng.uniform(1 - j, 1 + j)
    gap = time_scale / profile.tokens_per_s
    for t in tokens:
        # Sleep in slices of at least 5 ms: per-token sleeps would measure the loop, not the model.
        wait = due - loop.time()
        if wait >= 0.005:
            await asyncio.sleep(wait)
        yield t
        due += gap * rng.uniform(1 - j, 1 + j)
    wait = due - loop.time()  # the last token takes its time too (as total_time counts it)
    if wait >= 0.005:
        await asyncio.sleep(wait)


def total_time(profile: Profile | None, n_tokens: int, time_scale: float) -> float:
    if profile is None or time_scale <= 0:
        return 0.0
    return (profile.ttft_s + n_tokens / profile.tokens_per_s) * time_scale


# -- faults ----------------------------------------------------------------------------

FAULT_KINDS = (
    "429",  # rate limited, with retry-after (seconds)
    "429-ms",  # rate limited, with retry-after-ms (OpenAI/Azure) or RetryInfo (Gemini)
    "429-long",  # rate limited with retry-after beyond any sane cap (e.g. 3600 s)
    "429-no-retry",  # rate limited with x-should-retry: false
    "quota",  # out of credit / spend limit / per-day quota: a 429 not worth retrying
    "408",
    "409",
    "500",
    "503",
    "529",  # Anthropic overloaded (other vendors answer 503)
    "401",  # authentication failure in the vendor's own shape
    "400",  # invalid request in the vendor's own shape
    "context-length",  # prompt too long for the model
    "content-filter",  # Azure 400 content_filter on the prompt (others: 400)
    "content-filter-output",  # Azure 200 with finish_reason content_filter
    "blocked",  # Gemini 200 with promptFeedback.blockReason (others: content filter)
    "hang",  # accept the connection, send nothing
    "reset",  # reset the connection before any byte
    "midstream-error",  # stream starts, then the vendor's own error event
    "midstream-disconnect",  # stream starts, then the connection drops
    "malformed-json",  # 200 with a body (or stream event) that is not JSON
)
# Faults in what was asked for rather than on the wire: only a request that asks for a
# schema or offers tools meets one (the next such request to the model, when scripted).
CONTENT_FAULT_KINDS = (
    "schema-mismatch",  # a structured answer (or tool arguments) that does not fit its schema
)


@dataclass(frozen=True)
class Fault:
    kind: str
    retry_after: float | None = None  # seconds, for 429/503/529 kinds
    after_tokens: int = 3  # mid-stream kinds: text tokens sent before failing
    hang_s: float = 600.0  # how long "hang" waits before giving up (client usually leaves first)

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS + CONTENT_FAULT_KINDS:
            raise ValueError(f"unknown fault {self.kind!r}; known: "
                             f"{', '.join(FAULT_KINDS + CONTENT_FAULT_KINDS)}")


def as_fault(f: Fault | str) -> Fault:
    return f if isinstance(f, Fault) else Fault(f)


@dataclass
class _Rate:
    probability: float
    kinds: tuple[Fault, ...]
    model: str | None
    rng: random.Random


class FaultPlan:
    """Which responses fail, and how: a script of the next N responses, or a rate.

    Scripts take precedence over rates; a script or rate may be limited to one model.
    `None` in a script means "answer normally". Thread-safe: tests script it from their
    thread while the emulator serves on its own loop.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scripts: dict[str | None, list[Fault | None]] = {}
        self._rates: list[_Rate] = []
        self._content: dict[str | None, list[str]] = {}

    def script(self, *faults: Fault | str | None, model: str | None = None) -> FaultPlan:
        with self._lock:
            for f in faults:
                fault = None if f is None else as_fault(f)
                if fault is not None and fault.kind in CONTENT_FAULT_KINDS:
                    self._content.setdefault(model, []).append(fault.kind)
                else:
                    self._scripts.setdefault(model, []).append(fault)
        return self

    def rate(self, probability: float, *kinds: Fault | str, model: str | None = None,
             seed: int = 0) -> FaultPlan:
        if not 0 <= probability <= 1:
            raise ValueError("probability must be within [0, 1]")
        if not kinds:
            raise ValueError("name at least one fault kind")
        with self._lock:
            self._rates.append(_Rate(probability, tuple(as_fault(k) for k in kinds), model,
                                     random.Random(seed)))
        return self

    def clear(self) -> None:
        with self._lock:
            self._scripts.clear()
            self._rates.clear()
            self._content.clear()

    def content_fault(self, model: str) -> str | None:
        """The content fault scripted for the next request asking for a schema or tools."""
        with self._lock:
            for key in (model, None):
                q = self._content.get(key)
                if q:
                    return q.pop(0)
        return None

    def next_fault(self, model: str) -> Fault | None:
        with self._lock:
            for key in (model, None):
                q = self._scripts.get(key)
                if q:
                    return q.pop(0)
            for r in self._rates:
                if r.model in (None, model) and r.rng.random() < r.probability:
                    return r.rng.choice(r.kinds)
        return None


@dataclass(frozen=True)
class Received:
    """One request an emulator received (auth headers are never kept)."""

    at: float
    method: str
    path: str
    model: str | None
    stream: bool
    fault: str | None
    retry_count: str | None  # x-stainless-retry-count, when an SDK sent it
    body: Any = None  # the JSON body as sent (None if it was not JSON): what a test checks


@dataclass
class RequestLog:
    items: list[Received] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, r: Received) -> None:
        with self._lock:
            self.items.append(r)

    def __len__(self) -> int:
        return len(self.items)

    def chat(self) -> list[Received]:
        """Only the generation requests (not model listings)."""
        return [r for r in self.items if r.model is not None]

    def clear(self) -> None:
        with self._lock:
            self.items.clear()


def stamp() -> float:
    return time.time()
