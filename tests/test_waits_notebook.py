"""Waits in the notebook (issue 14.11): the `%%llm` cell and the panel's column show what
a call waits for and how long while it waits, and interrupting a long Retry-After wait
in a real kernel ends the cell with one line, records the attempt as cancelled and
leaves the kernel alive. Faults come from the emulators; nothing of ours is mocked."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from llmdispatch_nb import Dispatcher
from llmdispatch_nb.sim import Fault
from tests.test_magic_support import ANSI, Notebook

pytest_plugins = ("tests.test_magic_support",)  # its fixtures: shell, nb, demo, d, records

RETRY_AFTER = Fault("429", retry_after=2.2)  # just past the 2 s a wait must last to be shown


def texts(run: Any, mime: str = "text/plain") -> list[str]:
    return [str(p.data.get(mime, "")) for p in run.published]


def test_a_cell_shows_what_it_waits_for_and_how_long(d: Dispatcher, nb: Notebook) -> None:
    d.sim.emulators["openai"].faults.script(RETRY_AFTER)
    run = nb.cell("openai:gpt-4o-mini -m 8", "Hello")
    assert run.success, run.stdout
    shown = [t for t in texts(run) if "waiting" in t and "Retry-After" in t]
    assert shown, texts(run)
    assert "openai:gpt-4o-mini · waiting 2 s for openai:gpt-4o-mini: the vendor asked for " \
        "this wait (Retry-After on a 429 RateLimitError)" in shown[0]
    # Then the answer replaces it, and the footer says the call was retried.
    assert "waiting" not in texts(run)[-1] and "retried" in texts(run)[-1]


def test_a_cell_without_streaming_shows_the_wait_too(d: Dispatcher, nb: Notebook) -> None:
    d.sim.emulators["openai"].faults.script(RETRY_AFTER)
    run = nb.cell("openai:gpt-4o-mini -m 8 --no-stream", "Hello")
    assert run.success, run.stdout
    assert any("waiting 2 s for openai:gpt-4o-mini" in t for t in texts(run)), texts(run)


def test_a_compare_column_shows_its_own_wait(d: Dispatcher, nb: Notebook) -> None:
    d.sim.emulators["openai"].faults.script(RETRY_AFTER)
    run = nb.cell("openai:gpt-4o-mini anthropic:claude-haiku-4-5 -m 8", "Hello")
    assert run.success, run.stdout
    html = [t for t in texts(run, "text/html") if "waiting 2 s for openai:gpt-4o-mini" in t]
    assert html, texts(run)
    assert "waiting" not in texts(run, "text/html")[-1]


def test_the_panel_column_shows_the_wait_and_cancel_ends_it(d: Dispatcher) -> None:
    from llmdispatch_nb.notebook._panel_column import Column

    d.sim.emulators["openai"].faults.script(Fault("429", retry_after=30))
    column = Column("openai:gpt-4o-mini")
    worker = threading.Thread(target=column.consume,
                              args=(lambda t: d.stream("Hello", t, max_tokens=8),), daemon=True)
    worker.start()
    end = time.monotonic() + 20
    while "status" not in column.stat_fields() and time.monotonic() < end:
        time.sleep(0.02)
    status = column.stat_fields()["status"]
    assert status.startswith("waiting ") and "for openai:gpt-4o-mini" in status
    assert "Retry-After" in status
    column.render(force=True)
    assert "waiting" in column.stats.value
    column.cancel()
    worker.join(10)
    assert column.status == "cancelled"
    assert "status" not in column.stat_fields()


# -- a real kernel, interrupted ------------------------------------------------------------

jupyter_client = pytest.importorskip("jupyter_client")


@pytest.fixture
def kernel(tmp_path: Any) -> Iterator[Any]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY",
                        "GOOGLE_API_KEY", "AZURE_OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT")}
    env.update(LLMDISPATCH_DEMO="1", LLMDISPATCH_HOME=str(tmp_path),
               IPYTHONDIR=str(tmp_path / "ipython"), JUPYTER_PLATFORM_DIRS="1")
    km = jupyter_client.KernelManager(kernel_name="python3")
    km.start_kernel(env=env, cwd=str(tmp_path))
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=120)
        yield km, kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def run(kc: Any, code: str, timeout: float = 120) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Execute `code`; its reply and every iopub message it caused."""
    msg_id = kc.execute(code)
    return collect(kc, msg_id, timeout)


def collect(kc: Any, msg_id: str, timeout: float,
            until: Any = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        msg = kc.get_iopub_msg(timeout=max(0.1, end - time.monotonic()))
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        seen.append(msg)
        if until is not None and until(msg):
            return {}, seen
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            while True:  # skip replies to earlier requests (the ready check's kernel_info)
                reply = kc.get_shell_msg(timeout=10)
                if reply["parent_header"].get("msg_id") == msg_id:
                    return reply["content"], seen
    raise AssertionError(f"no end within {timeout} s: {[m['msg_type'] for m in seen]}")


def shown_text(msg: dict[str, Any]) -> str:
    data = msg["content"].get("data") or {}
    return str(data.get("text/plain", "")) + str(msg["content"].get("text", ""))


@pytest.mark.parametrize("options", ["", " --no-stream"])
def test_interrupting_a_long_wait_ends_the_cell_with_one_line(kernel: Any, options: str) -> None:
    km, kc = kernel
    reply, _ = run(kc, "%load_ext llmdispatch_nb\n"
                       "import llmdispatch_nb as ld\n"
                       "from llmdispatch_nb.sim import Fault\n"
                       "d = ld.default()\n"
                       "d.sim.emulators['openai'].faults.script(Fault('429', retry_after=60))")
    assert reply["status"] == "ok", reply
    msg_id = kc.execute(f"%%llm openai:gpt-4o-mini -m 8{options}\nHello")
    # The status line comes first (the call waits 60 s), then we interrupt.
    _, before = collect(kc, msg_id, 60, until=lambda m: "Retry-After" in shown_text(m))
    assert "waiting" in shown_text(before[-1]) and "Retry-After" in shown_text(before[-1])
    t0 = time.monotonic()
    km.interrupt_kernel()
    reply, after = collect(kc, msg_id, 30)
    assert time.monotonic() - t0 < 20  # the cell ended, not the 60 s wait (a gross stall)
    assert reply["status"] == "error" and reply["ename"] == "CellError", reply
    errors = [m for m in after if m["msg_type"] == "error"]
    assert len(errors) == 1
    (line,) = errors[0]["content"]["traceback"]
    assert ANSI.sub("", line).startswith("llm error: interrupted")
    streams = "".join(m["content"]["text"] for m in after if m["msg_type"] == "stream")
    assert "Traceback" not in streams and "KeyboardInterrupt" not in streams
    # The kernel lives on, and the ledger has the attempt that never went out as cancelled.
    reply, out = run(kc, "import time\n"
                         "for _ in range(100):\n"
                         "    recs = d.session_records()\n"
                         "    if any(r.status == 'cancelled' for r in recs): break\n"
                         "    time.sleep(0.05)\n"
                         "print([(r.status, r.error_class) for r in recs])\n"
                         "print('waiting 60.0 s' in recs[-1].error_message)")
    assert reply["status"] == "ok", reply
    printed = "".join(m["content"]["text"] for m in out if m["msg_type"] == "stream")
    assert "('error', 'RateLimitError'), ('cancelled', 'LLMDispatchError')]" in printed
    assert printed.strip().endswith("True")
