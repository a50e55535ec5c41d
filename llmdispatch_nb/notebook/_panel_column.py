"""One live column of the panel: a target's streamed answer with its own stats and Cancel.

The column's state is written by the thread that consumes its stream and read by the
thread that renders it; the lock guards the hand-over. Widgets are only written by
`render`, at most once per `min_interval` seconds while text flows (each write is a comm
message to the browser, and a fast model sends a hundred pieces a second).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import html
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal

import ipywidgets as widgets

from .._stream import Stream
from .._types import Response, TextDelta, Usage, UsageUpdate, Waiting, estimate_tokens
from ..errors import MidStreamError, redact
from ._display import markdown_html
from ._escape import html_block
from ._run import wait_text
from ._structured_view import structured_html

ColumnStatus = Literal["waiting", "streaming", "done", "error", "cancelled"]
FINAL: tuple[ColumnStatus, ...] = ("done", "error", "cancelled")

_STATUS_COLOURS: dict[str, str] = {
    "waiting": "#777", "streaming": "#1565c0", "done": "#2e7d32", "error": "#b00020",
    "cancelled": "#8d6e00",
}

# Opens one stream; `Panel` passes `dispatcher.stream` bound to the prompt and parameters.
StartStream = Callable[[str], Stream]


def seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f} s"


def dollars(value: float | None) -> str:
    if value is None:
        return "cost unknown"
    return f"${value:.6f}" if value < 0.01 else f"${value:.4f}"


class Column:
    """The state and widgets of one target in a run (`repeat` calls, one after another)."""

    def __init__(self, target: str, *, repeat: int = 1, simulated: bool = False,
                 min_interval: float = 0.1) -> None:
        self.target = target
        self.repeat = repeat
        self.simulated = simulated
        self.min_interval = min_interval
        self.status: ColumnStatus = "waiting"
        self.run_number = 0  # 1-based: which of the `repeat` calls is showing
        self.responses: list[Response] = []
        self.error: str | None = None
        self.renders = 0
        self._parts: list[str] = []
        self._usage: Usage | None = None
        self._started: float | None = None  # perf_counter at the current call's start
        self._first_text: float | None = None
        self._wait: tuple[Waiting, float] | None = None  # a wait in progress, since (monotonic)
        self._stream: Stream | None = None
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._dirty = True
        self._last_render = float("-inf")

        self.title = widgets.HTML(layout=widgets.Layout(flex="1 1 auto"))
        self.body = widgets.HTML()
        self.stats = widgets.HTML()
        self.cancel_button = widgets.Button(description="Cancel", icon="stop",
                                            tooltip=f"Stop the call to {target}",
                                            layout=widgets.Layout(width="auto", flex="0 0 auto"))
        self.cancel_button.add_class("llmd-cancel")
        self.cancel_button.on_click(lambda _b: self.cancel())
        self.box = widgets.VBox(
            [widgets.HBox([self.title, self.cancel_button],
                          layout=widgets.Layout(justify_content="space-between",
                                                align_items="center")),
             self.body, self.stats],
            layout=widgets.Layout(flex="1 1 0", min_width="220px", border="1px solid #ccc",
                                  padding="6px", margin="2px"))
        self.box.add_class("llmd-column")
        self.body.add_class("llmd-text")
        self.stats.add_class("llmd-stats")
        self.render(force=True)

    # -- what the consuming thread calls -----------------------------------------------

    @property
    def text(self) -> str:
        with self._lock:
            return "".join(self._parts)

    @property
    def finished(self) -> bool:
        return self.status in FINAL

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    def consume(self, start: StartStream) -> None:
        """Run the column's calls to the end (in a worker thread); never raises."""
        try:
            for number in range(1, self.repeat + 1):
                if self._cancel.is_set():
                    self._set_final("cancelled")
                    return
                self._begin(number)
                stream = start(self.target)
                if not self._attach(stream):
                    self._set_final("cancelled")
                    return
                for event in stream:
                    self._take(event)
                assert stream.response is not None
                self._finish_call(stream.response)
            self._set_final("done")
        except (concurrent.futures.CancelledError, asyncio.CancelledError):
            self._set_final("cancelled")
        except MidStreamError as exc:
            self._fail(exc, partial=exc.partial_text)
        except Exception as exc:  # a failure of any kind belongs in the column, not a traceback
            self._fail(exc)
        finally:
            with self._lock:
                self._stream = None

    def cancel(self) -> None:
        """Stop this column's call (from any thread); the consumer sees it and ends."""
        self._cancel.set()
        with self._lock:
            stream = self._stream
        if stream is not None:
            stream.close()

    def _begin(self, number: int) -> None:
        with self._lock:
            self.run_number = number
            self.status = "streaming"
            self._parts = []
            self._usage = None
            self._started = time.perf_counter()
            self._first_text = None
            self._wait = None
            self._dirty = True

    def _attach(self, stream: Stream) -> bool:
        with self._lock:
            self._stream = stream
        # A cancel that landed while the stream was being opened is honoured here.
        if self._cancel.is_set():
            stream.close()
            return False
        return True

    def _take(self, event: Any) -> None:
        with self._lock:
            if isinstance(event, TextDelta):
                if self._first_text is None:
                    self._first_text = time.perf_counter()
                self._parts.append(event.text)
            elif isinstance(event, UsageUpdate):
                self._usage = event.usage
            elif isinstance(event, Waiting):
                self._wait = None if event.over else (event, time.monotonic())
            self._dirty = True

    def _finish_call(self, response: Response) -> None:
        with self._lock:
            self.responses.append(response)
            self._parts = [response.text]
            self._usage = response.usage
            self._dirty = True

    def _fail(self, exc: BaseException, partial: str | None = None) -> None:
        with self._lock:
            if partial and not "".join(self._parts):
                self._parts = [partial]
            self.error = redact(f"{type(exc).__name__}: {exc}", 800)
        self._set_final("error")

    def _set_final(self, status: ColumnStatus) -> None:
        with self._lock:
            self.status = status
            self._dirty = True

    # -- what the rendering thread calls -----------------------------------------------

    def render(self, now: float | None = None, *, force: bool = False) -> bool:
        """Push the state to the widgets if it changed and the last push is old enough.

        Returns whether the widgets were written. `force` skips the interval (final state).
        """
        now = time.perf_counter() if now is None else now
        with self._lock:
            if self._wait is not None and self.status == "streaming" and now - self._last_render >= 1.0:
                self._dirty = True  # a wait's countdown moves on once a second
            if not self._dirty:
                return False
            if not force and now - self._last_render < self.min_interval:
                return False
            self._dirty = False
            self._last_render = now
            title, body, stats = self._title_html(), self._body_html(), self._stats_html(now)
        # Writing a widget value sends a message; do it outside the lock.
        if self.title.value != title:
            self.title.value = title
        if self.body.value != body:
            self.body.value = body
        if self.stats.value != stats:
            self.stats.value = stats
        self.cancel_button.disabled = self.finished
        self.renders += 1
        return True

    def _title_html(self) -> str:
        vendor, _, model = self.target.partition(":")
        badges: list[str] = [self.status]
        if self.repeat > 1:
            badges.append(f"run {max(self.run_number, 1)}/{self.repeat}")
        if self.simulated:
            badges.append("simulated")
        colour = _STATUS_COLOURS[self.status]
        name = f"<b>{html.escape(vendor)}</b>" + (f":{html.escape(model)}" if model else "")
        tags = " ".join(
            f"<span class='llmd-badge' style='font-size:85%;color:{colour if b == self.status else '#555'}'>"
            f"[{html.escape(b)}]</span>" for b in badges)
        return html_block(f"{name} {tags}", "line-height:1.4", tag="span").replace(
            ' class="', ' class="llmd-title ', 1)

    def _body_html(self) -> str:
        # Answers are Markdown (lists, bold, code blocks), as in the %%llm grid: rendered
        # with the grid's renderer, which escapes raw HTML (plain text while none is there).
        text = "".join(self._parts)
        body = markdown_html(text) if text.strip() else ""
        out = (f"<div class='llmd-answer' style='word-break:break-word;max-height:22em;"
               f"overflow:auto;font-size:92%;line-height:1.45'>{body}</div>")
        if self.status == "error" and self.error:
            out += (f"<div class='llmd-error' style='color:#b00020;white-space:pre-wrap'>"
                    f"{html.escape(self.error)}</div>")
        elif self.status == "cancelled":
            out += "<div class='llmd-cancelled' style='color:#8d6e00'>cancelled</div>"
        if self.responses:  # a schema's parsed table and verdict, the tool calls made
            out += structured_html(self.responses[-1])
        return html_block(out)  # MathJax would pair the dollar signs of an answer

    def _stats_html(self, now: float) -> str:
        fields = self.stat_fields(now)
        cells = " · ".join(f"{html.escape(k)} {html.escape(v)}" for k, v in fields.items())
        return html_block(cells, "font-size:85%;color:#444;line-height:1.4")

    def stat_fields(self, now: float | None = None) -> dict[str, str]:
        """The numbers under the text: the finished call's, or the live ones while streaming."""
        if self.status == "streaming" or not self.responses:
            return self._live_fields(time.perf_counter() if now is None else now)
        last = self.responses[-1]
        fields = {
            "latency": seconds(last.latency_s),
            "ttft": seconds(last.ttft_s),
            "tokens": _tokens(last.usage),
            "cost": dollars(last.cost.usd),
        }
        if len(self.responses) > 1:
            mean = sum(r.latency_s for r in self.responses) / len(self.responses)
            costs = [r.cost.usd for r in self.responses]
            total = None if any(c is None for c in costs) else sum(c for c in costs if c is not None)
            fields[f"{len(self.responses)} runs: mean latency"] = seconds(mean)
            fields["total cost"] = dollars(total)
        return fields

    def _live_fields(self, now: float) -> dict[str, str]:
        if self._started is None:
            return {"latency": "–", "ttft": "–", "tokens": "–", "cost": "–"}
        ttft = None if self._first_text is None else self._first_text - self._started
        if self._usage is not None:
            tokens = _tokens(self._usage)
        else:
            tokens = f"~{estimate_tokens(''.join(self._parts))} out"
        fields = {"elapsed": seconds(now - self._started), "ttft": seconds(ttft),
                  "tokens": tokens, "cost": "–"}
        if self._wait is not None and self.status == "streaming":
            fields["status"] = wait_text(*self._wait, time.monotonic())
        return fields

    def summary(self) -> Mapping[str, Any]:
        """What a test or a caller may want to know about the column, as plain data."""
        return {"target": self.target, "status": self.status, "text": self.text,
                "error": self.error, "calls": len(self.responses)}


def _tokens(usage: Usage) -> str:
    mark = "~" if usage.source == "estimated" else ""
    return f"{mark}{usage.input_tokens} in / {mark}{usage.output_tokens} out"
