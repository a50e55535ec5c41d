"""Shared pieces of the magic tests: a real InteractiveShell whose display publisher
records every publish (so streaming updates can be counted), and dispatchers on the
emulators. No tests here."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from IPython.core.displaypub import DisplayPublisher
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from traitlets.config import Config

import llmdispatch_nb
from llmdispatch_nb import CallRecord, Dispatcher

ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class Published:
    data: dict[str, Any]
    metadata: dict[str, Any]
    display_id: str | None
    update: bool


class RecordingPublisher(DisplayPublisher):
    """Keeps every display/update the shell publishes instead of printing it."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.calls: list[Published] = []

    def publish(self, data: Any, metadata: Any = None, source: Any = None, *,  # type: ignore[override]
                transient: Any = None, update: bool = False, **kwargs: Any) -> None:
        display_id = (transient or {}).get("display_id")
        self.calls.append(Published(dict(data), dict(metadata or {}), display_id, update))

    def clear_output(self, wait: bool = False) -> None:
        self.calls.append(Published({}, {}, None, False))

    def updates(self) -> list[Published]:
        return [c for c in self.calls if c.update]

    def last(self) -> Published:
        assert self.calls, "nothing was displayed"
        return self.calls[-1]


@dataclass
class CellRun:
    success: bool
    stdout: str
    stderr: str
    published: list[Published] = field(default_factory=list)
    error: BaseException | None = None

    @property
    def error_lines(self) -> list[str]:
        return [line for line in ANSI.sub("", self.stdout + self.stderr).splitlines()
                if line.startswith("llm error:")]

    @property
    def last_data(self) -> dict[str, Any]:
        assert self.published, "nothing was displayed"
        return self.published[-1].data


class Notebook:
    """The shell plus helpers: run a cell, read what it showed."""

    def __init__(self, shell: InteractiveShell) -> None:
        self.shell = shell
        self.pub = RecordingPublisher(shell=shell)
        shell.display_pub = self.pub

    @property
    def ns(self) -> dict[str, Any]:
        return self.shell.user_ns

    @property
    def magics(self) -> Any:
        from llmdispatch_nb.notebook import LLMMagics

        return next(c for c in self.shell.configurables if isinstance(c, LLMMagics))

    def run(self, source: str) -> CellRun:
        before = len(self.pub.calls)
        with capture_output(display=False) as cap:  # displays go to self.pub
            result = self.shell.run_cell(source, store_history=True)
        err = result.error_in_exec or result.error_before_exec
        return CellRun(result.success, cap.stdout, cap.stderr, self.pub.calls[before:], err)

    def cell(self, line: str, body: str) -> CellRun:
        return self.run(f"%%llm {line}\n{body}")


@pytest.fixture(scope="module")
def shell(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InteractiveShell]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IPYTHONDIR", str(tmp_path_factory.mktemp("ipython")))
        config = Config()
        config.HistoryManager.hist_file = ":memory:"
        sh = InteractiveShell.instance(config=config)
        sh.run_cell("%load_ext llmdispatch_nb")
        yield sh


@pytest.fixture
def nb(shell: InteractiveShell) -> Iterator[Notebook]:
    notebook = Notebook(shell)
    m = notebook.magics
    saved = {name: getattr(m, name) for name in m.traits(config=True)
             if name not in ("config", "parent", "log")}
    m.chats.reset()
    yield notebook
    for name, value in saved.items():
        setattr(m, name, value)
    for name in ("_llm", "answer", "x", "cfg"):
        shell.user_ns.pop(name, None)
    llmdispatch_nb.set_default(None)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dispatcher]:
    """Every emulated vendor, instant (time_scale 0), with its own data dir."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLMDISPATCH_HOME", str(tmp_path_factory.mktemp("ldhome")))
        with Dispatcher(demo=True, dotenv=False, sim_time_scale=0) as d:
            yield d


@pytest.fixture
def d(demo: Dispatcher, nb: Notebook) -> Iterator[Dispatcher]:
    for emulator in demo.sim.emulators.values():
        emulator.reset()
    llmdispatch_nb.set_default(demo)
    yield demo


@pytest.fixture
def records(d: Dispatcher) -> list[CallRecord]:
    seen: list[CallRecord] = []
    d.on_record(seen.append)
    return seen


def no_traceback(run: CellRun) -> None:
    text = run.stdout + run.stderr
    assert "Traceback" not in text and 'File "' not in text, text


def one_error_line(run: CellRun) -> str:
    """The cell failed with exactly one `llm error:` line and nothing like a traceback."""
    assert not run.success, "the cell should have failed"
    no_traceback(run)
    lines = [ln for ln in ANSI.sub("", run.stdout + run.stderr).splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("llm error:")]
    assert len(errors) == 1, lines
    return errors[0]
