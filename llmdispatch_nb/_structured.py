"""A whole answer read against what was asked: the schema's `.parsed` / `.valid` /
`.validation_errors`, and a schema answered through a forced tool turned back into text.

One place for every vendor, after the adapter: Anthropic models without native structured
output answer a schema as a call of one forced tool (vendors/anthropic.py); its arguments
are the answer, so they become the text, and no tool call is left for the user to run.
Streamed, that call's argument pieces reach the caller as text pieces (`schema_stream`),
as a native structured answer's would.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ._schema import read_answer
from ._stream import StreamSink
from ._types import Request, Response, StreamEvent, TextDelta, ToolCallDelta, ToolCallEvent


def finish_response(resp: Response, request: Request) -> Response:
    """`resp` with its structured-output fields filled (unchanged without a schema)."""
    schema = request.schema
    if schema is None:
        return resp
    calls = resp.tool_calls
    if not resp.text.strip() and len(calls) == 1 and calls[0].name == schema.name \
            and schema.name not in {t.name for t in request.tools}:
        resp = replace(resp, text=calls[0].raw_arguments, tool_calls=(),
                       finish_reason="stop" if resp.finish_reason == "tool_calls"
                       else resp.finish_reason)
    refusal = resp.extra.get("refusal")
    if isinstance(refusal, str) and refusal and not resp.text.strip():
        # OpenAI's way of declining a schema: a refusal message instead of content.
        return replace(resp, parsed=None, valid=False,
                       validation_errors=(f"the model refused: {refusal[:300]}",))
    parsed, valid, errors = read_answer(schema, resp.text)
    return replace(resp, parsed=parsed, valid=valid, validation_errors=errors)


class _SchemaToolSink(StreamSink):
    """Passes events on, the forced schema tool's argument pieces as `TextDelta`s (its
    whole-call event is dropped): the caller streams the JSON answer as text."""

    def __init__(self, sink: StreamSink, tool: str) -> None:
        super().__init__(None)
        self._sink = sink
        self._tool = tool
        self._index: int | None = None

    @property
    def started(self) -> bool:
        return self._sink.started

    @started.setter
    def started(self, value: bool) -> None:
        pass  # the wrapped sink keeps it

    def send(self, event: StreamEvent) -> None:
        if isinstance(event, ToolCallDelta):
            if event.name == self._tool and self._index is None:
                self._index = event.index
            if event.index == self._index:
                if event.arguments:
                    self._sink.send(TextDelta(event.arguments))
                return
        if isinstance(event, ToolCallEvent) and event.index == self._index:
            return
        self._sink.send(event)


def schema_stream(request: Request, sink: Any) -> Any:
    """`sink`, or a wrapper streaming a forced schema tool's arguments as text."""
    schema = request.schema
    if sink is None or schema is None or schema.name in {t.name for t in request.tools}:
        return sink
    return _SchemaToolSink(sink, schema.name)
