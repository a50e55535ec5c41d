"""Text at the format boundary (`notebook/_escape`): every kind of text we render as
Markdown or HTML shows exactly what it holds, and no `$` is left where JupyterLab's
MathJax could pair it into maths.

Markdown is rendered with mistune (CommonMark + GFM tables) and read back as text; the
MathJax rule is modelled as JupyterLab applies it (checked in the browser by
tests/test_quickstart_browser.py): a `$` is safe only inside an element of class
`mathjax_ignore` or inside `<code>`/`<pre>`.
"""

from __future__ import annotations

import html
import random
from html.parser import HTMLParser

import mistune
import pytest

from llmdispatch_nb import Dispatcher
from llmdispatch_nb.notebook._display import Table, grid_html, grid_markdown, live_bundle
from llmdispatch_nb.notebook._escape import (
    clean,
    html_block,
    html_inline,
    html_text,
    markdown_answer,
    markdown_cell,
    markdown_text,
)

from .test_magic_support import Notebook

pytest_plugins = ("tests.test_magic_support",)

render = mistune.create_markdown(escape=False, plugins=["table", "strikethrough"])
SKIPPED = {"code", "pre"}


class Reader(HTMLParser):
    """The visible text of an HTML fragment, and the part of it MathJax would scan."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.exposed: list[str] = []
        self.stack: list[tuple[str, bool]] = []
        self.cells: list[list[str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        classes = (dict(attrs).get("class") or "").split()
        hidden = tag in SKIPPED or "mathjax_ignore" in classes
        self.stack.append((tag, hidden))
        if tag == "tr":
            self.cells.append([])
        if tag in ("td", "th"):
            self.cells[-1].append("")

    def handle_endtag(self, tag: str) -> None:
        while self.stack:
            if self.stack.pop()[0] == tag:
                break

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if not any(hidden for _, hidden in self.stack):
            self.exposed.append(data)
        if self.cells and any(t in ("td", "th") for t, _ in self.stack):
            self.cells[-1][-1] += data


def read(fragment: str) -> Reader:
    r = Reader()
    r.feed(fragment)
    r.close()
    return r


def visible(fragment: str) -> str:
    return " ".join("".join(read(fragment).text).replace("\xa0", " ").split())


def squash(text: str) -> str:
    return " ".join(clean(text).split())


def no_maths(fragment: str) -> None:
    exposed = "".join(read(fragment).exposed)
    assert "$" not in exposed, f"MathJax would see a $ in {exposed!r}"


# Every character that means something to Markdown, HTML or MathJax, words, spaces and
# lone surrogates.
ALPHABET = [*"$|<>&*_\\`~#[]()!-+.=:{}'\"", "\ud800", "\udfff", "\n", " ", " ", "a", "b",
            "5", "10", "amp;", "#36;", "é"]


def fuzz(n: int = 400, seed: int = 16) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 30))) for _ in range(n)]


# -- plain text: headings, echoed prompts, error lines -------------------------------------


@pytest.mark.parametrize("text", [
    "Which is cheaper, $5 or $10?",
    "change with %config LLMMagics.<name> = value, or in ipython_config.py",
    "a | b || c", "*not bold* _not italic_ `not code` \\ backslash", "&amp; &#36; &lt;",
    "# not a heading", "1. not a list", "- not a list", "    not code", "snake_case_name",
])
def test_markdown_text_shows_exactly_the_text(text: str) -> None:
    out = render(markdown_text(text))
    assert visible(out) == squash(text)
    no_maths(out)


def test_markdown_text_fuzz_round_trips_and_never_raises() -> None:
    for text in fuzz():
        out = render(markdown_text(text))
        assert visible(out) == squash(text), (text, markdown_text(text))
        no_maths(out)
        kept = render(markdown_text(text, newlines=True))
        assert visible(kept) == squash(text), (text, markdown_text(text, newlines=True))
        no_maths(kept)


def test_markdown_text_with_newlines_keeps_the_lines() -> None:
    out = render(markdown_text("first line\n# second\n    third", newlines=True))
    assert out.count("<br") == 2 and "<h1" not in out and "<pre" not in out


# -- table cells ---------------------------------------------------------------------------


def test_table_cells_keep_their_columns_fuzz() -> None:
    texts = fuzz(200, seed=3)
    for left, right in zip(texts, reversed(texts), strict=True):
        table = Table(["name", "value"], [[left, right]], title=f"<{left}>")
        cells = read(render(table.markdown())).cells
        assert len(cells) == 2 and [len(row) for row in cells] == [2, 2], table.markdown()
        assert [squash(c) for c in cells[1]] == [squash(left), squash(right)]
        no_maths(render(table.markdown()))


def test_budget_like_row_is_five_cells() -> None:
    row = ["all calls", "$2.5000", "$0.000010", "$0.000938", "$2.499052"]
    out = render(Table(["budget", "limit", "spent", "in flight", "remaining"], [row]).markdown())
    assert read(out).cells[1] == row
    no_maths(out)
    assert markdown_cell("a|b") == "a\\|b"


# -- answers: Markdown kept, currency never maths -------------------------------------------


ANSWER = """Which is cheaper, $5 or $10? The **$5** one.

- first, at $1
- second, at \\$2 (already escaped)

Inline `$x = $y` stays code, and <b>tags</b> show as text.

```bash
echo "$HOME costs $5"
```
"""


def test_answer_keeps_markdown_and_shows_dollars() -> None:
    out = render(markdown_answer(ANSWER))
    no_maths(out)
    assert "<li>" in out and "<strong>" in out and "<pre><code" in out
    text = visible(out)
    assert "Which is cheaper, $5 or $10? The $5 one." in text
    assert "second, at $2 (already escaped)" in text
    assert "<code>$x = $y</code>" in out and 'echo "$HOME costs $5"' in text
    assert "<b>tags</b> show as text" in text


def test_answer_fuzz_never_raises_and_shows_every_dollar() -> None:
    for text in fuzz(seed=7):
        out = render(markdown_answer(text))
        no_maths(out)
        shown = "".join(read(out).text)
        # Markdown may eat a backslash that escapes a `$`; the dollar itself stays.
        assert shown.count("$") == clean(text).count("$"), (text, markdown_answer(text))


def test_streaming_answer_with_an_open_fence_stays_code() -> None:
    bundle = live_bundle("openai:gpt-4o", "Try:\n```sh\necho $A $B", fmt="markdown")
    out = render(bundle["text/markdown"])
    assert 'echo $A $B' in visible(out)
    no_maths(out)


# -- HTML ----------------------------------------------------------------------------------


def test_html_text_fuzz_round_trips() -> None:
    for text in fuzz(seed=11):
        block = html_block(html_text(text))
        assert "".join(read(block).text) == clean(text)
        no_maths(block)
        assert html.unescape(html_inline(text).replace(
            '<span class="mathjax_ignore tex2jax_ignore">&#36;</span>', "$")) == clean(text)
        no_maths(html_inline(text))


def test_lone_surrogates_become_replacement_characters() -> None:
    assert clean("a\ud800b") == "a\ufffdb"
    assert clean("\ud83d\ude00") == "\U0001f600"  # a well-formed pair is joined
    assert clean(5) == "5"


# -- the magic's own outputs in a real shell ------------------------------------------------


def test_answer_and_grid_with_dollars(d: Dispatcher, nb: Notebook) -> None:
    prompt = "Which is cheaper, $5 or $10?"
    run = nb.cell("gpt -m 40", prompt)
    assert run.success
    md = run.last_data["text/markdown"]
    out = render(md)
    no_maths(out)
    assert str(nb.ns["_llm"]).count("$") == visible(out).count("$") - visible(
        render(md.rsplit("\n\n", 1)[1])).count("$")
    run = nb.cell("gpt claude -m 40", prompt)
    assert run.success
    shown = run.last_data
    no_maths(shown["text/html"])
    no_maths(render(shown["text/markdown"]))
    columns = nb.ns["_llm"].columns
    assert grid_html(columns, live=False) in shown["text/html"]
    assert grid_markdown(columns) == shown["text/markdown"]


def test_budget_and_config_tables_render(d: Dispatcher, nb: Notebook) -> None:
    nb.cell("gpt -m 20", "spend a little")
    if getattr(d, "budget", None) is None:
        pytest.skip("this dispatcher has no budget")
    before = d.budget.limit_usd
    try:
        run = nb.run("%llm budget 2.5")
    finally:
        d.budget.set_limit(before)
    assert run.success
    out = render(run.published[-1].data["text/markdown"])
    no_maths(out)
    rows = read(out).cells
    assert all(len(row) == 5 for row in rows) and rows[1][0] == "all calls"
    assert rows[1][1] == "$2.5000"
    run = nb.run("%llm config")
    out = render(run.published[-1].data["text/markdown"])
    assert "LLMMagics.<name> = value" in visible(out)
    no_maths(out)
