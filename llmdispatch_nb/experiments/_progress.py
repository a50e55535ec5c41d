"""A sweep's progress: done, failed and spend, as a widget in a notebook kernel or a text
line elsewhere. Both are optional (`progress=False`), and neither imports IPython into a
process that has not already loaded it.

Updates come from the dispatcher's loop thread; they are throttled so a 10,000-run sweep
does not spend its time redrawing (ipywidgets sends each change to the browser).
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from ..resilience import money


class Progress:
    """Counts runs as they finish; `show` draws at most every `every_s` seconds."""

    def __init__(self, total: int, label: str, every_s: float = 0.2) -> None:
        self.total = total
        self.label = label
        self.done = 0
        self.failed = 0
        self.not_run = 0
        self.spent = 0.0
        self.every_s = every_s
        self._last = 0.0

    def add(self, status: str, spent: float | None = None) -> None:
        self.done += 1
        if status == "error":
            self.failed += 1
        elif status == "not_run":
            self.not_run += 1
        if spent:
            self.spent += spent
        now = time.monotonic()
        if now - self._last >= self.every_s or self.done == self.total:
            self._last = now
            self.show()

    def line(self) -> str:
        parts = [f"{self.done}/{self.total} done", f"{self.failed} failed"]
        if self.not_run:
            parts.append(f"{self.not_run} not run")
        parts.append(f"{money(self.spent)} spent")
        return f"{self.label}: " + " · ".join(parts)

    def show(self) -> None:
        pass

    def close(self) -> None:
        self.show()


class TextProgress(Progress):
    """One line, redrawn in place on a terminal; on a pipe, a line every few seconds."""

    def __init__(self, total: int, label: str, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        super().__init__(total, label, every_s=0.2 if self.tty else 5.0)

    def show(self) -> None:
        if self.tty:
            self.stream.write("\r" + self.line())
        elif self.done < self.total:
            self.stream.write(self.line() + "\n")
        self.stream.flush()

    def close(self) -> None:
        self.stream.write(("\r" if self.tty else "") + self.line() + "\n")
        self.stream.flush()


class WidgetProgress(Progress):
    def __init__(self, total: int, label: str) -> None:
        super().__init__(total, label)
        import ipywidgets as w
        from IPython.display import display

        self.bar = w.IntProgress(value=0, min=0, max=max(1, total), description="sweep",
                                 bar_style="info")
        self.text = w.HTML(value=self.line())
        display(w.HBox([self.bar, self.text]))

    def show(self) -> None:
        self.bar.value = self.done
        self.text.value = self.line()

    def close(self) -> None:
        self.show()
        self.bar.bar_style = "danger" if self.failed or self.not_run else "success"


def in_kernel() -> bool:
    """Running in a Jupyter kernel (not a terminal IPython, not a script)?"""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    shell: Any = ipython.get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def make_progress(show: bool | Progress, total: int, label: str) -> Progress:
    if isinstance(show, Progress):
        return show
    if not show:
        return Progress(total, label)
    if in_kernel():
        try:
            return WidgetProgress(total, label)
        except Exception:  # widgets unavailable or not displayable: fall back to text
            pass
    return TextProgress(total, label)
