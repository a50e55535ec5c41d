"""A newcomer's first cell in a fresh Jupyter kernel: `Dispatcher()` in demo mode starts
the emulators and the first answer arrives in about a second, with nothing on stderr.

The emulators' start-up once configured Python logging (uvicorn's default `log_config`)
while holding the logging lock against ipykernel's output thread: the first `Dispatcher()`
stalled 10-30 s and printed red `IOStream.flush timed out` lines. Only a real kernel shows
that, so this runs one through nbclient. The bound is gross (5 s for what takes about one),
a check for the stall, not a timing measurement.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

# The stall's cause, seen directly (it needs the kernel's output thread to lose the race,
# which a given machine may never show): a spy on the standard library's dictConfig.
FIRST_CELL = """\
import json, logging, logging.config, time
configured = []
_dict_config = logging.config.dictConfig
logging.config.dictConfig = lambda config: (configured.append(config), _dict_config(config))
t0 = time.perf_counter()
import llmdispatch_nb as ld
d = ld.Dispatcher()
t1 = time.perf_counter()
r = d.send("hi", "gpt", max_tokens=16)
t2 = time.perf_counter()
print(json.dumps({"dispatcher_s": t1 - t0, "first_answer_s": t2 - t1,
                  "simulated": r.simulated, "text": r.text,
                  "dict_configs": len(configured),
                  "uvicorn_handlers": [repr(h) for name in ("uvicorn", "uvicorn.error",
                                       "uvicorn.access") for h in logging.getLogger(name).handlers]}))
"""


def test_the_first_dispatcher_and_answer_in_a_fresh_kernel_are_quick_and_quiet(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMDISPATCH_DEMO", "1")
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(FIRST_CELL),
                nbformat.v4.new_code_cell("d.close()")]
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=120,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()

    outputs = [o for cell in nb.cells for o in cell.outputs]
    # The stall's symptom was red text: "IOStream.flush timed out" (captured from fd 2).
    stderr = [o["text"] for o in outputs if o["output_type"] == "stream" and o["name"] == "stderr"]
    assert stderr == []
    stdout = "".join(o["text"] for o in nb.cells[0].outputs
                     if o["output_type"] == "stream" and o["name"] == "stdout")
    seen = json.loads(stdout)
    assert seen["simulated"] and seen["text"].startswith("[simulated")
    # The emulators leave the kernel's logging as it was: no dictConfig, no handlers added.
    assert seen["dict_configs"] == 0 and seen["uvicorn_handlers"] == []
    assert seen["dispatcher_s"] + seen["first_answer_s"] < 5.0, seen
