"""Structured output and function calling on the Gemini emulator: `responseMimeType` with
`responseJsonSchema` (or the OpenAPI-style `responseSchema`), `tools[].functionDeclarations`
and `toolConfig`, checked per the catalogue; answers as Gemini gives them (`functionCall`
parts, each call whole in one chunk, `finishReason: "STOP"`).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._structured import (
    PlannedCall,
    ToolSpec,
    answer_from_results,
    call_id,
    plan_calls,
    schema_answer,
)


class Refused(ValueError):
    """A 400 INVALID_ARGUMENT saying this."""


def _lower_types(schema: Any) -> Any:
    """An OpenAPI-style `responseSchema` (types in capitals) as JSON Schema."""
    if isinstance(schema, list):
        return [_lower_types(s) for s in schema]
    if not isinstance(schema, Mapping):
        return schema
    out = {k: _lower_types(v) for k, v in schema.items()}
    if isinstance(out.get("type"), str):
        out["type"] = out["type"].lower()
    return out


@dataclass(frozen=True)
class Structured:
    schema: Mapping[str, Any] | None
    tools: tuple[ToolSpec, ...]
    choice: str | None
    results: tuple[tuple[str, str], ...]
    signed: bool = False  # a thinking model: each call carries a thoughtSignature

    def planned(self, model: str, question: str, fault_kind: str | None) -> list[PlannedCall]:
        return plan_calls(self.tools, self.choice, question, model,
                          after_results=bool(self.results),
                          broken=fault_kind == "schema-mismatch")

    def text(self, model: str, prompt: str, question: str, fault_kind: str | None) -> str | None:
        if self.results:
            return answer_from_results(self.results)
        if self.schema is not None:
            return schema_answer(self.schema, model, None, prompt, question=question,
                                 broken=fault_kind == "schema-mismatch")
        return None


def _get(m: Any, name: str) -> Any:
    """A field by its camelCase name or its snake_case one: the API takes both (protobuf
    JSON), and the google-genai SDK sends some of each."""
    if not isinstance(m, Mapping):
        return None
    if name in m:
        return m[name]
    return m.get("".join("_" + c.lower() if c.isupper() else c for c in name))


def read_structured(body: Mapping[str, Any], config: Mapping[str, Any], info: Any,
                    model: str) -> Structured | None:
    js, oas = config.get("responseJsonSchema"), config.get("responseSchema")
    schema = None
    if js is not None or oas is not None:
        if js is not None and oas is not None:
            raise Refused("responseSchema and responseJsonSchema cannot both be set.")
        if config.get("responseMimeType") != "application/json":
            raise Refused("* GenerateContentRequest.generation_config.response_mime_type: "
                          "must be application/json when a response schema is set\n")
        if info.structured_output is False:
            raise Refused(f"Json mode is not enabled for models/{model}")
        schema = js if js is not None else _lower_types(oas)
    specs: list[ToolSpec] = []
    for i, t in enumerate(body.get("tools") or ()):
        decls = _get(t, "functionDeclarations")
        for j, d in enumerate(decls or ()):
            if not isinstance(d, Mapping) or not isinstance(d.get("name"), str):
                raise Refused(f"* GenerateContentRequest.tools[{i}].function_declarations[{j}]"
                              f".name: [FIELD_INVALID] Invalid function name.\n")
            params = _get(d, "parametersJsonSchema") or _lower_types(d.get("parameters")) or \
                {"type": "object", "properties": {}}
            specs.append(ToolSpec(d["name"], params))
    if specs and info.known and not info.tools:
        raise Refused(f"Function calling is not enabled for models/{model}")
    calling = _get(_get(body, "toolConfig"), "functionCallingConfig")
    choice = None
    if isinstance(calling, Mapping):
        mode = str(calling.get("mode", "AUTO"))
        allowed = _get(calling, "allowedFunctionNames") or []
        if mode == "ANY" and len(allowed) == 1:
            choice = str(allowed[0])
        else:
            choice = {"AUTO": "auto", "ANY": "required", "NONE": "none",
                      "VALIDATED": "auto"}.get(mode, "auto")
    if info.thinking == "level":
        _check_signatures(body.get("contents"))
    if schema is None and not specs:
        return None
    return Structured(schema, tuple(specs), choice, _results(body.get("contents")),
                      bool(info.reasoning))


def _check_signatures(contents: Any) -> None:
    """Gemini 3 refuses a replayed call of the current turn without its thoughtSignature."""
    if not isinstance(contents, list):
        return
    # The current turn: from the last user turn that carries text, on.
    start = max((i for i, c in enumerate(contents) if isinstance(c, Mapping)
                 and c.get("role", "user") == "user"
                 and any(isinstance(p, Mapping) and "text" in p for p in c.get("parts") or ())),
                default=0)
    for c in contents[start:]:
        if not isinstance(c, Mapping) or c.get("role") != "model":
            continue
        for pos, p in enumerate(c.get("parts") or ()):
            fc = _get(p, "functionCall")
            if isinstance(fc, Mapping) and not _get(p, "thoughtSignature"):
                raise Refused(f"Function call is missing a thought_signature in functionCall "
                              f"parts. This is required for tools to work correctly, and "
                              f"missing thought_signature may lead to degraded model "
                              f"performance. Additional data, function call "
                              f"`default_api:{fc.get('name')}` , position {pos + 1}. Please "
                              f"refer to https://ai.google.dev/gemini-api/docs/thought-signatures "
                              f"for more details.")


def _results(contents: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(contents, list) or not contents or not isinstance(contents[-1], Mapping):
        return ()
    out = []
    for p in contents[-1].get("parts") or ():  # (the last turn: the results just sent)
        fr = _get(p, "functionResponse")
        if isinstance(fr, Mapping):
            out.append((str(fr.get("name", "tool")), json.dumps(fr.get("response"))))
    return tuple(out)


def function_call_parts(planned: list[PlannedCall], signed: bool = False) -> list[dict[str, Any]]:
    """The calls as `functionCall` parts (with the id the Gemini API now gives each, and
    for a thinking model an opaque `thoughtSignature` to be sent back with the call)."""
    out: list[dict[str, Any]] = []
    for p in planned:
        part: dict[str, Any] = {"functionCall": {"name": p.name, "args": p.arguments,
                                                 "id": call_id("", p, 8)}}
        if signed:
            raw = hashlib.sha256(("signature|" + p.id_seed).encode()).digest()
            part["thoughtSignature"] = base64.b64encode(raw * 2).decode()
        out.append(part)
    return out
