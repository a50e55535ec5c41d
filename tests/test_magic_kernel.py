"""The same cells in a real Jupyter kernel, run by nbclient: the kernel starts the
emulators itself (LLMDISPATCH_DEMO=1), and the saved outputs are read back."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

CELLS = [
    "%load_ext llmdispatch_nb",
    "topic = 'tides'",
    "%%llm gpt -m 12 -o answer\nExplain {topic} with this code: d = {'a': {'b': 1}}",
    "print(type(answer).__name__, answer.response.vendor, answer.response.simulated)",
    "%%llm gpt claude -m 8\nCompare yourselves",
    "print(type(_llm).__name__, [c.status for c in _llm])",
    "%llm vendors",
    "%%llm nosuch:model\nhi",
    "print('still running')",
    "%llm panel",
    "import sys; print(sys.executable)",
]
ERROR_CELL = 7


def _outputs_text(outputs: list[Any]) -> str:
    parts = []
    for out in outputs:
        if out["output_type"] == "stream":
            parts.append(out["text"])
        elif "data" in out:
            parts.append(str(out["data"].get("text/plain", "")))
    return "".join(parts)


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> Any:
    home = tmp_path_factory.mktemp("kernel-home")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in CELLS]
    # This cell is meant to fail: nbclient lets a tagged cell raise and goes on.
    nb.cells[ERROR_CELL].metadata["tags"] = ["raises-exception"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLMDISPATCH_DEMO", "1")
        mp.setenv("LLMDISPATCH_HOME", str(home))
        mp.setenv("IPYTHONDIR", str(home / "ipython"))
        mp.setenv("JUPYTER_PLATFORM_DIRS", "1")
        for var in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY",
                    "AZURE_OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT"):
            mp.delenv(var, raising=False)
        client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=120,
                                         resources={"metadata": {"path": str(home)}})
        client.execute()
    Path(home / "executed.ipynb").write_text(nbformat.writes(nb), encoding="utf-8")
    return nb


def test_the_panel_opens_from_the_magic(executed: Any) -> None:
    outputs = executed.cells[-2].outputs
    assert not [o for o in outputs if o["output_type"] == "error"], outputs
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)


def test_the_kernel_runs_this_venvs_python(executed: Any) -> None:
    assert _outputs_text(executed.cells[-1].outputs).strip() == sys.executable


def test_an_answer_streams_and_keeps_its_provenance(executed: Any) -> None:
    outputs = executed.cells[2].outputs
    shown = [o for o in outputs if o["output_type"] == "display_data"]
    assert len(shown) == 1  # every streamed update replaced the same output
    data, meta = shown[0]["data"], shown[0]["metadata"]["llmdispatch_nb"]
    assert data["text/markdown"].startswith("[simulated gpt-4o-mini] You asked:")
    assert "Explain tides with this code: d = {'a':" in data["text/markdown"]
    assert meta["vendor"] == "openai" and meta["simulated"] is True and len(meta["call_ids"]) == 1
    assert "simulated" in data["text/plain"].splitlines()[-1]
    assert _outputs_text(executed.cells[3].outputs).strip() == "LLMResult openai True"


def test_compare_renders_side_by_side(executed: Any) -> None:
    shown = [o for o in executed.cells[4].outputs if o["output_type"] == "display_data"]
    assert len(shown) == 1
    html = shown[0]["data"]["text/html"]
    assert "grid-template-columns:repeat(2" in html
    assert "openai · gpt-4o-mini" in html and "anthropic · claude-haiku-4-5" in html
    meta = shown[0]["metadata"]["llmdispatch_nb"]
    assert [c["target"] for c in meta["columns"]] == ["gpt", "claude"]
    assert _outputs_text(executed.cells[5].outputs).strip() == "CompareResult ['done', 'done']"


def test_vendors_in_the_kernel_are_emulated(executed: Any) -> None:
    text = _outputs_text(executed.cells[6].outputs)
    assert text.startswith("demo mode") and "demo key" in text


def test_an_error_is_one_line_and_the_kernel_goes_on(executed: Any) -> None:
    errors = [o for o in executed.cells[ERROR_CELL].outputs if o["output_type"] == "error"]
    assert len(errors) == 1
    assert errors[0]["ename"] == "CellError"
    (line,) = errors[0]["traceback"]
    assert "llm error:" in line and "unknown target 'nosuch:model'" in line
    assert _outputs_text(executed.cells[ERROR_CELL + 1].outputs).strip() == "still running"
