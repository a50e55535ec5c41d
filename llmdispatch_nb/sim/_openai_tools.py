"""Structured output and tool calls on the OpenAI-shaped emulators (OpenAI, Azure, the
OpenAI-compatible servers): `response_format` and `tools` read and checked as Chat
Completions checks them, and the answer in its shapes (a `tool_calls` message, tool-call
deltas by index, `finish_reason: "tool_calls"`).

The catalogue says which models take a JSON schema or tools; a model that does not is
refused with OpenAI's 400. Local servers (`local=True`) take both and check nothing, as
Ollama and llama.cpp do.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ._core import count_tokens, paced
from ._server import json_response, sse_frame
from ._structured import (
    PlannedCall,
    ToolSpec,
    answer_from_results,
    call_id,
    plan_calls,
    schema_answer,
)


def strict_problem(schema: Any, context: tuple[str, ...] = ()) -> str | None:
    """What strict mode refuses in `schema` (OpenAI's words), or None."""
    if not isinstance(schema, Mapping):
        return None
    ctx = "(" + ", ".join(repr(c) for c in context) + ("," if len(context) == 1 else "") + ")"
    if schema.get("type") == "object" or "properties" in schema:
        if schema.get("additionalProperties") is not False:
            return (f"In context={ctx}, 'additionalProperties' is required to be supplied and "
                    f"to be false.")
        props = schema.get("properties") or {}
        missing = [k for k in props if k not in (schema.get("required") or ())]
        if missing:
            return (f"In context={ctx}, 'required' is required to be supplied and to be an "
                    f"array including every key in properties. Missing '{missing[0]}'.")
        for k, v in props.items():
            found = strict_problem(v, (*context, "properties", k))
            if found:
                return found
    for key in ("items",):
        found = strict_problem(schema.get(key), (*context, key))
        if found:
            return found
    for key in ("anyOf", "$defs"):
        subs = schema.get(key)
        items = subs.items() if isinstance(subs, Mapping) else enumerate(subs or ())
        for name, sub in items:
            found = strict_problem(sub, (*context, key, str(name)))
            if found:
                return found
    return None


Refuse = Callable[..., Exception]


def _schema_in_words(messages: list[Any]) -> Mapping[str, Any] | None:
    """A JSON Schema object written into a system turn (how servers without schema support
    are told the shape), or None."""
    for m in messages:
        content = m.get("content") if isinstance(m, Mapping) else None
        if not isinstance(content, str) or m.get("role") not in ("system", "developer") \
                or "{" not in content:
            continue
        try:
            found = json.loads(content[content.index("{"):])
        except ValueError:
            continue
        if isinstance(found, dict) and isinstance(found.get("properties"), dict):
            return found
    return None


def read_structured(body: Mapping[str, Any], messages: list[Any], info: Any, model: str,
                    refuse: Refuse, *, local: bool) -> dict[str, Any]:
    """The Chat fields for a schema and tools (empty when neither was asked for)."""
    out: dict[str, Any] = {}
    fmt = body.get("response_format")
    if isinstance(fmt, Mapping) and fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str):
            raise refuse("Missing required parameter: 'response_format.json_schema.name'.",
                         "response_format.json_schema.name", "missing_required_parameter")
        if not local and info.structured_output is False:
            raise refuse("Invalid parameter: 'response_format' of type 'json_schema' is not "
                         "supported with this model. Learn more about supported models at the "
                         "Structured Outputs guide: https://platform.openai.com/docs/guides/"
                         "structured-outputs", "response_format", None)
        schema = spec.get("schema") if isinstance(spec.get("schema"), Mapping) else {}
        if spec.get("strict") is True and not local:
            problem = strict_problem(schema)
            if problem:
                raise refuse(f"Invalid schema for response_format '{spec['name']}': {problem}",
                             "response_format", None)
        out["schema"] = schema
    elif isinstance(fmt, Mapping) and fmt.get("type") == "json_object":
        told = _schema_in_words(messages)
        if told is not None:  # JSON mode, the schema given in the prompt: a model follows it
            out["schema"] = told
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise refuse("Invalid type for 'tools': expected an array.", "tools", "invalid_type")
        if tools and not local and info.known and not info.tools:
            raise refuse("tools is not supported in this model. For a list of supported "
                         "models, refer to https://platform.openai.com/docs/guides/function-"
                         "calling#models-supporting-function-calling.", "tools", None)
        specs = []
        for i, t in enumerate(tools):
            fn = t.get("function") if isinstance(t, Mapping) else None
            if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
                raise refuse(f"Missing required parameter: 'tools[{i}].function'.",
                             f"tools[{i}].function", "missing_required_parameter")
            params = fn.get("parameters")
            specs.append(ToolSpec(fn["name"], params if isinstance(params, Mapping) else
                                  {"type": "object", "properties": {}}))
        out["tools"] = tuple(specs)
        choice = body.get("tool_choice")
        if isinstance(choice, Mapping):
            named = (choice.get("function") or {}).get("name")
            if named not in {s.name for s in specs}:
                raise refuse(f"Invalid value for 'tool_choice': tool '{named}' is not among "
                             f"the tools given.", "tool_choice", "invalid_value")
            out["tool_choice"] = named
        elif isinstance(choice, str):
            out["tool_choice"] = choice
        out["parallel"] = body.get("parallel_tool_calls") is not False
    elif body.get("tool_choice") is not None:
        raise refuse("Invalid value for 'tool_choice': 'tool_choice' is only allowed when "
                     "'tools' are specified.", "tool_choice", None)
    # The results after the last assistant turn: what the model now answers from.
    results: list[tuple[str, str]] = []
    names: dict[str, str] = {}
    for m in messages:
        if not isinstance(m, Mapping):
            continue
        if m.get("role") == "assistant":
            results = []
            for c in m.get("tool_calls") or ():
                if isinstance(c, Mapping) and isinstance(c.get("function"), Mapping):
                    names[str(c.get("id"))] = str(c["function"].get("name"))
        elif m.get("role") == "tool":
            content = m.get("content")
            results.append((names.get(str(m.get("tool_call_id")), "tool"),
                            content if isinstance(content, str) else str(content)))
    if messages and isinstance(messages[-1], Mapping) and messages[-1].get("role") == "tool":
        out["tool_results"] = tuple(results)
    return out


def planned_calls(chat: Any, fault_kind: str | None) -> list[PlannedCall]:
    if not chat.tools:
        return []
    question = chat.question.text if chat.question is not None else chat.prompt
    return plan_calls(chat.tools, chat.tool_choice, question, chat.target.key, chat.seed,
                      after_results=bool(chat.tool_results), parallel=chat.parallel,
                      broken=fault_kind == "schema-mismatch")


def answer_override(chat: Any, fault_kind: str | None) -> str | None:
    """The text that replaces the generated prose: results used, or JSON for a schema."""
    if chat.tool_results:
        return answer_from_results(chat.tool_results)
    if chat.schema is not None:
        question = chat.question.text if chat.question is not None else chat.prompt
        return schema_answer(chat.schema, chat.target.key, chat.seed, chat.prompt,
                             question=question, broken=fault_kind == "schema-mismatch")
    return None


def tool_calls_json(planned: list[PlannedCall]) -> list[dict[str, Any]]:
    return [{"id": call_id("call_", p), "type": "function",
             "function": {"name": p.name, "arguments": p.json()}} for p in planned]


def tool_call_deltas(planned: list[PlannedCall], size: int = 16) -> list[dict[str, Any]]:
    """The `delta`s that stream the calls: id, name and empty arguments first, then the
    arguments in pieces, call after call, each by its index."""
    out: list[dict[str, Any]] = []
    for i, p in enumerate(planned):
        out.append({"tool_calls": [{"index": i, "id": call_id("call_", p), "type": "function",
                                    "function": {"name": p.name, "arguments": ""}}]})
        text = p.json()
        out.extend({"tool_calls": [{"index": i, "function": {"arguments": text[j:j + size]}}]}
                   for j in range(0, len(text), size))
    return out


def json_tokens(text: str) -> list[str]:
    """An answer the emulator wrote itself (JSON, a tool-results summary) as streamed
    pieces of about one token each (four characters)."""
    return [text[i:i + 4] for i in range(0, len(text), 4)]


def tool_reply(emu: Any, request: Request, chat: Any, planned: list[PlannedCall]) -> Response:
    """The model calls tools: `message.tool_calls` (content null), or the calls streamed
    as deltas by index; `finish_reason: "tool_calls"` either way."""
    completion = sum(count_tokens(p.json()) + 4 for p in planned)
    usage = emu.usage(chat, completion, 0, 0)
    headers = {**emu.common_headers(request),
               **emu.ratelimit_headers(chat.prompt_tokens + completion)}
    if chat.stream:
        return StreamingResponse(_tool_events(emu, chat, planned, usage),
                                 media_type="text/event-stream", headers=headers)
    body = emu.completion(chat, "", "tool_calls", usage)
    message = body["choices"][0]["message"]
    message["content"] = None
    message["tool_calls"] = tool_calls_json(planned)
    return json_response(body, 200, headers)


async def _tool_events(emu: Any, chat: Any, planned: list[PlannedCall],
                       usage: dict[str, Any]) -> AsyncIterator[bytes]:
    yield sse_frame(emu.chunk(chat, {"role": "assistant", "content": None}))
    deltas = tool_call_deltas(planned)
    # paced() paces text pieces: pace the deltas' positions, one token's time each.
    async for i in paced([str(i) for i in range(len(deltas))], chat.target.profile,
                         emu.time_scale, emu.rng()):
        yield sse_frame(emu.chunk(chat, deltas[int(i)]))
    for frame in emu.stream_end(chat, "tool_calls", usage):
        yield frame
