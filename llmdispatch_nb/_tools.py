"""Tools: a Python function (or an explicit schema) as a `Tool`, and a model's call run
against the user's function.

    as_tool(get_weather)          signature + docstring -> name, description, JSON Schema
    as_tool({"name": ..., "description": ..., "parameters": {...}})   as given
    run_call(tool, call)          -> (result text, is_error): a failure is data for the model

The arguments' schema comes from the annotations through pydantic (so `Literal`, enums,
dataclasses and models work as they do in pydantic), each parameter's description from the
docstring's `Args:` section (Google style) or `:param x:` lines (Sphinx style). A tool's
failure is sent back to the model as the result (it can try again), never raised in the
user's cell.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
from collections.abc import Callable, Mapping
from typing import Any, get_type_hints

from ._types import Tool, ToolCall
from .errors import RequestValidationError

_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_-]{0,63}$")
_GOOGLE_ARG = re.compile(r"^\s{2,}(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.+)$")
_SPHINX_ARG = re.compile(r"^\s*:param\s+(?:\w+\s+)?(\w+)\s*:\s*(.+)$")


def _docstring_parts(doc: str | None) -> tuple[str, dict[str, str]]:
    """The summary (text before the first section) and each parameter's description."""
    if not doc:
        return "", {}
    text = inspect.cleandoc(doc)
    summary: list[str] = []
    params: dict[str, str] = {}
    section = None
    last = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.rstrip(":").lower() in ("args", "arguments", "parameters", "params") \
                and stripped.endswith(":"):
            section = "args"
            continue
        if stripped.endswith(":") and stripped[:-1].istitle() and " " not in stripped[:-1]:
            section = "other"  # Returns:, Raises:, Examples:
            continue
        m = _SPHINX_ARG.match(line)
        if m:
            params[m.group(1)] = m.group(2).strip()
            section = "sphinx"
            continue
        if section == "args":
            m = _GOOGLE_ARG.match("  " + line if not line.startswith(" ") else line)
            if m and not line.startswith("     "):
                last = m.group(1).lstrip("*")
                params[last] = m.group(2).strip()
            elif stripped and last:
                params[last] += " " + stripped
            continue
        if section is None and not stripped.startswith(":"):
            summary.append(line)
    return " ".join(" ".join(summary).split()), params


def function_schema(fn: Callable[..., Any]) -> dict[str, Any]:
    """The JSON Schema (an object) of `fn`'s arguments."""
    import pydantic

    sig = inspect.signature(fn)
    try:
        hints = get_type_hints(fn)
    except Exception:  # a forward reference that does not resolve: fall back to Any
        hints = {}
    _, described = _docstring_parts(fn.__doc__)
    fields: dict[str, Any] = {}
    for name, p in sig.parameters.items():
        if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue
        if name in ("self", "cls"):
            continue
        annotation = hints.get(name, Any)
        default = ... if p.default is inspect.Parameter.empty else p.default
        fields[name] = (annotation, pydantic.Field(default, description=described.get(name)))
    model = pydantic.create_model(f"{fn.__name__}_arguments", **fields)
    schema = model.model_json_schema()
    schema.pop("title", None)
    for prop in (schema.get("properties") or {}).values():
        prop.pop("title", None)  # "Title": noise the model is charged tokens for
    schema.setdefault("properties", {})
    return schema


# Functions already read (by identity): building a signature's schema through pydantic
# takes milliseconds, paid once, not on every send of the same tools.
_READ: dict[Any, Tool] = {}
_READ_LIMIT = 256


def as_tool(obj: Any) -> Tool:
    """A `Tool` from a function, a `Tool`, or a dict: `{"name", "description",
    "parameters"}` or OpenAI's `{"type": "function", "function": {...}}`."""
    if isinstance(obj, Tool):
        return obj
    if callable(obj) and not isinstance(obj, Mapping):
        try:
            hit = _READ.get(obj)
        except TypeError:  # an unhashable callable: read every time
            return _as_tool(obj)
        if hit is None:
            if len(_READ) >= _READ_LIMIT:
                _READ.clear()
            hit = _READ[obj] = _as_tool(obj)
        return hit
    return _as_tool(obj)


def _as_tool(obj: Any) -> Tool:
    if isinstance(obj, Mapping):
        spec = obj.get("function") if obj.get("type") == "function" else obj
        if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str):
            raise RequestValidationError("a tool given as a dict needs a 'name' (and "
                                         "'description', 'parameters')")
        params = spec.get("parameters") or spec.get("input_schema") or \
            {"type": "object", "properties": {}}
        tool = Tool(spec["name"], str(spec.get("description") or ""), dict(params),
                    obj.get("callable") if callable(obj.get("callable")) else None,
                    bool(spec.get("strict", False)))
    elif callable(obj):
        name = getattr(obj, "__name__", None)
        if not isinstance(name, str) or name == "<lambda>":
            raise RequestValidationError("a tool must be a named function (def ...), not a "
                                         "lambda: its name is what the model calls")
        summary, _ = _docstring_parts(obj.__doc__)
        tool = Tool(name, summary, function_schema(obj), obj)
    else:
        raise RequestValidationError(f"a tool must be a function or a dict schema, got "
                                     f"{type(obj).__name__}")
    if not _NAME.match(tool.name):
        raise RequestValidationError(
            f"tool name {tool.name!r} is not accepted by every vendor: use letters, digits, "
            f"_ and -, starting with a letter or _, at most 64 characters")
    if tool.parameters.get("type") != "object":
        raise RequestValidationError(f"tool {tool.name!r}: its parameters must be a JSON "
                                     f"Schema object")
    return tool


def parse_arguments(raw: str | Mapping[str, Any] | None) -> tuple[dict[str, Any], str | None]:
    """A call's arguments as a dict, and why not when they cannot be read (models do
    send broken JSON; that is the model's answer, kept as data)."""
    if raw is None or raw == "":
        return {}, None
    if isinstance(raw, Mapping):
        return dict(raw), None
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return {}, f"the arguments are not JSON: {raw[:80]!r}"
    if not isinstance(value, dict):
        return {}, f"the arguments are a {type(value).__name__}, not an object"
    return value, None


def _result_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        import pydantic

        if isinstance(value, pydantic.BaseModel):
            return value.model_dump_json()
    except ImportError:  # pragma: no cover
        pass
    return json.dumps(value, default=str)


async def run_call(tool: Tool | None, call: ToolCall) -> tuple[str, bool]:
    """Run one call with the user's function: (result as text, whether it failed). The
    arguments are checked and converted by pydantic against the signature first."""
    if tool is None or tool.function is None:
        return f"error: no function named {call.name!r} is available", True
    if call.error:
        return f"error: {call.error}", True
    fn = tool.function
    try:
        import pydantic

        bound = pydantic.validate_call(fn)
        if inspect.iscoroutinefunction(fn):
            result = await bound(**call.arguments)
        else:  # in a worker thread: a slow function must not stall the dispatcher's loop
            result = await asyncio.to_thread(bound, **call.arguments)
            if inspect.isawaitable(result):
                result = await result
    except pydantic.ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return f"error: invalid arguments for {call.name}: {problems}", True
    except Exception as exc:  # the user's function failed: the model is told, and may retry
        return f"error: {type(exc).__name__}: {exc}", True
    return _result_text(result), False

