"""Evaluators: plain functions `f(text, row) -> bool | float` that score one answer.

    sweep(..., evaluators=[contains("Paris"), valid_json(), lambda text, row: len(text) < 400])
    sweep(..., evaluators={"polite": regex(r"(?i)\\bplease\\b"), "judge": llm_judge("openai:gpt-4o", RUBRIC)})

`row` is the run as a dict (prompt, each var, target, latency_s, cost_usd, ...), so an
evaluator can compare with an expected answer: `lambda text, row: row["expected"] in text`.
True/False count as 1/0; None means "no score". An evaluator may be async (return an
awaitable). One that raises does not stop the sweep: its error is kept as data in a
`<name>_error` column.

Built-ins are factories (`valid_json()`, not `valid_json`) that carry a readable `name`,
which becomes the score's column (pass a dict to choose names).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .._schema import plain_data
from ..errors import ConfigurationError

if TYPE_CHECKING:
    from .._dispatcher import Dispatcher

EvaluatorFn = Callable[[str, Mapping[str, Any]], Any]


class Check:
    """A named evaluator. Calling it scores one answer."""

    def __init__(self, name: str, fn: EvaluatorFn) -> None:
        self.name = name
        self._fn = fn

    def __call__(self, text: str, row: Mapping[str, Any]) -> Any:
        return self._fn(text, row)

    def __repr__(self) -> str:
        return f"<evaluator {self.name}>"


def evaluator_name(f: Any) -> str:
    name = getattr(f, "name", None)
    if isinstance(name, str) and name:
        return name
    name = getattr(f, "__name__", None)
    if isinstance(name, str) and name and name != "<lambda>":
        return name
    return "eval"


def named_evaluators(evaluators: Any) -> list[tuple[str, Any]]:
    """[(column name, evaluator)] from a list, a dict or one evaluator; names made unique."""
    if evaluators is None:
        return []
    if isinstance(evaluators, Mapping):
        pairs = [(str(k), v) for k, v in evaluators.items()]
    elif callable(evaluators):
        pairs = [(evaluator_name(evaluators), evaluators)]
    elif isinstance(evaluators, Sequence) and not isinstance(evaluators, str):
        pairs = [(evaluator_name(f), f) for f in evaluators]
    else:
        raise ConfigurationError(
            f"evaluators must be a function, a list of functions or a dict name -> function; "
            f"got {type(evaluators).__name__}")
    out: list[tuple[str, Any]] = []
    used: set[str] = set()
    for name, f in pairs:
        if not callable(f):
            raise ConfigurationError(f"evaluator {name!r} is {type(f).__name__}, not a function")
        unique, k = name, 2
        while unique in used:
            unique, k = f"{name}_{k}", k + 1
        used.add(unique)
        out.append((unique, f))
    return out


def as_score(value: Any) -> float | None:
    """bool -> 1.0/0.0, a number -> float, None -> None; anything else is an error."""
    if value is None:
        return None
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return float(value)
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        return as_score(item())
    raise TypeError(f"an evaluator must return a bool, a number or None, not {type(value).__name__}")


# -- built-ins -----------------------------------------------------------------------------


def contains(s: str, *, case: bool = True) -> Check:
    """The answer contains `s` (case-insensitive with case=False)."""
    if case:
        return Check(f"contains:{s}", lambda text, row: s in text)
    low = s.lower()
    return Check(f"contains:{s}", lambda text, row: low in text.lower())


def regex(pattern: str, flags: int = 0) -> Check:
    """The pattern matches somewhere in the answer (`re.search`)."""
    compiled = re.compile(pattern, flags)
    return Check(f"regex:{pattern}", lambda text, row: compiled.search(text) is not None)


def equals(s: str, *, strip: bool = True, case: bool = True) -> Check:
    """The whole answer is `s` (surrounding whitespace ignored unless strip=False)."""
    def norm(t: str) -> str:
        t = t.strip() if strip else t
        return t if case else t.casefold()

    want = norm(s)
    return Check(f"equals:{s}", lambda text, row: norm(text) == want)


_FENCE = re.compile(r"^\s*```[A-Za-z0-9_-]*\s*\n(.*?)\n?\s*```\s*$", re.DOTALL)


def _json_of(text: str) -> Any:
    """The JSON in an answer; a single surrounding ``` fence (how models often answer) is
    taken off first. Raises ValueError when it is not JSON."""
    m = _FENCE.match(text)
    return json.loads(m.group(1) if m else text)


def valid_json() -> Check:
    """The answer is JSON (inside a ``` fence or bare)."""
    def check(text: str, row: Mapping[str, Any]) -> bool:
        try:
            _json_of(text)
        except ValueError:
            return False
        return True

    return Check("valid_json", check)


def json_schema(schema: Mapping[str, Any], *, name: str = "json_schema") -> Check:
    """The answer is JSON that validates against `schema` (JSON Schema, via `jsonschema`)."""
    try:
        import jsonschema
    except ImportError:  # not a dependency of ours; it comes with Jupyter
        raise ConfigurationError(
            "json_schema() needs the jsonschema package: pip install jsonschema "
            "(valid_json() needs nothing)") from None
    cls = jsonschema.validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ConfigurationError(f"json_schema: the schema is invalid: {exc.message}") from None
    validator = cls(schema)

    def check(text: str, row: Mapping[str, Any]) -> bool:
        try:
            data = _json_of(text)
        except ValueError:
            return False
        return bool(validator.is_valid(data))

    return Check(name, check)


def length_between(lo: int | None = None, hi: int | None = None, *, unit: str = "chars") -> Check:
    """lo <= length <= hi, counted in "chars" or "words" (either bound may be None)."""
    if unit not in ("chars", "words"):
        raise ConfigurationError(f"length_between unit must be 'chars' or 'words', not {unit!r}")

    def check(text: str, row: Mapping[str, Any]) -> bool:
        n = len(text) if unit == "chars" else len(text.split())
        return (lo is None or n >= lo) and (hi is None or n <= hi)

    return Check(f"length_between:{lo}-{hi}" + ("w" if unit == "words" else ""), check)


def latency_under(seconds: float) -> Check:
    """The run's latency was under `seconds` (no score when unknown)."""
    def check(text: str, row: Mapping[str, Any]) -> bool | None:
        v = row.get("latency_s")
        return None if v is None else v < seconds

    return Check(f"latency_under:{seconds:g}", check)


def cost_under(usd: float) -> Check:
    """The answer's list-price cost was at most `usd` (no score when the price is unknown)."""
    def check(text: str, row: Mapping[str, Any]) -> bool | None:
        v = row.get("cost_usd")
        return None if v is None else v <= usd

    return Check(f"cost_under:{usd:g}", check)


# -- an LLM as the judge -------------------------------------------------------------------


class ScoreParseError(ValueError):
    """The judge's reply holds no score on its scale."""


_NUMBER = r"(-?\d+(?:\.\d+)?)"
_LABELLED = re.compile(
    r"(?i)\b(?:score|rating|grade)\b[*_\s]*(?:is|of|=|:)?[*_\s]*" + _NUMBER
    + r"\s*\**\s*(?:(?:/|out\s+of)\s*(\d+))?")
_FRACTION = re.compile(_NUMBER + r"\s*\**\s*(?:/|out\s+of)\s*(\d+)\b", re.IGNORECASE)
_BARE = re.compile(r"^[*_\s]*" + _NUMBER + r"[*_\s.]*$")


def parse_score(reply: str, scale: float = 10.0) -> float:
    """A judge's score as 0..1: "Score: 7/10", "**Rating:** 8", "9 out of 10", "85/100",
    or a reply that is only a number (read on `scale`). Raises ScoreParseError otherwise;
    a stray number elsewhere in the text (a model name, a list item) is never taken."""
    for pattern in (_LABELLED, _FRACTION, _BARE):
        m = pattern.search(reply)
        if m is None:
            continue
        value = float(m.group(1))
        denominator = float(m.group(2)) if m.lastindex and m.lastindex >= 2 and m.group(2) else scale
        if denominator <= 0 or not 0 <= value <= denominator:
            raise ScoreParseError(f"the judge's score {m.group(0).strip()!r} is outside 0..{denominator:g}")
        return value / denominator
    excerpt = reply.strip().replace("\n", " ")[:120]
    raise ScoreParseError(f"the judge's reply has no score (expected 'Score: N/10'): {excerpt!r}")


JUDGE_SYSTEM = (
    "You grade answers strictly against a rubric. Reply with one line in the form "
    "'Score: N/10', N a whole number from 0 (fails the rubric) to 10 (meets it fully), "
    "then one sentence saying why.")


class LLMJudge:
    """Asks `target` to grade each answer 0-10 against `rubric`; the score is 0..1.

    The judge's own calls go through the dispatcher like any other (budget, limits,
    retries, ledger) and are tagged "judge" (in a sweep, also with the run's sweep and
    cell tags, so its cost can be told apart and summed). A reply without a readable
    score is an evaluator error, kept as data.
    """

    def __init__(self, target: str, rubric: str, dispatcher: Dispatcher | None = None, *,
                 name: str | None = None, max_tokens: int = 200,
                 temperature: float | None = 0, system: str | None = None) -> None:
        if not rubric or not rubric.strip():
            raise ConfigurationError("llm_judge needs a rubric: what makes an answer good")
        self.target = target
        self.rubric = rubric
        self.dispatcher = dispatcher
        self.name = name or f"judge:{target}"
        self.max_tokens = max_tokens
        # 0 by default: a verdict should be repeatable, and the response cache keeps it.
        self.temperature = temperature
        self.system = system or JUDGE_SYSTEM

    def prompt(self, text: str, row: Mapping[str, Any]) -> str:
        question = row.get("prompt")
        parts = [f"Rubric:\n{self.rubric.strip()}"]
        if question:
            parts.append(f"Question:\n{question}")
        parts.append(f"Answer to grade:\n{text}")
        return "\n\n".join(parts)

    def _params(self, tags: Sequence[str]) -> dict[str, Any]:
        return {"system": self.system, "max_tokens": self.max_tokens,
                "temperature": self.temperature, "tags": ("judge", *tags)}

    async def ascore(self, text: str, row: Mapping[str, Any], *,
                     dispatcher: Dispatcher | None = None, tags: Sequence[str] = ()) -> float:
        d = self.dispatcher or dispatcher or _default_dispatcher()
        reply = await d.asend(self.prompt(text, row), self.target, **self._params(tags))
        return parse_score(reply.text)

    def __call__(self, text: str, row: Mapping[str, Any]) -> float:
        d = self.dispatcher or _default_dispatcher()
        return parse_score(d.send(self.prompt(text, row), self.target, **self._params(())).text)

    def __repr__(self) -> str:
        return f"<evaluator {self.name}>"


def llm_judge(target: str, rubric: str, dispatcher: Dispatcher | None = None, *,
              name: str | None = None, max_tokens: int = 200,
              temperature: float | None = 0, system: str | None = None) -> LLMJudge:
    """An evaluator that asks `target` to grade each answer 0-10 against `rubric` (0..1).

    `system` replaces the judge's instructions (they must still ask for 'Score: N/10')."""
    return LLMJudge(target, rubric, dispatcher, name=name, max_tokens=max_tokens,
                    temperature=temperature, system=system)


def _default_dispatcher() -> Dispatcher:
    from .. import default

    return default()


# -- structured answers and tool calls (issue 17) ----------------------------------------
#
# A sweep given `schema=` or `tools=` adds to each row what the response carried: `parsed`,
# `valid`, `validation_errors` and `tool_calls` (a list of {"id", "name", "arguments"}).
# These read those columns, so they score any vendor's answer alike.

_PATH_PART = re.compile(r"[^.\[\]]+|\[(\d+)\]")


def _structured(text: str, row: Mapping[str, Any]) -> Any:
    if row.get("parsed") is not None:
        return plain_data(row["parsed"])
    try:
        return _json_of(text)
    except ValueError:
        return None


_MISSING = object()


def _at(data: Any, path: str) -> Any:
    """The value at `path` ("address.city", "items[0].name", "items.0.name"), or _MISSING."""
    for m in _PATH_PART.finditer(path):
        key = m.group(1) if m.group(1) is not None else m.group(0)
        if isinstance(data, Mapping) and key in data:
            data = data[key]
        elif isinstance(data, list) and key.lstrip("-").isdigit() and -len(data) <= int(key) < len(data):
            data = data[int(key)]
        else:
            return _MISSING
    return data


def schema_valid(schema: Any = None, *, name: str = "schema_valid") -> Check:
    """The answer fit the schema the call asked for (the row's `valid`). With `schema` (a
    pydantic model, dataclass, TypedDict or JSON Schema dict) the text is read against it
    instead, so any answer (a resumed one, a plain prompt's) can be checked."""
    wanted = None
    if schema is not None:
        from .._schema import output_schema

        wanted = output_schema(schema)

    def check(text: str, row: Mapping[str, Any]) -> bool | None:
        if wanted is not None:
            from .._schema import read_answer

            return read_answer(wanted, text)[1]
        valid = row.get("valid")
        return None if valid is None else bool(valid)

    return Check(name, check)


def field_equals(path: str, value: Any, *, name: str | None = None) -> Check:
    """The structured answer's field at `path` equals `value` ("address.city",
    "items[0].name"); `value` may also be a function of the field (`lambda v: v > 18`).
    An answer without that field scores False."""
    def check(text: str, row: Mapping[str, Any]) -> bool:
        found = _at(_structured(text, row), path)
        if found is _MISSING:
            return False
        return bool(value(found)) if callable(value) else bool(found == value)

    return Check(name or f"field:{path}", check)


def _args_fit(args: Mapping[str, Any], want: Any) -> bool:
    if want is None:
        return True
    if callable(want):
        return bool(want(args))
    for k, v in want.items():
        got = args.get(k, _MISSING)
        if got is _MISSING:
            return False
        if isinstance(v, re.Pattern):
            if not isinstance(got, str) or v.search(got) is None:
                return False
        elif callable(v):
            if not v(got):
                return False
        elif got != v:
            return False
    return True


def tool_called(tool: str, args_match: Mapping[str, Any] | Callable[[Mapping[str, Any]], Any]
                | None = None, *, name: str | None = None) -> Check:
    """The model called `tool`, with arguments that match: a dict whose every key must be
    an argument of the call with that value (or a compiled regex it matches, or a
    function it satisfies), or a function of the whole arguments dict."""
    def check(text: str, row: Mapping[str, Any]) -> bool | None:
        calls = row.get("tool_calls")
        if calls is None:
            return None  # the run offered no tools: no score, not a failure
        return any(c.get("name") == tool and _args_fit(c.get("arguments") or {}, args_match)
                   for c in calls)

    return Check(name or f"tool_called:{tool}", check)
