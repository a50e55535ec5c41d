"""End to end: the panel in JupyterLab, in headless Chromium driven by Playwright.

JupyterLab runs on loopback with a token; the notebook builds the panel on the default
dispatcher in demo mode (the emulators, at their real pace, so text visibly streams). The
test types a prompt, picks three vendors, clicks Compare and reads the three columns back
from the page; screenshots go to test-artifacts/. Debian's chromium is the browser (no
Playwright download); the JupyterLab test skips only when it cannot be found or installed.
The same run is repeated in Notebook 7 and Voila when those are installed.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from .browser.servers import CHROMIUM_ARGS, JupyterServer, find_chromium, write_notebook

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
VENDORS = ("openai", "anthropic", "google")
TARGETS = ("openai:gpt-4o-mini", "anthropic:claude-haiku-4-5", "google:gemini-2.5-flash")
PROMPT = "Name three uses of a paperclip."

NOTEBOOK = [
    "from llmdispatch_nb.notebook._panel import panel\n"
    "p = panel()\n"
    "p",
]

# True once the open notebook's kernel is connected and idle (JupyterLab exposes its
# application object as window.jupyterapp with --LabApp.expose_app_in_browser).
KERNEL_IDLE = """() => {
  const app = window.jupyterapp;
  const widget = app && app.shell.currentWidget;
  const session = widget && widget.sessionContext && widget.sessionContext.session;
  const kernel = session && session.kernel;
  return !!kernel && kernel.connectionStatus === 'connected' && kernel.status === 'idle';
}"""

SECOND = 1000  # Playwright counts milliseconds


@pytest.fixture(scope="module")
def chromium() -> str:
    path, why = find_chromium()
    if path is None:
        pytest.skip(f"no browser for the end-to-end test: {why}")
    return path


def serve(tmp_path: Path, front_end: str) -> JupyterServer:
    root = tmp_path / "notebooks"
    root.mkdir()
    write_notebook(root / "panel.ipynb", NOTEBOOK)
    env = {"LLMDISPATCH_DEMO": "1", "LLMDISPATCH_HOME": str(tmp_path / "home")}
    return JupyterServer(root, front_end, env=env)


def test_compare_three_vendors_in_jupyterlab(chromium: str, tmp_path: Path) -> None:
    with serve(tmp_path, "lab") as server:
        compare_in_browser(chromium, server)


@pytest.mark.parametrize("front_end", ["notebook", "voila"])
def test_compare_three_vendors_in_notebook7_and_voila(chromium: str, tmp_path: Path,
                                                      front_end: str) -> None:
    if importlib.util.find_spec(front_end) is None:
        pytest.skip(f"the {front_end!r} package is not installed here "
                    f"(pip install notebook voila to run this front end too)")
    with serve(tmp_path, front_end) as server:
        compare_in_browser(chromium, server)


def compare_in_browser(chromium: str, server: JupyterServer) -> None:
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    shot = f"panel-{server.front_end}"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1500, "height": 1250})
        page.set_default_timeout(60 * SECOND)
        passed = False
        try:
            page.goto(server.url(server.page), wait_until="domcontentloaded")
            if server.front_end != "voila":  # Voila runs the cells itself
                page.wait_for_function(KERNEL_IDLE, timeout=120 * SECOND)
                page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            panel = page.locator(".llmd-panel")
            panel.wait_for(state="visible", timeout=120 * SECOND)
            expect(panel).to_contain_text("demo mode")
            run_compare(page, panel, expect)
            panel.screenshot(path=str(ARTIFACTS / f"{shot}-compare.png"))

            panel.get_by_role("tab", name="Stats").click()
            table = panel.locator(".llmd-stats-table table")
            expect(table).to_be_visible(timeout=30 * SECOND)
            for vendor in VENDORS:
                expect(table).to_contain_text(vendor)
            panel.screenshot(path=str(ARTIFACTS / f"{shot}-stats.png"))

            panel.get_by_role("tab", name="Charts").click()
            expect(panel.locator(".llmd-chart .js-plotly-plot")).to_be_visible(timeout=60 * SECOND)
            panel.screenshot(path=str(ARTIFACTS / f"{shot}-charts.png"))
            passed = True
        finally:
            if not passed:  # what the page looked like when it went wrong
                try:
                    page.screenshot(path=str(ARTIFACTS / f"{shot}-failure.png"), full_page=True)
                except Exception:
                    pass
            browser.close()


def run_compare(page: Any, panel: Any, expect: Any) -> None:
    """Type a prompt, pick three vendors, click Compare, read the three columns back."""
    page.locator(".llmd-prompt textarea").fill(PROMPT)
    labels = [f"{t} · simulated" for t in TARGETS]
    page.locator(".llmd-targets select").select_option(labels)
    page.locator("button.llmd-compare").click()

    columns = panel.locator(".llmd-column")
    expect(columns).to_have_count(3, timeout=30 * SECOND)
    # Text arrives while the calls run, not all at once at the end.
    streaming = columns.locator(".llmd-title", has_text="[streaming]").first
    streaming.wait_for(state="visible", timeout=30 * SECOND)
    expect(page.locator("button.llmd-compare")).to_be_disabled()

    status = panel.locator(".llmd-status")
    expect(status).to_contain_text("finished: 3 done", timeout=120 * SECOND)
    expect(page.locator("button.llmd-compare")).to_be_enabled()
    for i, (vendor, target) in enumerate(zip(VENDORS, TARGETS, strict=True)):
        column = columns.nth(i)
        title = column.locator(".llmd-title").inner_text()
        assert vendor in title and "[done]" in title and "[simulated]" in title, title
        text = column.locator(".llmd-text").inner_text()
        model = target.partition(":")[2]
        assert text.startswith(f"[simulated {model}]") and PROMPT in text, text[:200]
        stats = column.locator(".llmd-stats").inner_text()
        for word in ("latency", "ttft", "tokens", "in /", "out", "cost"):
            assert word in stats, f"{vendor}: {word!r} missing from {stats!r}"
