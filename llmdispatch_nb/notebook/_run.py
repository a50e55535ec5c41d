"""Running one prompt against one or more targets, K times each, as live state.

Each target gets a worker thread that runs its K calls one after another (so the runs of
one target do not slow each other down and their latencies stay comparable); targets run
at the same time. Workers only *post* what happened to one queue; the caller's thread
applies it to the `Column`s and calls `on_update`, at most once per `throttle_s`, then
once more at the end. Display code (the magic, the widget panel) lives in that callback,
so it always runs on the caller's thread.

A call that waits (a Retry-After, a circuit to half-open, a client-side limit; see
`_waits.py`) posts its `Waiting` events too: the run keeps the wait and its end, the
column's status reads "waiting 12 s: why", counting down with an update a second.
"""

from __future__ import annotations

import concurrent.futures
import queue
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._types import Response, TextDelta, Waiting


@dataclass
class Run:
    """One call to one target: its streamed text so far, then a response or an error."""

    target: str
    index: int  # 0-based run number within the target
    text: str = ""
    response: Response | None = None
    error: BaseException | None = None
    started: bool = False
    waiting: Waiting | None = None  # the wait in progress, if one was announced
    wait_since: float = 0.0  # when it was announced, on time.monotonic()
    schema: str | None = None  # the --schema asked for, by name (shown with the verdict)
    tool_run: Any = None  # with --run-tools: the ToolRun (every call and its result)

    @property
    def done(self) -> bool:
        return self.response is not None or self.error is not None

    def wait_line(self, now: float | None = None) -> str | None:
        """The live status of a wait in progress: what for and how long, else None."""
        if self.waiting is None or self.done:
            return None
        return wait_text(self.waiting, self.wait_since, time.monotonic() if now is None else now)

    @property
    def ok(self) -> bool:
        return self.response is not None


def wait_text(w: Waiting, since: float, now: float) -> str:
    """A wait announced at `since` as seen at `now`: the seconds left (or, with no end
    known, so far), what for and why. The magic's status line and the panel's both."""
    if w.seconds is None:
        return f"waiting ({now - since:.0f} s so far) for {w.target}: {w.reason}"
    return f"waiting {max(0.0, since + w.seconds - now):.0f} s for {w.target}: {w.reason}"


@dataclass
class Column:
    """Everything one target produced: its runs, in order."""

    target: str
    repeat: int = 1
    runs: list[Run] = field(default_factory=list)

    @property
    def current(self) -> Run | None:
        return self.runs[-1] if self.runs else None

    @property
    def done(self) -> bool:
        return len(self.runs) == self.repeat and all(r.done for r in self.runs)

    @property
    def responses(self) -> list[Response]:
        return [r.response for r in self.runs if r.response is not None]

    @property
    def errors(self) -> list[BaseException]:
        return [r.error for r in self.runs if r.error is not None]

    @property
    def status(self) -> str:
        current = self.current
        line = current.wait_line() if current is not None else None
        if line is not None:
            return line
        if not self.runs or not any(r.started for r in self.runs):
            return "waiting"
        if not self.done:
            return "streaming" if self.repeat == 1 else f"run {len(self.runs)}/{self.repeat}"
        if not self.responses:
            return "failed"
        return "done" if not self.errors else f"{len(self.errors)}/{self.repeat} failed"

    @property
    def shown(self) -> Run | None:
        """The run whose text the column shows: the one streaming, else the first answer."""
        if not self.done:
            return self.current
        for r in self.runs:
            if r.ok:
                return r
        return self.current

    def stats(self) -> dict[str, Any]:
        """Mean and spread (sample standard deviation) over the answered runs."""
        rs = self.responses
        out: dict[str, Any] = {"runs": len(self.runs), "ok": len(rs), "failed": len(self.errors)}

        def spread(values: Sequence[float]) -> tuple[float | None, float | None]:
            if not values:
                return None, None
            sd = statistics.stdev(values) if len(values) > 1 else None
            return statistics.fmean(values), sd

        out["latency_s"], out["latency_sd"] = spread([r.latency_s for r in rs])
        out["ttft_s"], out["ttft_sd"] = spread([r.ttft_s for r in rs if r.ttft_s is not None])
        out["output_tokens"], out["output_tokens_sd"] = spread(
            [float(r.usage.output_tokens) for r in rs])
        out["input_tokens"], _ = spread([float(r.usage.input_tokens) for r in rs])
        costs = [r.cost.usd for r in rs]
        known = [c for c in costs if c is not None]
        # An unknown price makes the total unknown: never a silent $0.
        out["cost_usd"] = sum(known) if costs and len(known) == len(costs) else None
        out["cached"] = sum(1 for r in rs if r.cached)
        return out


Update = Callable[[list[Column], bool], None]  # (columns, final)

_END = "end"


class Runner:
    """Send `messages` to every target, `repeat` times each, streaming or not."""

    def __init__(self, dispatcher: Any, messages: Any, targets: Sequence[str | None],
                 params: dict[str, Any], *, labels: Sequence[str], repeat: int = 1,
                 stream: bool = True, throttle_s: float = 0.1, run_tools: bool = False,
                 schema: str | None = None) -> None:
        self.dispatcher = dispatcher
        # --run-tools: each run is d.run_tools (rounds of calls, then the answer), not
        # streamed; `schema` names the --schema for the display.
        self.run_tools = run_tools
        self.schema = schema
        self.messages = messages
        self.targets = list(targets)
        self.params = params
        self.repeat = repeat
        self.stream = stream
        self.throttle_s = max(0.0, throttle_s)
        self.columns = [Column(label, repeat) for label in labels]
        self._q: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._cancel = threading.Event()
        self._active: dict[int, Any] = {}  # column -> the Stream it is reading
        self._lock = threading.Lock()

    # -- worker side (never touches the columns) ------------------------------------------

    def _work(self, col: int) -> None:
        target = self.targets[col]
        try:
            for i in range(self.repeat):
                if self._cancel.is_set():
                    break
                self._q.put(("start", col, i))
                self._one(col, i, target)
        finally:
            self._q.put((_END, col))

    def _one(self, col: int, i: int, target: str | None) -> None:
        d = self.dispatcher
        if self.run_tools:
            try:
                done = d.run_tools(self.messages, target, **self.params)
            except BaseException as exc:
                self._q.put(("error", col, i, exc, ""))
            else:
                self._q.put(("tools", col, i, done))
            return
        if not self.stream:
            try:
                # Submitted, not sent and waited for: a cancel (Ctrl-C) must reach the call.
                fut = d.submit(self.messages, target, **self.params,
                               on_wait=lambda w: self._q.put(("wait", col, i, w)))
                with self._lock:
                    self._active[col] = fut
                if self._cancel.is_set():
                    fut.cancel()
                resp = fut.result()
            except BaseException as exc:
                self._q.put(("error", col, i, exc, ""))
            else:
                self._q.put(("done", col, i, resp))
            finally:
                with self._lock:
                    self._active.pop(col, None)
            return
        s = None
        try:
            s = d.stream(self.messages, target, **self.params)
            with self._lock:
                self._active[col] = s
            for ev in s:
                if isinstance(ev, TextDelta) and ev.text:
                    self._q.put(("text", col, i, ev.text))
                elif isinstance(ev, Waiting):
                    self._q.put(("wait", col, i, ev))
            self._q.put(("done", col, i, s.response))
        except BaseException as exc:
            self._q.put(("error", col, i, exc, s.text if s is not None else ""))
        finally:
            with self._lock:
                self._active.pop(col, None)

    # -- caller side --------------------------------------------------------------------

    def _apply(self, msg: tuple[Any, ...]) -> bool:
        kind, col = msg[0], msg[1]
        column = self.columns[col]
        if kind == "start":
            column.runs.append(Run(column.target, msg[2], started=True, schema=self.schema))
        elif kind == "tools":  # a ToolRun: its last answer is the run's
            run = column.runs[msg[2]]
            run.tool_run, run.response, run.text = msg[3], msg[3].response, msg[3].text
        elif kind == "text":
            column.runs[msg[2]].text += msg[3]
        elif kind == "wait":
            run, w = column.runs[msg[2]], msg[3]
            run.waiting = None if w.over else w
            run.wait_since = time.monotonic()
        elif kind == "done":
            run = column.runs[msg[2]]
            run.response = msg[3]
            run.text = msg[3].text
        elif kind == "error":
            run = column.runs[msg[2]]
            run.error = msg[3]
            partial = getattr(msg[3], "partial_text", "") or msg[4]
            run.text = partial or run.text
        return kind == _END

    def run(self, on_update: Update) -> list[Column]:
        threads = [threading.Thread(target=self._work, args=(c,), daemon=True,
                                    name=f"llm-magic-{c}") for c in range(len(self.columns))]
        for t in threads:
            t.start()
        pending = len(threads)
        last = time.monotonic()  # the caller showed its placeholder just now
        dirty = False
        try:
            while pending:
                # Sleep until the next message, or until a held-back update is due.
                wait = 0.25 if not dirty else max(0.001, self.throttle_s - (time.monotonic() - last))
                try:
                    pending -= self._apply(self._q.get(timeout=wait))
                    dirty = True
                except queue.Empty:
                    pass
                now = time.monotonic()
                if not dirty and now - last >= 1.0 and self._waiting():
                    dirty = True  # a wait's countdown moves on once a second
                if dirty and pending and now - last >= self.throttle_s:
                    on_update(self.columns, False)
                    last, dirty = now, False
        except BaseException:
            self.cancel()
            self._drain_after_cancel(threads)
            on_update(self.columns, True)
            raise
        on_update(self.columns, True)
        return self.columns

    def _waiting(self) -> bool:
        return any(c.current is not None and c.current.waiting is not None
                   and not c.current.done for c in self.columns)

    def cancel(self) -> None:
        self._cancel.set()
        with self._lock:
            active = list(self._active.values())
        for s in active:
            if isinstance(s, concurrent.futures.Future):  # a --no-stream call
                s.cancel()
            else:
                s.close()

    def _drain_after_cancel(self, threads: list[threading.Thread]) -> None:
        for t in threads:
            t.join(2.0)
        while True:
            try:
                self._apply(self._q.get_nowait())
            except queue.Empty:
                break
        for column in self.columns:
            for run in column.runs:
                if not run.done:
                    run.error = KeyboardInterrupt("interrupted")
