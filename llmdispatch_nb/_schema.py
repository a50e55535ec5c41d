"""Structured output: a user's schema as JSON Schema, each vendor's dialect of it, and the
answer read back against it.

    output_schema(Person)              pydantic model, dataclass, TypedDict or a JSON Schema dict
    for_openai(s) / for_anthropic(s) / for_gemini(s)   what each vendor accepts, or an error
    read_answer(s, text)               -> (parsed, valid, errors): errors are data, not raised
    plain_data(parsed)                 the parsed answer as dicts and lists (for tables, scores)

Each vendor accepts a different subset of JSON Schema (vendor-protocols.md section 12).
Annotations a vendor does not take (`default`, `examples`, `$schema`) are dropped: they
change nothing about what is valid. A constraint a vendor does not take is translated where
the meaning survives (`oneOf` -> `anyOf`, `const` -> one-value `enum`, and for Anthropic,
as its own SDK does, a numeric or length limit moved into the description), else refused
before sending with a `RequestValidationError` naming the keyword and where it is, so
nobody learns of it from a vendor's 400. Pydantic (for models, dataclasses and TypedDicts)
is imported only when one is given.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from ._types import OutputSchema
from .errors import ConfigurationError, RequestValidationError

_NAME = re.compile(r"[^a-zA-Z0-9_-]")
# Describe a schema without constraining it: safe to drop for any vendor.
ANNOTATIONS = frozenset({"default", "examples", "$schema", "$comment", "$id", "readOnly",
                         "writeOnly", "deprecated"})


def _pydantic_adapter(obj: Any) -> Any:
    try:
        import pydantic
    except ImportError:  # pragma: no cover - pydantic comes with the package
        raise ConfigurationError("a dataclass or TypedDict schema needs pydantic: "
                                 "pip install pydantic") from None
    return pydantic.TypeAdapter(obj)


_SHIMS: dict[Any, Any] = {}


def _typed_dict_model(td: Any) -> Any:
    """A pydantic model standing in for a `typing.TypedDict` (pydantic reads only
    `typing_extensions.TypedDict` before Python 3.12): same fields, same required keys."""
    if td not in _SHIMS:
        import typing

        import pydantic

        hints = typing.get_type_hints(td)
        required = getattr(td, "__required_keys__", frozenset(hints))
        fields: dict[str, Any] = {k: (v, ... if k in required else None)
                                  for k, v in hints.items()}
        _SHIMS[td] = pydantic.create_model(td.__name__, **fields)
    return _SHIMS[td]


def _adapter_for(py: Any) -> Any:
    """Something with `json_schema()` and `validate_python()` for a dataclass/TypedDict."""
    try:
        return _pydantic_adapter(py)
    except Exception:
        if not _is_typed_dict(py):
            raise
        model = _typed_dict_model(py)

        class _Shim:
            def json_schema(self) -> dict[str, Any]:
                return dict(model.model_json_schema())

            def validate_python(self, data: Any) -> Any:
                return model.model_validate(data).model_dump(exclude_unset=True)

        return _Shim()


def _is_pydantic_model(obj: Any) -> bool:
    return isinstance(obj, type) and hasattr(obj, "model_json_schema") and \
        hasattr(obj, "model_validate")


def _is_typed_dict(obj: Any) -> bool:
    return isinstance(obj, type) and issubclass(obj, dict) and hasattr(obj, "__annotations__") \
        and hasattr(obj, "__total__")


# Types already read: pydantic builds a model's JSON Schema in milliseconds, and a loop of
# sends with the same `schema=Person` should pay that once (by identity: a class redefined
# in a notebook cell is a new class, read again).
_READ: dict[tuple[Any, str | None, bool], OutputSchema] = {}
_READ_LIMIT = 256


def output_schema(obj: Any, *, name: str | None = None, strict: bool = True) -> OutputSchema:
    """The schema the answer must fit, from a pydantic model, a dataclass, a TypedDict or a
    JSON Schema dict (an object at its root: every vendor wants one)."""
    if isinstance(obj, OutputSchema):
        return obj
    if isinstance(obj, type):
        key = (obj, name, strict)
        hit = _READ.get(key)
        if hit is None:
            if len(_READ) >= _READ_LIMIT:
                _READ.clear()
            hit = _READ[key] = _output_schema(obj, name, strict)
        return hit
    return _output_schema(obj, name, strict)


def _output_schema(obj: Any, name: str | None, strict: bool) -> OutputSchema:
    if _is_pydantic_model(obj):
        js, py = obj.model_json_schema(), obj
    elif (dataclasses.is_dataclass(obj) and isinstance(obj, type)) or _is_typed_dict(obj):
        js, py = _adapter_for(obj).json_schema(), obj
    elif isinstance(obj, Mapping):
        js, py = copy.deepcopy(dict(obj)), None
    else:
        raise RequestValidationError(
            f"schema must be a pydantic model, a dataclass, a TypedDict or a JSON Schema dict, "
            f"got {type(obj).__name__}")
    if js.get("type") != "object":
        raise RequestValidationError(
            "the schema's root must be an object (\"type\": \"object\"); wrap a list or a value "
            "in an object with one field")
    title = name or js.get("title") or getattr(obj, "__name__", None) or "response"
    desc = js.get("description")
    return OutputSchema(_NAME.sub("_", str(title))[:64] or "response", js, py,
                        desc if isinstance(desc, str) else None, strict)


# -- reading an answer -------------------------------------------------------------------


def _json_text(text: str) -> str:
    """The JSON in an answer: models asked for JSON mode sometimes fence it anyway."""
    t = text.strip()
    if t.startswith("```"):
        t = t.split("\n", 1)[1] if "\n" in t else ""
        t = t.rsplit("```", 1)[0]
    return t.strip()


def read_answer(schema: OutputSchema, text: str) -> tuple[Any, bool, tuple[str, ...]]:
    """(parsed, valid, errors) of an answer: the python type's instance (or the dict) when
    it fits, else None with each error as "path: what is wrong"."""
    if not text.strip():
        return None, False, ("the answer is empty",)
    try:
        data = json.loads(_json_text(text))
    except (ValueError, RecursionError) as exc:
        return None, False, (f"the answer is not JSON ({str(exc)[:80]})",)
    py = schema.python_type
    if py is not None:
        import pydantic

        try:
            if _is_pydantic_model(py):
                return py.model_validate(data), True, ()
            return _adapter_for(py).validate_python(data), True, ()
        except pydantic.ValidationError as exc:
            return None, False, tuple(
                f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}"
                for e in exc.errors())
    errors = tuple(schema_errors(data, schema.json_schema))
    return (data if not errors else None), not errors, errors


_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (
        isinstance(v, float) and v.is_integer()),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def plain_data(value: Any) -> Any:
    """A parsed answer as plain data: a pydantic model or a dataclass becomes its dict."""
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def schema_errors(value: Any, schema: Mapping[str, Any], root: Mapping[str, Any] | None = None,
                  path: str = "") -> list[str]:
    """What is wrong with `value` under `schema`, for the keywords the vendors accept
    (type, properties, required, additionalProperties, items, enum, const, anyOf/oneOf,
    allOf, $ref into $defs, lengths and bounds). A small reader of our own so a dict
    schema needs no extra package; pydantic types are checked by pydantic."""
    root = schema if root is None else root
    where = path or "(root)"
    if "$ref" in schema:
        ref = str(schema["$ref"])
        target: Any = root
        for part in ref.lstrip("#/").split("/") if ref != "#" else []:
            target = target.get(part, {}) if isinstance(target, Mapping) else {}
        return schema_errors(value, target, root, path)
    out: list[str] = []
    t = schema.get("type")
    if t is not None:
        kinds = t if isinstance(t, list) else [t]
        if not any(_TYPES.get(k, lambda v: True)(value) for k in kinds):
            return [f"{where}: expected {' or '.join(kinds)}, got {type(value).__name__}"]
    if value is None and schema.get("nullable"):
        return []
    if "enum" in schema and value not in schema["enum"]:
        out.append(f"{where}: {value!r} is not one of {schema['enum']!r}")
    if "const" in schema and value != schema["const"]:
        out.append(f"{where}: must be {schema['const']!r}")
    for key in ("anyOf", "oneOf"):
        if key in schema and not any(not schema_errors(value, s, root, path) for s in schema[key]):
            out.append(f"{where}: fits none of the {key} choices")
    for s in schema.get("allOf", ()):
        out.extend(schema_errors(value, s, root, path))
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        out.extend(f"{path + '.' if path else ''}{k}: required field missing"
                   for k in schema.get("required", ()) if k not in value)
        for k, v in value.items():
            sub = f"{path}.{k}" if path else k
            if k in props:
                out.extend(schema_errors(v, props[k], root, sub))
            elif schema.get("additionalProperties") is False:
                out.append(f"{sub}: not a field of the schema")
            elif isinstance(schema.get("additionalProperties"), Mapping):
                out.extend(schema_errors(v, schema["additionalProperties"], root, sub))
    if isinstance(value, list):
        if "items" in schema and isinstance(schema["items"], Mapping):
            for i, v in enumerate(value):
                out.extend(schema_errors(v, schema["items"], root, f"{path}[{i}]"))
        if len(value) < schema.get("minItems", 0):
            out.append(f"{where}: fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            out.append(f"{where}: more than {schema['maxItems']} items")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            out.append(f"{where}: shorter than {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            out.append(f"{where}: longer than {schema['maxLength']} characters")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            out.append(f"{where}: does not match {schema['pattern']!r}")
    if _TYPES["number"](value):
        if "minimum" in schema and value < schema["minimum"]:
            out.append(f"{where}: below the minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            out.append(f"{where}: above the maximum {schema['maximum']}")
    return out


# -- each vendor's dialect ---------------------------------------------------------------

# Keywords that hold schemas, and how (one, a list, a name -> schema map).
_ONE = ("items", "additionalProperties", "not", "if", "then", "else")
_MANY = ("anyOf", "oneOf", "allOf", "prefixItems")
_MAP = ("properties", "$defs", "definitions")


def _walk(schema: Any, fix: Callable[[dict[str, Any], str], dict[str, Any]],
          path: str = "") -> Any:
    """A copy of `schema` with `fix(node, path)` applied to every (sub)schema, leaves first."""
    if not isinstance(schema, Mapping):
        return schema
    node = dict(schema)
    for key in _ONE:
        if isinstance(node.get(key), Mapping):
            node[key] = _walk(node[key], fix, f"{path}/{key}")
    for key in _MANY:
        if isinstance(node.get(key), list):
            node[key] = [_walk(s, fix, f"{path}/{key}/{i}") for i, s in enumerate(node[key])]
    for key in _MAP:
        if isinstance(node.get(key), Mapping):
            node[key] = {k: _walk(s, fix, f"{path}/{key}/{k}") for k, s in node[key].items()}
    return fix(node, path)


def _refuse(vendor: str, keyword: str, path: str, hint: str = "") -> RequestValidationError:
    return RequestValidationError(
        f"{vendor} does not accept the JSON Schema keyword {keyword!r} (at {path or '/'}) in a "
        f"structured-output or tool schema{hint}; remove it from the schema")


def _common(node: dict[str, Any]) -> dict[str, Any]:
    for k in ANNOTATIONS & node.keys():
        del node[k]
    if "oneOf" in node:  # the same answers for the schemas models are given
        node["anyOf"] = node.pop("oneOf")
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if "definitions" in node:
        node["$defs"] = node.pop("definitions")
    if isinstance(node.get("$ref"), str):
        node["$ref"] = node["$ref"].replace("#/definitions/", "#/$defs/")
    if isinstance(node.get("allOf"), list) and len(node["allOf"]) == 1:
        node.update(node.pop("allOf")[0])  # pydantic's wrapper for a described $ref
    return node


OPENAI_REFUSED = ("allOf", "not", "if", "then", "else", "dependentRequired",
                  "dependentSchemas", "patternProperties", "unevaluatedProperties")


def _inline_sibling_refs(node: Any, defs: Mapping[str, Any]) -> Any:
    """A `$ref` with other keys beside it (pydantic's `{"$ref": ..., "description": ...}`)
    replaced by the definition it points to, those keys on top: strict mode reads a `$ref`
    alone (what OpenAI's own SDK does too)."""
    if isinstance(node, list):
        return [_inline_sibling_refs(n, defs) for n in node]
    if not isinstance(node, Mapping):
        return node
    out = {k: _inline_sibling_refs(v, defs) for k, v in node.items()}
    ref = out.get("$ref")
    if isinstance(ref, str) and len(out) > 1 and ref.startswith("#/$defs/"):
        target = defs.get(ref.rsplit("/", 1)[-1])
        if isinstance(target, Mapping):
            del out["$ref"]
            out = {**_inline_sibling_refs(target, defs), **out}
    return out


def for_openai(schema: Mapping[str, Any], *, strict: bool = True) -> dict[str, Any]:
    """OpenAI strict mode: every object closed (`additionalProperties: false`) with every
    property required, as OpenAI's own SDK makes a pydantic model strict. An optional
    field is not made nullable: a null would not fit the schema asked for (a `list = []`
    field of a pydantic model, say), while a value always does."""
    defs = schema.get("$defs") or schema.get("definitions") or {}
    schema = _inline_sibling_refs(schema, defs if isinstance(defs, Mapping) else {})

    def fix(node: dict[str, Any], path: str) -> dict[str, Any]:
        node = _common(node)
        for k in OPENAI_REFUSED:
            if k in node:
                raise _refuse("OpenAI", k, path)
        if strict and (node.get("type") == "object" or "properties" in node):
            props = node.get("properties") or {}
            node["properties"] = props
            node["required"] = list(props)
            if node.get("additionalProperties") not in (None, False):
                raise _refuse("OpenAI", "additionalProperties", path,
                              " other than false (strict mode closes every object)")
            node["additionalProperties"] = False
        return node

    return _walk(schema, fix)


# What Anthropic's own SDK keeps (`lib/_parse/_transform.py`); everything else it moves
# into the description, which is what we do too.
_ANTHROPIC_KEEP = frozenset({"type", "enum", "description", "title", "$defs", "$ref", "anyOf",
                             "allOf", "properties", "required", "items", "additionalProperties",
                             "minItems", "format", "const"})
_ANTHROPIC_FORMATS = frozenset({"date-time", "time", "date", "duration", "email", "hostname",
                                "uri", "ipv4", "ipv6", "uuid"})


def for_anthropic(schema: Mapping[str, Any]) -> dict[str, Any]:
    """Anthropic: closed objects; limits (minimum, maxLength, pattern...) become words in
    the description, as Anthropic's SDK does; `not` and conditionals are refused."""

    def fix(node: dict[str, Any], path: str) -> dict[str, Any]:
        node = _common(node)
        for k in ("not", "if", "then", "else", "patternProperties"):
            if k in node:
                raise _refuse("Anthropic", k, path)
        notes = []
        for k in sorted(set(node) - _ANTHROPIC_KEEP):
            notes.append(f"{k}: {json.dumps(node.pop(k))}")
        if "minItems" in node and node["minItems"] not in (0, 1):
            notes.append(f"minItems: {node.pop('minItems')}")
        if "format" in node and node["format"] not in _ANTHROPIC_FORMATS:
            notes.append(f"format: {node.pop('format')}")
        if notes:
            node["description"] = " ".join(
                [*([node["description"]] if node.get("description") else []),
                 "{" + ", ".join(notes) + "}"])
        if node.get("type") == "object" or "properties" in node:
            if node.get("additionalProperties") not in (None, False):
                raise _refuse("Anthropic", "additionalProperties", path, " other than false")
            node["additionalProperties"] = False
        return node

    return _walk(schema, fix)


# Gemini's `responseJsonSchema` / `parametersJsonSchema` keywords (its SDK's docstring).
_GEMINI_KEEP = frozenset({"$id", "$defs", "$ref", "$anchor", "type", "format", "title",
                          "description", "enum", "items", "prefixItems", "minItems", "maxItems",
                          "minimum", "maximum", "anyOf", "properties", "additionalProperties",
                          "required", "propertyOrdering"})


def for_gemini(schema: Mapping[str, Any]) -> dict[str, Any]:
    """Gemini's JSON Schema dialect (`responseJsonSchema`): a fixed keyword list; anything
    else is refused by name (its API answers 400 for them)."""

    def fix(node: dict[str, Any], path: str) -> dict[str, Any]:
        node = _common(node)
        for k in node:
            if k not in _GEMINI_KEEP:
                raise _refuse("Gemini", k, path)
        return node

    return _walk(schema, fix)


def for_json_mode(schema: OutputSchema) -> str:
    """The instruction a server without schema support gets beside JSON mode."""
    return ("Answer with one JSON object only, no prose, that fits this JSON Schema:\n"
            + json.dumps(schema.json_schema, separators=(",", ":")))
