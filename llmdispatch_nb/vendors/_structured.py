"""What every adapter shares for structured output and tool calls: what the catalogue says
a model takes, tool calls read into our one shape, and streamed pieces assembled.

Which mechanism carries a schema (a vendor's native one, a forced tool, JSON mode plus an
instruction) is decided from the model catalogue (`structured_output`, `tools`), never
from the model's name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._tools import parse_arguments
from .._types import Request, ToolCall, ToolCallDelta, ToolCallEvent
from ..catalogue import lookup
from ..errors import RequestValidationError
from ._base import wire


def native_schema(vendor: str, model: str) -> bool:
    """Whether the catalogue says this model fills a JSON schema natively (not stated:
    no, and the adapter's fallback is used: a forced tool or JSON mode)."""
    return lookup(vendor, model, warn=False).structured_output is True


def check_tools(request: Request, vendor: str, model: str) -> None:
    """Refuse tools for a model the catalogue knows has none (an unknown model, a local
    one say, is sent them: its server decides)."""
    if not request.tools:
        return
    info = lookup(vendor, model, warn=False)
    if info.known and not info.tools:
        raise RequestValidationError(
            f"{vendor}:{model} does not take tools (the model catalogue says so); pick a model "
            f"that does, or correct the catalogue with llmdispatch_nb.catalogue.override("
            f"{vendor!r}, {model!r}, tools=True)")


def tool_call(call_id: Any, name: Any, arguments: str | Mapping[str, Any] | None,
              signature: Any = None) -> ToolCall:
    """One call in our shape, from a vendor's id, name and arguments (JSON text or a dict)."""
    args, error = parse_arguments(arguments if isinstance(arguments, str | Mapping) else None)
    raw = arguments if isinstance(arguments, str) else ""
    if isinstance(arguments, Mapping):
        import json

        raw = json.dumps(arguments)
    return ToolCall(wire(call_id) or "", wire(name) or "", args, raw, error,
                    signature if isinstance(signature, str) and signature else None)


class ToolCallAssembler:
    """Pieces of streamed tool calls, by index, into whole calls (OpenAI and Anthropic send
    the arguments' JSON in pieces; Gemini sends each call whole)."""

    def __init__(self) -> None:
        self.ids: dict[int, str] = {}
        self.names: dict[int, str] = {}
        self.pieces: dict[int, list[str]] = {}
        self.done: list[ToolCall] = []
        self.signatures: dict[int, str] = {}
        self._closed: set[int] = set()

    def piece(self, index: int, call_id: Any, name: Any, arguments: Any) -> ToolCallDelta:
        cid, cname = wire(call_id), wire(name)
        if cid:
            self.ids[index] = cid
        if cname:
            self.names[index] = cname
        text = arguments if isinstance(arguments, str) else ""
        self.pieces.setdefault(index, []).append(text)
        return ToolCallDelta(index, cid, cname, text)

    def whole(self, index: int, call_id: Any, name: Any, arguments: Any,
              signature: str | None = None) -> list[Any]:
        """A call that arrived in one piece (Gemini): its delta and its event."""
        import json

        if signature:
            self.signatures[index] = signature
        text = json.dumps(arguments) if isinstance(arguments, Mapping) else \
            arguments if isinstance(arguments, str) else ""
        return [self.piece(index, call_id, name, text), *self.finish(index)]

    def finish(self, index: int | None = None) -> list[ToolCallEvent]:
        """Close call `index` (None: every call still open), in index order."""
        out: list[ToolCallEvent] = []
        for i in sorted(self.pieces) if index is None else [index]:
            if i in self._closed or i not in self.pieces:
                continue
            self._closed.add(i)
            call = tool_call(self.ids.get(i, ""), self.names.get(i, ""),
                             "".join(self.pieces[i]), self.signatures.get(i))
            self.done.append(call)
            out.append(ToolCallEvent(i, call))
        return out
