"""llmdispatch-nb: one routing core for OpenAI, Anthropic, Gemini, Azure OpenAI and any
OpenAI-compatible server, with a ledger of every call, made for notebooks.

    import llmdispatch_nb as ld
    d = ld.Dispatcher()                      # keys from the environment, else emulators
    print(d.send("Hello", "openai:gpt-4o-mini").text)

In IPython: `%load_ext llmdispatch_nb`, then `%%llm openai:gpt-4o-mini claude`.
Heavy modules (pandas, plotly, IPython, ipywidgets) load on first use, not here.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

    from ._attachments import File, Image
    from ._dispatcher import Dispatcher
    from ._run_tools import ToolRun
    from ._stream import AsyncStream, Stream
    from ._types import (
        Attachment,
        Attempt,
        CallRecord,
        Cost,
        Finish,
        Message,
        Request,
        Response,
        StreamEvent,
        StreamStart,
        TextDelta,
        Tool,
        ToolCall,
        ToolCallDelta,
        ToolCallEvent,
        Usage,
        UsageUpdate,
        Waiting,
    )
    from .experiments import recommend, sweep, what_if
    from .notebook._panel import panel
    from .pricing import Price, PriceBook
    from .vendors import Endpoint, Secret

__version__ = "0.1.0"

__all__ = [
    "AsyncStream",
    "Attachment",
    "Attempt",
    "CallRecord",
    "Cost",
    "Dispatcher",
    "Endpoint",
    "File",
    "Finish",
    "Image",
    "Message",
    "Price",
    "PriceBook",
    "Request",
    "Response",
    "Secret",
    "Stream",
    "StreamEvent",
    "StreamStart",
    "TextDelta",
    "Tool",
    "ToolCall",
    "ToolCallDelta",
    "ToolCallEvent",
    "ToolRun",
    "Usage",
    "UsageUpdate",
    "Waiting",
    "__version__",
    "default",
    "load_ipython_extension",
    "panel",
    "recommend",
    "set_default",
    "sweep",
    "unload_ipython_extension",
    "what_if",
]

_default: Dispatcher | None = None
_default_lock = threading.Lock()


def default() -> Dispatcher:
    """The process-wide dispatcher the magic and panel use, built on first use."""
    global _default
    from ._dispatcher import Dispatcher

    with _default_lock:
        if _default is None:
            _default = Dispatcher()
        return _default


def set_default(dispatcher: Dispatcher | None) -> None:
    """Use `dispatcher` for the magic and panel (None: build a fresh one on next use)."""
    global _default
    with _default_lock:
        _default = dispatcher


def load_ipython_extension(ipython: InteractiveShell) -> None:
    from .notebook import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: InteractiveShell) -> None:
    from .notebook import unload_ipython_extension as unload

    unload(ipython)


# Public names -> the private module that defines them. Nothing is imported until a name is
# first used, so `import llmdispatch_nb` stays cheaper than `import httpx` alone.
_LAZY = {
    "AsyncStream": "._stream", "Stream": "._stream",
    "Dispatcher": "._dispatcher",
    "Image": "._attachments", "File": "._attachments", "Attachment": "._types",
    "Attempt": "._types", "CallRecord": "._types", "Cost": "._types", "Finish": "._types",
    "Message": "._types", "Request": "._types", "Response": "._types",
    "StreamEvent": "._types", "StreamStart": "._types", "TextDelta": "._types",
    "Usage": "._types", "UsageUpdate": "._types", "Waiting": "._types",
    "Tool": "._types", "ToolCall": "._types", "ToolCallDelta": "._types",
    "ToolCallEvent": "._types", "ToolRun": "._run_tools",
    "Price": ".pricing", "PriceBook": ".pricing",
    "Endpoint": ".vendors", "Secret": ".vendors",
    "panel": ".notebook._panel",
    "sweep": ".experiments", "what_if": ".experiments", "recommend": ".experiments",
}
_SUBMODULES = ("analysis", "catalogue", "errors", "experiments", "ledger", "notebook", "pricing", "resilience", "routing", "sim",
               "vendors")


def __getattr__(name: str) -> Any:
    import importlib

    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'llmdispatch_nb' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
