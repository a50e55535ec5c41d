"""Structured output and tool use on the Anthropic emulator: `output_config.format` and
`tools` / `tool_choice` read and checked per the catalogue, and the answer in Anthropic's
shapes (`tool_use` content blocks, `input_json_delta` pieces, `stop_reason: "tool_use"`).

A model the catalogue does not say has native structured output is refused
`output_config.format` (the adapter then forces one tool, which every tool-using model
takes); a model without tools is refused `tools`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from ._core import count_tokens
from ._server import sse_frame
from ._structured import (
    PlannedCall,
    ToolSpec,
    answer_from_results,
    call_id,
    plan_calls,
    schema_answer,
)


class Refused(ValueError):
    """The request is refused with a 400 invalid_request_error saying this."""


@dataclass(frozen=True)
class Structured:
    schema: Mapping[str, Any] | None
    tools: tuple[ToolSpec, ...]
    choice: str | None
    parallel: bool
    results: tuple[tuple[str, str], ...]

    def planned(self, key: str, question: str, fault_kind: str | None) -> list[PlannedCall]:
        return plan_calls(self.tools, self.choice, question, key, after_results=bool(self.results),
                          parallel=self.parallel, broken=fault_kind == "schema-mismatch")

    def text(self, key: str, prompt: str, question: str, fault_kind: str | None) -> str | None:
        if self.results:
            return answer_from_results(self.results)
        if self.schema is not None:
            return schema_answer(self.schema, key, None, prompt, question=question,
                                 broken=fault_kind == "schema-mismatch")
        return None


def read_structured(body: Mapping[str, Any], info: Any, served: str) -> Structured | None:
    config = body.get("output_config")
    fmt = config.get("format") if isinstance(config, Mapping) else None
    schema = None
    if fmt is not None:
        if not isinstance(fmt, Mapping) or fmt.get("type") != "json_schema" or \
                not isinstance(fmt.get("schema"), Mapping):
            raise Refused("output_config.format: Input tag does not match the expected tag "
                          "'json_schema'")
        if info.structured_output is not True:
            raise Refused(f"'{served}' does not support output_config.format (structured "
                          f"outputs)")
        schema = fmt["schema"]
    tools = body.get("tools")
    specs: list[ToolSpec] = []
    if tools is not None:
        if not isinstance(tools, list):
            raise Refused("tools: Input should be a valid list")
        if tools and info.known and not info.tools:
            raise Refused(f"'{served}' does not support tool use")
        for i, t in enumerate(tools):
            if not isinstance(t, Mapping) or not isinstance(t.get("name"), str):
                raise Refused(f"tools.{i}.name: Field required")
            if not isinstance(t.get("input_schema"), Mapping):
                raise Refused(f"tools.{i}.custom.input_schema: Field required")
            specs.append(ToolSpec(t["name"], t["input_schema"]))
    tc = body.get("tool_choice")
    choice, parallel = None, True
    if tc is not None:
        if not isinstance(tc, Mapping) or tc.get("type") not in ("auto", "any", "none", "tool"):
            raise Refused("tool_choice: Input tag does not match any of the expected tags: "
                          "'auto', 'any', 'tool', 'none'")
        if not specs and tc.get("type") != "none":
            raise Refused("tool_choice may only be specified while providing tools")
        if tc["type"] == "tool":
            if tc.get("name") not in {s.name for s in specs}:
                raise Refused(f"Tool '{tc.get('name')}' not found in provided tools")
            choice = str(tc["name"])
        else:
            choice = {"any": "required"}.get(tc["type"], tc["type"])
        parallel = tc.get("disable_parallel_tool_use") is not True
    results = _results(body.get("messages"))
    if schema is None and not specs:
        return None
    return Structured(schema, tuple(specs), choice, parallel, results)


def _results(messages: Any) -> tuple[tuple[str, str], ...]:
    """The tool results the conversation ends with, by tool name."""
    if not isinstance(messages, list) or not messages or not isinstance(messages[-1], Mapping):
        return ()
    names: dict[str, str] = {}
    for m in messages:
        content = m.get("content") if isinstance(m, Mapping) else None
        for b in content if isinstance(content, list) else []:
            if isinstance(b, Mapping) and b.get("type") == "tool_use":
                names[str(b.get("id"))] = str(b.get("name"))
    last = messages[-1].get("content")
    out = []
    for b in last if isinstance(last, list) else []:
        if isinstance(b, Mapping) and b.get("type") == "tool_result":
            c = b.get("content")
            text = c if isinstance(c, str) else json.dumps(c)
            out.append((names.get(str(b.get("tool_use_id")), "tool"), text))
    return tuple(out)


def tool_use_blocks(planned: list[PlannedCall]) -> list[dict[str, Any]]:
    return [{"type": "tool_use", "id": call_id("toolu_01", p, 22), "name": p.name,
             "input": p.arguments} for p in planned]


def tool_use_events(planned: list[PlannedCall], size: int = 16) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) for each call: its block's start, its input in pieces, its stop."""
    out: list[tuple[str, dict[str, Any]]] = []
    for i, (p, block) in enumerate(zip(planned, tool_use_blocks(planned), strict=True)):
        out.append(("content_block_start", {"type": "content_block_start", "index": i,
                                            "content_block": {**block, "input": {}}}))
        text = p.json()
        out.extend(("content_block_delta", {"type": "content_block_delta", "index": i, "delta": {
            "type": "input_json_delta", "partial_json": text[j:j + size]}})
            for j in range(0, len(text), size))
        out.append(("content_block_stop", {"type": "content_block_stop", "index": i}))
    return out


def _output_tokens(planned: list[PlannedCall]) -> int:
    return sum(count_tokens(p.json()) + 8 for p in planned)


def tool_message(emu: Any, ask: Any, planned: list[PlannedCall], message_id: str) -> dict[str, Any]:
    """The model uses tools: `tool_use` blocks and `stop_reason: "tool_use"`."""
    return {"id": message_id, "type": "message", "role": "assistant",
            "model": ask.profile.served, "content": tool_use_blocks(planned),
            "stop_reason": "tool_use", "stop_sequence": None,
            "usage": emu.usage(ask, _output_tokens(planned))}


async def tool_stream(emu: Any, ask: Any, planned: list[PlannedCall],
                      message_id: str) -> AsyncIterator[bytes]:
    """The same streamed: each block's start, its input as `input_json_delta` pieces, its
    stop, then `message_delta` with `stop_reason: "tool_use"`."""
    yield sse_frame({"type": "message_start", "message": {
        "id": message_id, "type": "message", "role": "assistant",
        "model": ask.profile.served, "content": [], "stop_reason": None,
        "stop_sequence": None, "usage": emu.usage(ask, 1)}}, "message_start")
    for name, data in tool_use_events(planned):
        yield sse_frame(data, name)
    yield sse_frame({"type": "message_delta",
                     "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                     "usage": {"output_tokens": _output_tokens(planned) + ask.thoughts}},
                    "message_delta")
    yield sse_frame({"type": "message_stop"}, "message_stop")
