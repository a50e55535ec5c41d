"""Text at the format boundary: the one place where strings become Markdown or HTML.

Everything the notebook shows as Markdown or HTML (answers, echoed prompts, table
cells, headings, error lines, footers) passes through one of these functions, once.

What JupyterLab actually does (checked in the browser, JupyterLab 4): its Markdown
renderer pairs `$...$` into maths before Markdown runs, and MathJax then typesets any
`$...$` left in the rendered HTML, HTML outputs included. `\\$` does not help (the
Markdown step drops the backslash, then MathJax pairs the bare `$` signs), nor does
`&#36;` (MathJax reads the page's text, not the source). What works is an element
MathJax is told to skip (class `mathjax_ignore`): our HTML outputs sit in one such
block, and in Markdown each `$` becomes `&#36;` inside such a span, so neither the
Markdown step nor MathJax sees a dollar sign. Code spans and blocks are left alone
(MathJax skips `<code>`). Lone surrogates (from a bad decode upstream) would make the
kernel's JSON message fail, so they become U+FFFD here too.
"""

from __future__ import annotations

import html
import re

NO_MATH = "mathjax_ignore tex2jax_ignore"  # MathJax 3's and MathJax 2's "skip me" classes
DOLLAR = f'<span class="{NO_MATH}">&#36;</span>'

_SURROGATE = re.compile("[\ud800-\udfff]")


def clean(text: object) -> str:
    """A string that can travel in a Jupyter message: lone surrogates become U+FFFD."""
    s = text if isinstance(text, str) else str(text)
    if _SURROGATE.search(s) is None:
        return s
    # A well-formed pair (from surrogateescape or JSON) is joined; a lone half is replaced.
    return s.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


# -- HTML ----------------------------------------------------------------------------------


def html_text(text: object) -> str:
    """Plain text for HTML: tags, entities and quotes escaped. Put it inside `html_block`
    (or any element with class NO_MATH) so MathJax leaves its `$` signs alone."""
    return html.escape(clean(text))


def html_inline(text: object) -> str:
    """Plain text for HTML that may sit outside a NO_MATH block (e.g. a footer inside a
    Markdown output): escaped, with each `$` in a span MathJax skips."""
    return html_text(text).replace("$", DOLLAR)


def html_block(inner_html: str, style: str = "", tag: str = "div") -> str:
    """An element MathJax skips, around HTML that is already escaped."""
    style_attr = f'style="{style}" ' if style else ""
    return f'<{tag} {style_attr}class="{NO_MATH}">{inner_html}</{tag}>'


# -- Markdown ------------------------------------------------------------------------------

# ASCII punctuation that means something inline in CommonMark/GFM (or to JupyterLab's
# maths step). `_` only at a word's edge: GFM never reads intraword `_` as emphasis, and
# names like ANTHROPIC_API_KEY should stay readable in the source.
_MD_INLINE = re.compile(r"[\\`*\[\]|<>~!]|&(?=#?\w+;)|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")


def markdown_text(text: object, *, newlines: bool = False) -> str:
    """Plain text as inline Markdown that shows exactly the text: headings, table cells,
    echoed prompts, error lines. Newlines become spaces unless `newlines` (then each
    becomes a hard line break)."""
    s = clean(text)
    s = _MD_INLINE.sub(lambda m: "\\" + m.group(0), s)
    s = s.replace("$", DOLLAR)
    lines = s.split("\n")
    if newlines:
        # A line's leading spaces or block marker would make a code block, a heading or a
        # list: the spaces become no-break spaces, the markers are escaped.
        # Blank lines part paragraphs; the lines of one paragraph end in hard breaks
        # (a break at a paragraph's end would show as a backslash).
        paragraphs: list[list[str]] = [[]]
        for line in lines:
            if line.strip():
                paragraphs[-1].append(_quiet_block_start(line))
            elif paragraphs[-1]:
                paragraphs.append([])
        return "\n\n".join("\\\n".join(p) for p in paragraphs if p)
    return _quiet_block_start(" ".join(line.strip() for line in lines))


_BLOCK_START = re.compile(r"^(\s*)([#>+\-=]|\d+[.)])")


def _quiet_block_start(line: str) -> str:
    m = _BLOCK_START.match(line)
    if m is not None:  # "\\#", "\\-", and "1\\." for a numbered item
        cut = m.end(2) - 1 if m.group(2)[-1] in ".)" else m.end(1)
        line = line[:cut] + "\\" + line[cut:]
    stripped = line.lstrip(" ")
    return "&nbsp;" * (len(line) - len(stripped)) + stripped


def markdown_cell(text: object) -> str:
    """A GFM table cell: `markdown_text` on one line (its `|` are already escaped)."""
    return markdown_text(text)


# A fenced code block (to its closing fence, or to the end while it is still streaming)
# or an inline code span (a run of backticks closed by a run of the same length).
_CODE = re.compile(
    r"^[ ]{0,3}(?P<fence>`{3,}|~{3,})[^\n]*"
    r"(?:\n(?:.*?\n)??[ ]{0,3}(?P=fence)[`~]*[ \t]*(?=\n|\Z)|.*\Z)"
    r"|(?<!`)(?P<ticks>`+)(?!`)(?:.+?)(?<!`)(?P=ticks)(?!`)",
    re.MULTILINE | re.DOTALL)
# A `$` not already escaped by an odd number of backslashes, with those backslashes.
_ANSWER_DOLLAR = re.compile(r"(?<!\\)((?:\\\\)*)\\?\$")
_ANSWER_HTML = re.compile(r"<|&(?=#?\w+;)")


def markdown_answer(text: object) -> str:
    """A model's answer as Markdown: its Markdown kept (code, lists, emphasis, tables),
    with `$` shown as a dollar sign (never maths) and raw HTML shown as text, both only
    outside code spans and blocks, where Markdown shows every character as it is."""
    s = clean(text)
    out: list[str] = []
    pos = 0
    for m in _CODE.finditer(s):
        out.append(_answer_prose(s[pos:m.start()]))
        out.append(m.group(0))
        pos = m.end()
    out.append(_answer_prose(s[pos:]))
    return "".join(out)


def _answer_prose(s: str) -> str:
    s = _ANSWER_HTML.sub(lambda m: "&lt;" if m.group(0) == "<" else "&amp;", s)
    # A `\$` the model wrote already meant a literal dollar: it becomes the same span.
    return _ANSWER_DOLLAR.sub(lambda m: m.group(1) + DOLLAR, s)
