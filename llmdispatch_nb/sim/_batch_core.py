"""What the emulated batch engines share: a clock that runs a "24 h" batch in seconds, the
batch fault plan, uploaded files, and answering each request of a batch through the
emulator's own chat route.

A batch's requests are answered by the same code that answers live calls (a copy of the
emulator with no pacing, called in process over ASGI), so validation, answers, usage and
per-request faults scripted on `emulator.faults` are the live ones. The batch object's
states are then a function of time: `BatchEngine.turnaround_s` emulated seconds from
creation to the end, multiplied by `time_scale` (default: ten emulated minutes in 1.2 s;
0 ends a batch at the first look after its answers are ready).

Batch fault kinds (`emulator.batches.faults.script("failed")`), one per batch created:
    failed   the input is refused while validating (no request is run)
    expired  the window runs out: a part of the requests is answered, the rest expire
    partial  every third request fails with a server error; the batch still completes
"""

from __future__ import annotations

import asyncio
import copy
import json
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

import httpx

BATCH_FAULT_KINDS = ("failed", "expired", "partial")
AUTH_HEADERS = ("authorization", "api-key", "x-api-key", "x-goog-api-key", "anthropic-version",
                "anthropic-beta")


class BatchFaultPlan:
    """The fates of the next batches created (None: a normal batch). Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next: list[str | None] = []

    def script(self, *kinds: str | None) -> BatchFaultPlan:
        for k in kinds:
            if k is not None and k not in BATCH_FAULT_KINDS:
                raise ValueError(f"unknown batch fault {k!r}; known: {', '.join(BATCH_FAULT_KINDS)}")
        with self._lock:
            self._next.extend(kinds)
        return self

    def next(self) -> str | None:
        with self._lock:
            return self._next.pop(0) if self._next else None

    def clear(self) -> None:
        with self._lock:
            self._next.clear()


@dataclass
class Answer:
    """One request's outcome as the live route gave it."""

    status: int
    body: Any
    request_id: str | None


@dataclass
class EmulatedBatch:
    """One batch inside an emulator, whatever the vendor: its requests, answers and fate."""

    id: str
    created: float  # wall clock
    due: float  # wall clock at which the window's work is done
    keys: list[str]  # custom ids (or Gemini keys), in input order
    fault: str | None
    info: dict[str, Any] = field(default_factory=dict)  # vendor fields (endpoint, model...)
    answers: list[Answer] | None = None  # filled when every request has been run
    cancelled_at: float | None = None
    task: Any = None

    def fraction(self, now: float | None = None) -> float:
        """How much of the work is done by now, 0..1, as the clock says."""
        now = time.time() if now is None else now
        span = self.due - self.created
        if span <= 0:
            return 1.0
        return min(1.0, max(0.0, (now - self.created) / span))

    @property
    def ready(self) -> bool:
        return self.answers is not None

    def ended(self, now: float | None = None) -> bool:
        if self.fault == "failed":
            return True
        if self.cancelled_at is not None:
            return True
        return self.ready and (time.time() if now is None else now) >= self.due

    def outcome(self, i: int) -> str:
        """"ok", "error", "expired" or "cancelled" for request `i`, once the batch ended."""
        n = len(self.keys)
        if self.cancelled_at is not None:
            done = int(n * min(1.0, max(0.0, (self.cancelled_at - self.created)
                                         / max(1e-9, self.due - self.created))))
            if i >= done:
                return "cancelled"
        if self.fault == "expired" and i >= n // 2:
            return "expired"
        if self.fault == "partial" and i % 3 == 2:
            return "error"
        assert self.answers is not None
        return "ok" if 200 <= self.answers[i].status < 300 else "error"


class BatchEngine:
    """One emulator's batches and files. `emulator.batches` (made on first use)."""

    def __init__(self, emulator: Any) -> None:
        self.emulator = emulator
        self.turnaround_s = 600.0  # emulated seconds from creation to the end of the work
        self.time_scale = 0.002  # real seconds per emulated second
        self.faults = BatchFaultPlan()
        self.items: dict[str, EmulatedBatch] = {}
        self.files: dict[str, dict[str, Any]] = {}  # id -> {meta, data: bytes}
        self._twin: Any = None
        self._tasks: set[asyncio.Task[None]] = set()

    def clear(self) -> None:
        """Forget every batch and file, and the scripted batch faults (between tests)."""
        self.items.clear()
        self.files.clear()
        self.faults.clear()

    def twin(self) -> Any:
        """The emulator without pacing: a batch's requests are answered at once, the
        batch's clock says when they may be seen."""
        if self._twin is None:
            from starlette.applications import Starlette

            twin = copy.copy(self.emulator)
            twin.time_scale = 0.0
            twin.app = Starlette(routes=twin.routes())
            self._twin = twin
        return self._twin

    def start(self, batch: EmulatedBatch, method: str, paths: Sequence[str],
              bodies: Sequence[Any], headers: Mapping[str, str]) -> None:
        """Run the batch's requests in the background (the create call returns at once)."""
        self.items[batch.id] = batch
        kept = {k: v for k, v in headers.items() if k.lower() in AUTH_HEADERS}
        task = asyncio.get_running_loop().create_task(
            self._run(batch, method, paths, bodies, kept))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: EmulatedBatch, method: str, paths: Sequence[str],
                   bodies: Sequence[Any], headers: Mapping[str, str]) -> None:
        if batch.fault == "failed":
            batch.answers = []
            return
        answers: list[Answer] = []
        transport = httpx.ASGITransport(app=self.twin())  # its own __call__: vendor headers too
        async with httpx.AsyncClient(transport=transport, base_url="http://batch.local") as client:
            for path, body in zip(paths, bodies, strict=True):
                try:
                    r = await client.request(method, path, json=body, headers=headers)
                    try:
                        data = r.json()
                    except ValueError:
                        data = {"error": {"message": "the answer was not JSON", "type": "server_error"}}
                        r.status_code = 500
                    rid = r.headers.get("x-request-id") or r.headers.get("request-id")
                    answers.append(Answer(r.status_code, data, rid))
                except Exception as exc:  # a live fault (reset, hang) becomes this request's error
                    answers.append(Answer(500, {"error": {"message": f"the request failed ({type(exc).__name__})",
                                                          "type": "server_error"}}, None))
                await asyncio.sleep(0)  # the API stays responsive while a big batch runs
        batch.answers = answers

    def new(self, prefix: str, keys: list[str], info: dict[str, Any]) -> EmulatedBatch:
        now = time.time()
        return EmulatedBatch(self.emulator.next_id(prefix), now,
                             now + self.turnaround_s * self.time_scale, keys, self.faults.next(),
                             info)

    def add_file(self, prefix: str, data: bytes, meta: dict[str, Any]) -> dict[str, Any]:
        fid = self.emulator.next_id(prefix)
        entry = {**meta, "id": fid, "bytes": len(data), "created_at": int(time.time())}
        self.files[fid] = {"meta": entry, "data": data}
        return entry


def read_multipart(body: bytes, content_type: str) -> dict[str, tuple[str | None, bytes]]:
    """A multipart/form-data body as name -> (filename, bytes), by the standard library
    (the emulator takes no dependency for one upload route)."""
    msg = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
    out: dict[str, tuple[str | None, bytes]] = {}
    if not msg.is_multipart():
        return out
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True)
        out[name] = (part.get_filename(), payload if isinstance(payload, bytes) else b"")
    return out


def jsonl(lines: Sequence[Any]) -> bytes:
    return b"".join(json.dumps(line, separators=(",", ":")).encode() + b"\n" for line in lines)


def read_jsonl(data: bytes) -> list[Any]:
    return [json.loads(line) for line in data.splitlines() if line.strip()]


def engine(emulator: Any) -> BatchEngine:
    """The emulator's batch engine, made on first use (kept on the emulator)."""
    found = emulator.__dict__.get("batches")
    if found is None:
        found = emulator.__dict__["batches"] = BatchEngine(emulator)
    return found
