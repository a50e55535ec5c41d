"""How answers look: the footer, the side-by-side grid, tables, error lines, live output.

Everything here but `LiveOutput` is a pure function from data to strings or MIME
bundles, so the widget panel can put the same grid into an `ipywidgets.HTML` and the
tests can read it without a frontend. Text becomes Markdown or HTML only through
`_escape` (so `$5 or $10` never turns into maths, a `|` never splits a table cell).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._types import Response
from ._escape import (
    clean,
    html_block,
    html_inline,
    html_text,
    markdown_answer,
    markdown_cell,
    markdown_text,
)
from ._run import Column, Run
from ._structured_view import structured_html, structured_markdown, structured_text

Bundle = dict[str, Any]

CURSOR = "▍"

# -- numbers -------------------------------------------------------------------------------


def fmt_cost(usd: float | None) -> str:
    """Dollars with the digits that matter; "?" when the price is unknown, never $0."""
    if usd is None:
        return "?"
    if usd == 0:
        return "$0"
    if usd < 0.01:
        return f"${usd:.6f}"
    return f"${usd:.4f}"


def fmt_seconds(s: float | None, sd: float | None = None) -> str:
    if s is None:
        return "?"
    text = f"{s:.2f} s"
    return f"{text} ± {sd:.2f}" if sd is not None else text


def _attempt_flags(resp: Response) -> list[str]:
    """Retried / fell back, read from the response's attempt trail."""
    flags: list[str] = []
    failed = [a for a in resp.attempts if a.status != "ok"]
    if not failed:
        return flags
    served = (resp.vendor, resp.model_requested)
    if any((a.vendor, a.model) == served for a in failed):
        flags.append("retried")
    others = [f"{a.vendor}:{a.model}" for a in failed if (a.vendor, a.model) != served]
    if others:
        flags.append("fell back from " + ", ".join(dict.fromkeys(others)))
    return flags


def footer_parts(resp: Response) -> list[str]:
    usage = resp.usage
    approx = "~" if usage.source == "estimated" else ""
    parts = [
        f"{resp.vendor} · {resp.model}",
        fmt_seconds(resp.latency_s),
        f"ttft {fmt_seconds(resp.ttft_s)}" if resp.ttft_s is not None else "ttft –",
        f"{approx}{usage.input_tokens} → {approx}{usage.output_tokens} tokens"
        # Reasoning is billed inside the output: say how much of it was thinking.
        + (f" ({usage.reasoning_tokens} reasoning)" if usage.reasoning_tokens else ""),
        fmt_cost(resp.cost.usd),
    ]
    if resp.finish_reason == "length":
        parts.append("cut at max tokens")
    elif resp.finish_reason not in ("stop", "tool_calls"):
        parts.append(f"finish: {resp.finish_reason}")
    if resp.cached:
        parts.append("cached")
    parts.extend(_attempt_flags(resp))
    if resp.simulated:
        parts.append("simulated")
    return parts


def footer_text(resp: Response) -> str:
    return " · ".join(footer_parts(resp))


def stats_parts(col: Column) -> list[str]:
    """A column's numbers: the one run's footer, or mean ± spread over K runs."""
    if col.repeat == 1:
        run = col.runs[0] if col.runs else None
        return footer_parts(run.response) if run is not None and run.response else []
    st = col.stats()
    parts = [f"{st['ok']}/{col.repeat} answered"]
    if st["ok"]:
        parts.append(f"latency {fmt_seconds(st['latency_s'], st['latency_sd'])}")
        if st["ttft_s"] is not None:
            parts.append(f"ttft {fmt_seconds(st['ttft_s'], st['ttft_sd'])}")
        sd = st["output_tokens_sd"]
        out = f"{st['output_tokens']:.0f}" + (f" ± {sd:.0f}" if sd is not None else "")
        parts.append(f"{out} tokens out")
        parts.append(f"{fmt_cost(st['cost_usd'])} total")
        if st["cached"]:
            parts.append(f"{st['cached']} cached")
        first = col.responses[0]
        parts.insert(0, f"{first.vendor} · {first.model}")
        if first.simulated:
            parts.append("simulated")
    return parts


# -- text to HTML --------------------------------------------------------------------------

_markdown: Any = None


def markdown_html(text: str) -> str:
    """Markdown rendered for an HTML grid cell; raw HTML in a model's answer is escaped."""
    global _markdown
    if _markdown is None:
        try:
            import mistune

            _markdown = mistune.create_markdown(escape=True, plugins=["table", "strikethrough"])
        except Exception:  # no renderer: show the text as it is
            _markdown = False
    if _markdown:
        return str(_markdown(clean(text)))
    return f'<div style="white-space:pre-wrap">{html_text(text)}</div>'


def error_html(line: str) -> str:
    return html_block(html_text(line), 'color:#b00020;background:#fdecea;border-left:3px solid '
                      '#b00020;padding:4px 8px;margin:4px 0;font-family:monospace')


def error_bundle(line: str) -> Bundle:
    return {"text/plain": clean(f"llm error: {line}"),
            "text/html": error_html(f"llm error: {line}")}


def warning_html(line: str) -> str:
    return html_block(html_text(line), 'color:#8a6d00;background:#fff8e1;border-left:3px solid '
                      '#e0a800;padding:2px 8px;margin:4px 0;font-size:90%')


# -- one answer, live ----------------------------------------------------------------------


def live_bundle(target: str, text: str, *, fmt: str, wait: str | None = None) -> Bundle:
    """What one streaming answer looks like before it is finished; `wait` is a wait's
    status line (`Run.wait_line`: what for, how long), shown in place of "waiting…"."""
    status = f"{target} · {wait or ('streaming…' if text else 'waiting…')}"
    if fmt == "text":
        return {"text/plain": clean(f"{text}{CURSOR}\n— {status}")}
    return {"text/plain": clean(f"{text}\n— {status}"),
            "text/markdown": f"{markdown_answer(text)}{CURSOR}\n\n<sub>{html_inline(status)}</sub>"}


# -- side by side --------------------------------------------------------------------------

_GRID = ("display:grid;grid-template-columns:repeat({n},minmax(0,1fr));gap:12px;"
         "align-items:start")
_CELL = "border:1px solid #d0d7de;border-radius:6px;padding:6px 10px;min-width:0;overflow-x:auto"
_HEAD = ("font-weight:600;border-bottom:1px solid #d0d7de;padding-bottom:4px;margin-bottom:4px;"
         "display:flex;justify-content:space-between;gap:8px")
_FOOT = "color:#57606a;font-size:85%;border-top:1px solid #d0d7de;padding-top:4px;margin-top:4px"


def _run_body(run: Run | None, fmt: str, live: bool) -> str:
    if run is None:
        return '<div style="color:#57606a">waiting…</div>'
    text = run.text + (CURSOR if live and not run.done else "")
    if fmt in ("text", "json", "code") or not text:
        body = f'<pre style="white-space:pre-wrap;margin:0">{html_text(text)}</pre>'
    else:
        body = markdown_html(text)
    return body


def column_html(col: Column, fmt: str = "markdown", *, live: bool = True,
                notes: Sequence[str] = ()) -> str:
    from ._errors import describe

    run = col.shown
    head = (f'<div style="{_HEAD}"><span>{html_text(col.target)}</span>'
            f'<span style="font-weight:400;color:#57606a">{html_text(col.status)}</span></div>')
    parts = [head, _run_body(run, fmt, live), structured_html(run)]  # --schema, --tool
    for note in notes:
        parts.append(warning_html(note))
    for r in col.runs:
        if r.error is not None:
            prefix = f"run {r.index + 1} error: " if col.repeat > 1 else "error: "
            parts.append(error_html(prefix + describe(r.error)))
    if col.repeat > 1 and col.done:
        others = [r for r in col.runs if r.ok and r is not run]
        if others:
            inner = "".join(f"<p><b>run {r.index + 1}</b></p>{_run_body(r, fmt, False)}"
                            for r in others)
            label = "1 other answer" if len(others) == 1 else f"{len(others)} other answers"
            parts.append(f"<details><summary>{label}</summary>"
                         f"{inner}</details>")
    stats = stats_parts(col)
    if stats:
        parts.append(f'<div style="{_FOOT}">{html_text(" · ".join(stats))}</div>')
    # Its own MathJax-free block, so a column shown alone (the panel) is safe too.
    return html_block("".join(parts), _CELL)


def grid_html(columns: Sequence[Column], fmt: str = "markdown", *, live: bool = True,
              notes: dict[str, list[str]] | None = None) -> str:
    cells = "".join(column_html(c, fmt, live=live, notes=(notes or {}).get(c.target, ()))
                    for c in columns)
    return html_block(cells, _GRID.format(n=max(1, len(columns))))


def grid_text(columns: Sequence[Column]) -> str:
    """The plain-text view: one section per target."""
    from ._errors import describe

    out: list[str] = []
    for col in columns:
        out.append(f"== {col.target} ({col.status}) ==")
        run = col.shown
        if run is not None and run.text:
            out.append(run.text)
        if structured_text(run):
            out.append(structured_text(run))
        for r in col.runs:
            if r.error is not None:
                out.append(f"error: {describe(r.error)}")
        stats = stats_parts(col)
        if stats:
            out.append("— " + " · ".join(stats))
        out.append("")
    return clean("\n".join(out).rstrip() + "\n")


def grid_markdown(columns: Sequence[Column]) -> str:
    from ._errors import describe

    out: list[str] = []
    for col in columns:
        out.append(f"#### {markdown_text(col.target)}")
        run = col.shown
        if run is not None and run.text:
            out.append(markdown_answer(run.text))
        if structured_markdown(run):
            out.append(structured_markdown(run))
        for r in col.runs:
            if r.error is not None:
                out.append(f"> **error:** {markdown_text(describe(r.error))}")
        stats = stats_parts(col)
        if stats:
            out.append(f"<sub>{html_inline(' · '.join(stats))}</sub>")
    return "\n\n".join(out)


def live_grid_bundle(columns: Sequence[Column], fmt: str) -> Bundle:
    return {"text/plain": grid_text(columns), "text/html": grid_html(columns, fmt, live=True)}


# -- tables --------------------------------------------------------------------------------


class Table:
    """A small table for the subcommands: plain text, markdown, and HTML."""

    def __init__(self, headers: Sequence[str], rows: Sequence[Sequence[Any]],
                 title: str | None = None) -> None:
        self.headers = [clean(h) for h in headers]
        self.rows = [["" if v is None else clean(v) for v in row] for row in rows]
        self.title = None if title is None else clean(title)

    def text(self) -> str:
        widths = [len(h) for h in self.headers]
        for row in self.rows:
            widths = [max(w, len(v)) for w, v in zip(widths, row, strict=False)]
        line = "  ".join(h.ljust(w) for h, w in zip(self.headers, widths, strict=False)).rstrip()
        out = [self.title] if self.title else []
        out.append(line)
        out.append("  ".join("-" * w for w in widths))
        out.extend("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=False)).rstrip()
                   for row in self.rows)
        return "\n".join(out)

    def markdown(self) -> str:
        cell = markdown_cell
        out = [f"**{markdown_text(self.title)}**", ""] if self.title else []
        out.append("| " + " | ".join(cell(h) for h in self.headers) + " |")
        out.append("|" + "---|" * len(self.headers))
        out.extend("| " + " | ".join(cell(v) for v in row) + " |" for row in self.rows)
        return "\n".join(out)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> Bundle:
        return {"text/plain": self.text(), "text/markdown": self.markdown()}

    def __repr__(self) -> str:
        return self.text()


# -- live output in a cell -----------------------------------------------------------------


class LiveOutput:
    """One output area that is shown once and then updated in place (display_id)."""

    def __init__(self) -> None:
        self._handle: Any = None
        self._last: Bundle | None = None

    @property
    def updates_in_place(self) -> bool:
        """False in a plain terminal, whose display publisher would print every update."""
        from IPython.core.displaypub import DisplayPublisher
        from IPython.core.getipython import get_ipython

        shell = get_ipython()
        return shell is not None and type(shell.display_pub) is not DisplayPublisher

    def show(self, bundle: Bundle, metadata: dict[str, Any] | None = None) -> None:
        from IPython.display import display

        if bundle == self._last and not metadata:
            return  # nothing new to show: spare the frontend a message
        self._last = bundle
        if self._handle is None:
            self._handle = display(bundle, raw=True, metadata=metadata or {}, display_id=True)
        else:
            self._handle.update(bundle, raw=True, metadata=metadata or {})

    def show_object(self, obj: Any) -> None:
        """Show an object through its own `_repr_mimebundle_` (data and metadata)."""
        data, metadata = mimebundle(obj)
        self.show(data, metadata)


def mimebundle(obj: Any) -> tuple[Bundle, dict[str, Any]]:
    got = obj._repr_mimebundle_()
    if isinstance(got, tuple):
        return got[0], got[1]
    return got, {}
