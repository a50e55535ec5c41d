"""Filling `{name}`, `{In[3]}`, `{Out[4]}` into a prompt, and leaving code alone.

A prompt often holds code: dict literals, f-strings, JSON, C blocks. So only a brace pair
whose inside is exactly a *reference* is replaced: a name, then any of `.attr`,
`[int]`, `['key']`, with no spaces (so `{ x }` in a C or JS block is left alone). Nothing is evaluated: the reference is walked step by step with getattr and
getitem, and attributes that start with `_` are refused. Everything else in braces is
sent exactly as written. `{{name}}` sends `{name}` (the escape); other doubled braces,
such as the end of a nested dict literal, are code and stay as written.

A reference that does not resolve (no such variable, no such index) is sent as written
and reported, so a `{value}` inside pasted code still reaches the model intact; the magic
prints one warning line naming them.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_INDEX = r"""\[\s*(?:-?\d+|'[^'\\]*'|"[^"\\]*")\s*\]"""
_REFERENCE = re.compile(rf"^({_NAME})((?:\.{_NAME}|{_INDEX})*)$")
_STEP = re.compile(rf"""\.({_NAME})|\[\s*(-?\d+|'[^'\\]*'|"[^"\\]*")\s*\]""")


@dataclass
class Filled:
    text: str
    replaced: list[str] = field(default_factory=list)
    unresolved: list[tuple[str, str]] = field(default_factory=list)  # (placeholder, why)

    def warning(self) -> str | None:
        if not self.unresolved:
            return None
        shown = ", ".join(f"{{{p}}} ({why})" for p, why in self.unresolved[:4])
        more = f" and {len(self.unresolved) - 4} more" if len(self.unresolved) > 4 else ""
        return (f"llm: sent as written: {shown}{more}. Write {{{{ }}}} for literal braces, "
                "or use --no-interpolate")


class _Unresolved(Exception):
    pass


def _lookup(reference: str, namespace: Mapping[str, Any]) -> Any:
    m = _REFERENCE.match(reference)
    assert m is not None
    name, rest = m.group(1), m.group(2)
    if name not in namespace:
        raise _Unresolved(f"no variable {name!r}")
    value = namespace[name]
    for step in _STEP.finditer(rest):
        attr, index = step.group(1), step.group(2)
        if attr is not None:
            if attr.startswith("_"):
                raise _Unresolved(f"private attribute {attr!r}")
            try:
                value = getattr(value, attr)
            except AttributeError:
                raise _Unresolved(f"no attribute {attr!r}") from None
        else:
            try:
                # int() refuses over 4300 digits (ValueError): no list is that long anyway.
                key: int | str = index[1:-1] if index[0] in "'\"" else int(index)
                value = operator.getitem(value, key)
            except (LookupError, TypeError, ValueError):
                raise _Unresolved(f"no item [{index}]") from None
    return value


def as_prompt_text(value: Any) -> str:
    """How a value reads inside a prompt: strings as they are, results as their text."""
    if isinstance(value, str):
        return value
    text = getattr(value, "text", None)
    if isinstance(text, str) and hasattr(value, "_repr_mimebundle_"):
        return text  # one of our results: its answer, not its repr
    return str(value)


def is_reference(inside: str) -> bool:
    return _REFERENCE.match(inside) is not None


def fill(template: str, namespace: Mapping[str, Any]) -> Filled:
    """Replace references in braces with values from `namespace`."""
    out: list[str] = []
    result = Filled("")
    i, n = 0, len(template)
    while i < n:
        ch = template[i]
        if ch == "{" and template.startswith("{{", i):
            # `{{x}}` is an escaped placeholder: send `{x}`. Any other doubled brace
            # (the end of a nested dict literal, say) is code and stays as it is.
            close = template.find("}}", i + 2)
            inside = template[i + 2: close] if close != -1 else ""
            if close != -1 and not any(c in inside for c in "{}\n"):
                out.append("{" + inside + "}")
                i = close + 2
            else:
                out.append("{{")
                i += 2
            continue
        if ch == "{":
            close = template.find("}", i + 1)
            inside = template[i + 1: close] if close != -1 else ""
            if close == -1 or "{" in inside or "\n" in inside or not is_reference(inside):
                out.append("{")
                i += 1
                continue
            try:
                value = _lookup(inside, namespace)
            except _Unresolved as why:
                result.unresolved.append((inside.strip(), str(why)))
                out.append(template[i: close + 1])
            else:
                out.append(as_prompt_text(value))
                result.replaced.append(inside.strip())
            i = close + 1
            continue
        out.append(ch)
        i += 1
    result.text = "".join(out)
    return result
