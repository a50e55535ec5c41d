"""What the emulators answer to a schema or to tools, the same way for every vendor (each
emulator puts it in its own wire shape).

- A schema: JSON that fits it, deterministic per (model, prompt, seed); the fault kind
  "schema-mismatch" makes it JSON that does not fit (a required field left out), as models
  without constrained decoding do.
- Tools: which calls the model makes, with arguments built from each tool's schema (a
  string parameter takes a capitalised word of the question, "Paris"; one such parameter
  and several names in the question make one call per name, in parallel where the
  request allows it). A conversation whose last turn is tool results is answered in text
  that uses them. The same fault breaks the arguments (a required one left out).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_WORD = re.compile(r"\b[A-Z][a-z]{2,}\b")
_ANY_WORD = re.compile(r"[A-Za-z]{3,}")
# Capitalised words that start sentences rather than name things.
_COMMON = frozenset({"What", "Whats", "The", "How", "Please", "Give", "Tell", "Name", "Which",
                     "Who", "When", "Where", "Why", "Can", "Could", "Would", "And", "Use",
                     "Call", "Find", "Get", "Look", "Answer", "Describe", "Make", "Write"})


def rng_for(*parts: Any) -> random.Random:
    return random.Random(hashlib.sha256("|".join(map(str, parts)).encode()).digest())


def names_in(question: str) -> list[str]:
    """Capitalised words of the question (places, people), in order, once each."""
    seen: list[str] = []
    for sentence in re.split(r"[.!?\n]+", question):
        # A sentence's first word is capitalised for grammar, not because it names a thing.
        for w in _WORD.findall(" ".join(sentence.split()[1:])):
            if w not in _COMMON and w not in seen:
                seen.append(w)
    return seen


def _resolve(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = schema.get("$ref")
    if not isinstance(ref, str):
        return schema
    node: Any = root
    for part in ref.lstrip("#/").split("/"):
        node = node.get(part, {}) if isinstance(node, Mapping) else {}
    return node if isinstance(node, Mapping) else {}


_FORMATS = {"date": "2026-01-15", "date-time": "2026-01-15T09:30:00Z", "time": "09:30:00",
            "email": "someone@example.com", "uri": "https://example.com/", "uuid":
            "123e4567-e89b-12d3-a456-426614174000", "hostname": "example.com",
            "ipv4": "192.0.2.1", "ipv6": "2001:db8::1", "duration": "P1D"}


def value_for(schema: Mapping[str, Any], rng: random.Random, root: Mapping[str, Any],
              words: Sequence[str], name: str = "", depth: int = 0) -> Any:
    """A value that fits `schema` (the keywords the vendors accept)."""
    schema = _resolve(schema, root)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return rng.choice(schema["enum"])
    for key in ("anyOf", "oneOf"):
        options = [o for o in schema.get(key) or () if isinstance(o, Mapping)]
        if options:
            real = [o for o in options if _resolve(o, root).get("type") != "null"] or options
            return value_for(real[0], rng, root, words, name, depth)
    if isinstance(schema.get("allOf"), list) and schema["allOf"]:
        return value_for(schema["allOf"][0], rng, root, words, name, depth)
    t = schema.get("type")
    if isinstance(t, list):
        t = next((x for x in t if x != "null"), "null")
    if t is None:
        t = "object" if "properties" in schema else "string"
    if t == "object":
        props = schema.get("properties") or {}
        return {k: value_for(v, rng, root, words, k, depth + 1) for k, v in props.items()} \
            if depth < 6 else {}
    if t == "array":
        lo = int(schema.get("minItems", 1) or 0)
        hi = int(schema.get("maxItems", max(lo, 3)))
        n = rng.randint(lo, max(lo, min(hi, 3)))
        item: Mapping[str, Any] = schema["items"] if isinstance(schema.get("items"), Mapping) \
            else {}
        return [value_for(item, rng, root, words, name, depth + 1) for _ in range(n)]
    if t == "integer":
        lo = int(schema.get("minimum", 0))
        return rng.randint(lo, int(schema.get("maximum", lo + 99)))
    if t == "number":
        low = float(schema.get("minimum", 0))
        return round(rng.uniform(low, float(schema.get("maximum", low + 100))), 2)
    if t == "boolean":
        return rng.random() < 0.5
    if t == "null":
        return None
    fmt = schema.get("format")
    if isinstance(fmt, str) and fmt in _FORMATS:
        return _FORMATS[fmt]
    text = (words[rng.randrange(len(words))] if words else name.replace("_", " ").title()
            or "example")
    if "maxLength" in schema:
        text = text[: int(schema["maxLength"])]
    return text + "x" * max(0, int(schema.get("minLength", 0)) - len(text))


def _break(value: Any, schema: Mapping[str, Any], root: Mapping[str, Any]) -> Any:
    """`value` made not to fit: a required field left out, else a field of the wrong type."""
    schema = _resolve(schema, root)
    if isinstance(value, dict):
        required = [k for k in schema.get("required") or () if k in value]
        if required:
            value = dict(value)
            del value[required[0]]
            return value
        if value:
            k = next(iter(value))
            return {**value, k: [] if not isinstance(value[k], list) else "not a list"}
    return {"unexpected": value}


def schema_answer(schema: Mapping[str, Any], *seed: Any, question: str = "",
                  broken: bool = False) -> str:
    """JSON text answering with `schema`; `broken` makes it not fit."""
    rng = rng_for("schema", *seed)
    words = names_in(question) or [w.capitalize() for w in _ANY_WORD.findall(question)][:6]
    value = value_for(schema, rng, schema, words)
    if broken:
        value = _break(value, schema, schema)
    return json.dumps(value)


def json_pieces(text: str, size: int = 12) -> list[str]:
    """JSON text in the pieces a stream carries it in."""
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


@dataclass(frozen=True)
class ToolSpec:
    """A tool as an emulator reads it from any vendor's request."""

    name: str
    parameters: Mapping[str, Any]


@dataclass(frozen=True)
class PlannedCall:
    name: str
    arguments: dict[str, Any]
    id_seed: str

    def json(self) -> str:
        return json.dumps(self.arguments)


def plan_calls(tools: Sequence[ToolSpec], choice: str | None, question: str, *seed: Any,
               after_results: bool, parallel: bool = True,
               broken: bool = False) -> list[PlannedCall]:
    """The calls the model makes. `choice`: "auto" (or None), "none", "required" or a
    tool's name. After tool results, "auto" answers in text."""
    if not tools or choice == "none" or (after_results and choice in (None, "auto")):
        return []
    offered = [t for t in tools if t.name == choice] if choice not in (None, "auto",
                                                                       "required") else tools
    rng = rng_for("tools", question, *seed)
    names = names_in(question)
    out: list[PlannedCall] = []
    for tool in offered:
        params = tool.parameters
        props = params.get("properties") or {}
        strings = [k for k, v in props.items()
                   if isinstance(v, Mapping) and _resolve(v, params).get("type") == "string"
                   and "enum" not in v]
        # One string parameter and several names asked about: one call per name (a tool
        # named in the choice is called once, as models do when made to call it).
        targets = names[:3] if len(strings) == 1 and len(names) > 1 and choice in (
            None, "auto", "required") else [None]
        for who in targets:
            args = value_for(params, rng, params, [who] if who else names)
            if broken:
                args = _break(args, params, params)
            out.append(PlannedCall(tool.name, args, f"{tool.name}|{who}|{len(out)}|{question}"))
    if not parallel:
        out = out[:1]
    return out


def answer_from_results(results: Sequence[tuple[str, str]]) -> str:
    """The text a model writes once it has its tools' results."""
    said = "; ".join(f"{name} returned {text[:200]}" for name, text in results)
    return f"Based on the tool results ({said}), here is the answer."


def call_id(prefix: str, planned: PlannedCall, size: int = 24) -> str:
    digest = hashlib.sha256(planned.id_seed.encode()).hexdigest()
    return prefix + digest[:size]
