"""Filling `{name}` into prompts without touching code: references resolve, everything
else in braces is sent as written, and nothing is ever evaluated."""

from __future__ import annotations

from typing import Any

import pytest

from llmdispatch_nb.notebook._interpolate import as_prompt_text, fill, is_reference


class Config:
    model = "small"
    _secret = "hidden"

    @property
    def sizes(self) -> list[int]:
        return [3, 5]


NS: dict[str, Any] = {
    "x": 42,
    "name": "Ada",
    "cfg": {"model": "small", "sizes": [3, 5], "nested": {"k": "v"}},
    "conf": Config(),
    "In": ["", "a = 1", "print(a)"],
    "Out": {2: 99},
    "_": "last",
    "empty": "",
}


@pytest.mark.parametrize(("template", "expected"), [
    ("{x}", "42"),
    ("Hi {name}, x={x}.", "Hi Ada, x=42."),
    ("{cfg['model']}", "small"),
    ('{cfg["sizes"][1]}', "5"),
    ("{cfg['sizes'][-1]}", "5"),
    ("{cfg['nested']['k']}", "v"),
    ("{conf.model} {conf.sizes[0]}", "small 3"),
    ("{In[1]} then {In[-1]}", "a = 1 then print(a)"),
    ("{Out[2]}", "99"),
    ("{_}", "last"),
    ("[{empty}]", "[]"),
    ("{{x}}", "{x}"),
    ("{{ not a ref }}", "{ not a ref }"),
    ("a {{x}} b {x}", "a {x} b 42"),
])
def test_references_are_filled(template: str, expected: str) -> None:
    filled = fill(template, NS)
    assert filled.text == expected
    assert filled.unresolved == []


@pytest.mark.parametrize("code", [
    'd = {"a": {"b": 1}}',
    "cfg = {'k': [1, 2], 'n': {}}",
    "def f(): return {}",
    "{k: v for k, v in items}",
    "s = {1, 2, 3}",
    'print(f"{x!r:>10} {x + 1}")',
    "int main() { return 0; }",
    "if (ok) { go(); } else { stop(); }",
    "const o = { key: value };",
    '{"json": [1, {"deep": true}], "n": null}',
    "\\begin{document} \\end{document}",
    "{ x }",
    "{x + 1} {x()} {x.__class__.__mro__} {__import__('os')}",
    "unclosed { brace",
    "stray } brace",
    "{\n    'multi': 'line'\n}",
    "}}{{",
])
def test_code_and_literals_are_sent_as_written(code: str) -> None:
    assert fill(code, NS).text == code


def test_unknown_names_are_left_and_reported() -> None:
    filled = fill("Use {value} and {cfg['nope']} and {conf.missing} and {In[9]}", NS)
    assert filled.text == "Use {value} and {cfg['nope']} and {conf.missing} and {In[9]}"
    assert [p for p, _ in filled.unresolved] == ["value", "cfg['nope']", "conf.missing", "In[9]"]
    warning = filled.warning()
    assert warning is not None and "\n" not in warning
    assert "{value} (no variable 'value')" in warning and "--no-interpolate" in warning


def test_a_warning_names_at_most_four_placeholders() -> None:
    filled = fill(" ".join(f"{{v{i}}}" for i in range(7)), NS)
    warning = filled.warning()
    assert warning is not None and "and 3 more" in warning and "{v4}" not in warning


def test_private_attributes_are_never_read() -> None:
    filled = fill("{conf._secret}", NS)
    assert filled.text == "{conf._secret}"
    assert filled.unresolved == [("conf._secret", "private attribute '_secret'")]


def test_nothing_is_evaluated() -> None:
    calls: list[str] = []

    class Spy:
        def __call__(self) -> str:
            calls.append("called")
            return "no"

    assert fill("{spy()} {spy}", {"spy": Spy()}).text.startswith("{spy()} ")
    assert calls == []


def test_values_read_as_prompt_text() -> None:
    class Answer:
        text = "the answer"

        def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
            return {}

    assert as_prompt_text(Answer()) == "the answer"
    assert as_prompt_text([1, 2]) == "[1, 2]"
    assert fill("{a}", {"a": Answer()}).text == "the answer"


def test_no_warning_when_everything_resolves() -> None:
    assert fill("{x}", NS).warning() is None


@pytest.mark.parametrize(("inside", "ok"), [
    ("x", True), ("x.y", True), ("x[0]", True), ("x['k']", True), ("x[-2].y", True),
    (" x", False), ("x ", False), ("x+1", False), ("x()", False), ("x[y]", False),
    ("1x", False), ("", False), ("x.", False), ("x[0", False),
])
def test_what_counts_as_a_reference(inside: str, ok: bool) -> None:
    assert is_reference(inside) is ok
