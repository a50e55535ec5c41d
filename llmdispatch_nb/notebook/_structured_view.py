"""What a `%%llm` cell asks and shows beyond text: `--schema NAME`, `--tool NAME` and
`--image PATH` read from the notebook (`cell_extras`), then the parsed object of a schema
answer as a small table with valid/invalid, the calls a tool answer made (and, with
`--run-tools`, what each returned), and thumbnails of the attached images.

Each piece comes as HTML (for the side-by-side grid and one answer), Markdown and plain
text; every string from a model or a user passes through `_escape` once, here. Nothing
is shown for an answer without a schema, tool calls or images, so the displays that call
these functions look as before for plain prompts.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from typing import Any

from .._schema import plain_data
from .._types import Attachment, Response
from ._errors import CellError
from ._escape import html_block, html_text, markdown_cell, markdown_text

_OK = "color:#1a7f37;font-weight:600"
_BAD = "color:#b00020;font-weight:600"
_TABLE = "border-collapse:collapse;font-size:90%;margin:4px 0"
_TD = "border:1px solid #d0d7de;padding:1px 6px;text-align:left;vertical-align:top"
_MAX_ROWS = 12


def _short(value: Any, limit: int = 80) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _rows(value: Any) -> list[tuple[str, str]]:
    data = plain_data(value)
    if isinstance(data, Mapping):
        return [(str(k), _short(v)) for k, v in list(data.items())[:_MAX_ROWS]]
    return [("value", _short(data))]


def _call_text(name: str, arguments: Mapping[str, Any]) -> str:
    args = ", ".join(f"{k}={_short(v, 40)}" for k, v in arguments.items())
    return f"{name}({args})"


def _verdict(resp: Response, schema: str | None) -> tuple[bool, str]:
    what = f" against {schema}" if schema else ""
    if resp.valid:
        return True, f"valid{what}"
    errors = "; ".join(resp.validation_errors) or "the answer does not fit"
    return False, f"invalid{what}: {errors}"


def _parts(run: Any) -> tuple[Response | None, str | None, Any]:
    """A `_run.Run`'s answer, the schema's name and the tool run (when --run-tools ran)."""
    if run is None:
        return None, None, None
    if isinstance(run, Response):  # the panel's column keeps responses, not runs
        return run, None, None
    return run.response, getattr(run, "schema", None), getattr(run, "tool_run", None)


def _calls(resp: Response, tool_run: Any) -> list[tuple[str, str | None, bool]]:
    """(call, result or None, failed) per tool call: every round's with --run-tools."""
    if tool_run is not None:
        return [(_call_text(r.call.name, r.call.arguments), r.result, r.failed)
                for r in tool_run.results]
    return [(_call_text(c.name, c.arguments), None, False) for c in resp.tool_calls]


# -- HTML ------------------------------------------------------------------------------------


def structured_html(run: Any) -> str:
    """The parsed table and verdict, and the tool calls, of one run's answer ("" when
    there are none)."""
    resp, schema, tool_run = _parts(run)
    if resp is None:
        return ""
    parts: list[str] = []
    if resp.valid is not None:
        ok, verdict = _verdict(resp, schema)
        if resp.parsed is not None:
            rows = "".join(f'<tr><th style="{_TD}">{html_text(k)}</th><td style="{_TD}">'
                           f"{html_text(v)}</td></tr>" for k, v in _rows(resp.parsed))
            parts.append(f'<table style="{_TABLE}">{rows}</table>')
        parts.append(f'<div style="{_OK if ok else _BAD}">{html_text(verdict)}</div>')
    calls = _calls(resp, tool_run)
    if calls:
        items = []
        for call, result, failed in calls:
            line = f"<code>{html_text(call)}</code>"
            if result is not None:
                style = f' style="{_BAD}"' if failed else ""
                line += f" → <span{style}>{html_text(_short(result))}</span>"
            items.append(f"<li>{line}</li>")
        ran = "tool calls, run" if tool_run is not None else "tool calls (not run: add --run-tools)"
        parts.append(f'<div style="font-size:90%"><b>{html_text(ran)}</b>'
                     f'<ul style="margin:2px 0">{"".join(items)}</ul></div>')
    return html_block("".join(parts)) if parts else ""


def _thumbnail(a: Attachment) -> str:
    if a.kind != "image" or a.data is None:
        return html_text(f"{a.kind}: {a.name or a.url or a.media_type}")
    src = f"data:{a.media_type};base64,{base64.b64encode(a.data).decode('ascii')}"
    title = f"{a.name or 'image'} · {a.media_type} · {a.size:,} bytes"
    return (f'<figure style="margin:0;display:inline-block;text-align:center">'
            f'<img src="{html_text(src)}" alt="{html_text(title)}" title="{html_text(title)}" '
            f'style="max-height:96px;max-width:160px;image-rendering:pixelated;'
            f'border:1px solid #d0d7de"/>'
            f'<figcaption style="font-size:80%;color:#57606a">{html_text(a.name or "image")}'
            f"</figcaption></figure>")


def thumbnails_bundle(attached: Sequence[Attachment]) -> dict[str, str]:
    """The images a cell attaches, shown small above its answers."""
    names = ", ".join(f"{a.name or a.kind} ({a.media_type}, {a.size or 0:,} bytes)"
                      for a in attached)
    return {"text/plain": f"attached: {names}",
            "text/html": html_block("".join(_thumbnail(a) for a in attached),
                                    "display:flex;gap:8px;margin:4px 0")}


# -- Markdown and plain text -----------------------------------------------------------------


def structured_markdown(run: Any) -> str:
    resp, schema, tool_run = _parts(run)
    if resp is None:
        return ""
    out: list[str] = []
    if resp.valid is not None:
        verdict = _verdict(resp, schema)[1]
        if resp.parsed is not None:
            out.append("| field | value |\n| --- | --- |\n" + "\n".join(
                f"| {markdown_cell(k)} | {markdown_cell(v)} |" for k, v in _rows(resp.parsed)))
        out.append(f"**{markdown_text(verdict)}**")
    for call, result, _failed in _calls(resp, tool_run):
        line = f"- tool call {markdown_text(call)}"
        out.append(line + (f" → {markdown_text(_short(result))}" if result is not None else ""))
    return "\n\n".join(out)


def structured_text(run: Any) -> str:
    resp, schema, tool_run = _parts(run)
    if resp is None:
        return ""
    out: list[str] = []
    if resp.valid is not None:
        out.extend(f"  {k}: {v}" for k, v in _rows(resp.parsed) if resp.parsed is not None)
        out.append(_verdict(resp, schema)[1])
    for call, result, _failed in _calls(resp, tool_run):
        out.append(f"tool call {call}" + (f" -> {_short(result)}" if result is not None else ""))
    return "\n".join(out)


# -- reading the cell's names ------------------------------------------------------------------


def cell_extras(schema: str | None, tools: Sequence[str], images: Sequence[str],
                namespace: Mapping[str, Any]) -> tuple[dict[str, Any], list[Attachment]]:
    """The `schema=` / `tools=` parameters and the attachments a cell's options name;
    a missing name or file is one `CellError` line."""
    from .._attachments import File, Image, sniff

    params: dict[str, Any] = {}
    if schema is not None:
        if schema not in namespace:
            raise CellError(f"--schema {schema}: no variable named {schema!r} in the notebook; "
                            f"define a pydantic model, dataclass, TypedDict or JSON Schema dict")
        params["schema"] = namespace[schema]
    found = []
    for name in tools:
        fn = namespace.get(name)
        if not callable(fn):
            raise CellError(f"--tool {name}: no function named {name!r} in the notebook"
                            if fn is None else f"--tool {name}: {name!r} is a "
                            f"{type(fn).__name__}, not a function")
        found.append(fn)
    if found:
        params["tools"] = found
    attached = []
    for source in images:
        value = namespace.get(source, source) if source.isidentifier() else source
        data = value if isinstance(value, bytes) else None
        if isinstance(value, str):
            try:
                with open(value, "rb") as f:
                    data = f.read(8)
            except (OSError, ValueError) as exc:  # ValueError: a NUL or lone surrogate in it
                why = getattr(exc, "strerror", None) or exc
                raise CellError(f"--image {source!r}: cannot read it ({why})") from None
        is_pdf = data is not None and sniff(data) == "application/pdf"
        try:
            attached.append(File(value) if is_pdf else Image(value))
        except Exception as exc:  # RequestValidationError: not an image, not found
            raise CellError(f"--image {source}: {exc}") from None
    return params, attached
