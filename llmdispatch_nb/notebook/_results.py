"""What a `%%llm` cell leaves behind: `LLMResult` (one answer) or `CompareResult`
(several targets, or K runs), kept in `_llm` and under `-o NAME`.

Both render through `_repr_mimebundle_` with text/plain and text/markdown (plus the
format's own type) and metadata naming vendor, model and call ids, so a saved notebook
keeps the provenance of every answer. `.to_dataframe()` gives one row per run; pandas
is imported only then.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._types import Response
from ._display import (
    Bundle,
    footer_text,
    grid_html,
    grid_markdown,
    grid_text,
    markdown_html,
    warning_html,
)
from ._escape import clean, html_block, html_inline, html_text, markdown_answer, markdown_text
from ._run import Column, Run
from ._structured_view import structured_html, structured_markdown, structured_text

if TYPE_CHECKING:
    import pandas

META_KEY = "llmdispatch_nb"

# A fenced block: ``` or ~~~ at the start of a line, an optional language, up to the
# closing fence of the same kind.
_FENCE = re.compile(r"^(?P<f>```|~~~)[ \t]*(?P<lang>[\w+.#-]*)[^\n]*\n(?P<code>.*?)^(?P=f)[ \t]*$",
                    re.MULTILINE | re.DOTALL)


def fenced_code(text: str) -> str | None:
    """The code of every fenced block, joined; None when the answer has none."""
    blocks = [m.group("code").rstrip("\n") for m in _FENCE.finditer(text)]
    return "\n\n".join(blocks) if blocks else None


@dataclass(frozen=True)
class JsonCheck:
    value: Any = None
    error: str | None = None
    schema_error: str | None = None  # valid JSON that does not fit the --schema asked for

    @property
    def ok(self) -> bool:
        return self.error is None


def check_json(text: str) -> JsonCheck:
    """Parse an answer as JSON, accepting one ```json fence around it."""
    body = text.strip()
    m = _FENCE.fullmatch(body)
    if m is not None:
        body = m.group("code")
    try:
        return JsonCheck(json.loads(body))
    except json.JSONDecodeError as exc:
        return JsonCheck(None, f"the answer is not valid JSON: {exc.msg} at line {exc.lineno}, "
                               f"column {exc.colno}")


def schema_checked(check: JsonCheck, response: Response | None) -> JsonCheck:
    """With a schema asked for (`--schema`), `-f json` checks the JSON against it too."""
    if check.ok and response is not None and response.valid is False:
        why = "; ".join(response.validation_errors) or "it does not fit"
        return JsonCheck(check.value, None, f"the JSON does not fit the schema: {why}")
    return check


def _row(target: str, run: Run, *, prompt: str, chat: str | None) -> dict[str, Any]:
    from ._errors import describe

    r = run.response
    row: dict[str, Any] = {
        "target": target, "run": run.index + 1, "status": "ok" if r else "error",
        "vendor": r.vendor if r else getattr(run.error, "vendor", None),
        "model": r.model if r else None, "latency_s": r.latency_s if r else None,
        "ttft_s": r.ttft_s if r else None,
        "input_tokens": r.usage.input_tokens if r else None,
        "output_tokens": r.usage.output_tokens if r else None,
        "cost_usd": r.cost.usd if r else None, "cost_source": r.cost.source if r else None,
        "cached": r.cached if r else False, "attempts": len(r.attempts) if r else None,
        "finish_reason": r.finish_reason if r else None, "simulated": r.simulated if r else None,
        "call_id": r.call_id if r else None,
        "error": describe(run.error) if run.error is not None else None,
        "text": run.text, "prompt": prompt, "chat": chat,
    }
    return row


def _provenance(resp: Response) -> dict[str, Any]:
    return {"vendor": resp.vendor, "model": resp.model, "model_requested": resp.model_requested,
            "call_id": resp.call_id, "request_id": resp.request_id, "simulated": resp.simulated,
            "cost_usd": resp.cost.usd, "latency_s": round(resp.latency_s, 4),
            "ttft_s": None if resp.ttft_s is None else round(resp.ttft_s, 4),
            "input_tokens": resp.usage.input_tokens, "output_tokens": resp.usage.output_tokens}


def _filter(data: Bundle, include: Any, exclude: Any) -> Bundle:
    if include:
        data = {k: v for k, v in data.items() if k in include}
    if exclude:
        data = {k: v for k, v in data.items() if k not in exclude}
    return data


def _fence(code: str, lang: str = "") -> str:
    """A fenced block around `code`, its fence longer than any backtick run inside."""
    longest = max((len(m) for m in re.findall(r"`+", code)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{lang}\n{clean(code)}\n{fence}"


class LLMResult:
    """One answer from one target. `str(result)` is the answer's text."""

    def __init__(self, target: str, run: Run, *, format: str = "markdown", prompt: str = "",
                 chat: str | None = None, notes: tuple[str, ...] = ()) -> None:
        if run.response is None:
            raise ValueError("an LLMResult needs an answered run")
        self.target = target
        self.run = run
        self.format = format
        self.prompt = prompt
        self.chat = chat
        self.notes = notes  # warning lines shown with the answer
        self._json: JsonCheck | None = None

    # -- the answer ----------------------------------------------------------------------

    @property
    def response(self) -> Response:
        assert self.run.response is not None
        return self.run.response

    @property
    def responses(self) -> list[Response]:
        return [self.response]

    @property
    def text(self) -> str:
        return self.response.text

    @property
    def code(self) -> str:
        """The fenced code in the answer, or the whole answer when it has no fence."""
        found = fenced_code(self.text)
        return found if found is not None else self.text.strip()

    @property
    def json(self) -> Any:
        """The answer parsed as JSON (None when it is not JSON; see `json_error`)."""
        return self._check().value

    @property
    def json_error(self) -> str | None:
        check = self._check()
        return (check.error or check.schema_error) if self.format == "json" else None

    def _check(self) -> JsonCheck:
        if self._json is None:
            self._json = schema_checked(check_json(self.text), self.response)
        return self._json

    @property
    def call_ids(self) -> list[str]:
        return [self.response.call_id]

    def to_dataframe(self) -> pandas.DataFrame:
        import pandas as pd

        return pd.DataFrame([_row(self.target, self.run, prompt=self.prompt, chat=self.chat)])

    # -- display -------------------------------------------------------------------------

    def metadata(self) -> dict[str, Any]:
        return {META_KEY: {"kind": "answer", "target": self.target, "format": self.format,
                           "chat": self.chat, "call_ids": self.call_ids,
                           **_provenance(self.response)}}

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> tuple[Bundle, dict[str, Any]]:
        foot = footer_text(self.response)
        text = self.text
        notes = list(self.notes)
        data: Bundle = {}
        if self.format == "json":
            check = self._check()
            if check.ok:
                data["application/json"] = check.value if isinstance(check.value, dict | list) \
                    else {"value": check.value}
                shown = json.dumps(check.value, indent=2, ensure_ascii=False)
                if check.schema_error:
                    notes.append(f"llm: {check.schema_error}")
            else:
                shown = text
                notes.append(f"llm: {check.error}")
            md = _fence(shown, "json") if check.ok else markdown_answer(shown)
            plain = shown
        elif self.format == "code":
            md = markdown_answer(text)
            plain = text
            # The magic inserts a cell only when there is fenced code (prose would not run).
            notes.append("llm: the code is in a new cell below" if fenced_code(text) is not None
                         else "llm: the answer has no fenced code block, so no cell was inserted")
        else:
            md = markdown_answer(text)
            plain = text
        # --schema: the parsed object and valid/invalid; --tool: the calls (and results).
        if structured_text(self.run):
            plain = f"{plain}\n{structured_text(self.run)}".lstrip("\n")
            md = f"{md}\n\n{structured_markdown(self.run)}"
            data["text/html"] = html_block(
                markdown_html(text) + structured_html(self.run) +
                "".join(warning_html(n) for n in notes) +
                f'<div style="color:#57606a;font-size:85%">{html_text(foot)}</div>')
        note_md = "".join(f"\n\n> {markdown_text(n)}" for n in notes)
        data["text/plain"] = clean(plain + "".join(f"\n{n}" for n in notes) + f"\n— {foot}")
        if self.format != "text":
            data["text/markdown"] = f"{md}{note_md}\n\n<sub>{html_inline(foot)}</sub>"
        if self.format == "html":
            # -f html asks for the answer rendered as HTML: the model's markup is kept, in a
            # block MathJax skips; our own lines are escaped.
            data["text/html"] = html_block(
                clean(text) + "".join(warning_html(n) for n in notes) +
                f'<div style="color:#57606a;font-size:85%">{html_text(foot)}</div>')
        return _filter(data, include, exclude), self.metadata()

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"LLMResult({self.target!r}, {self.response!r})"


class CompareResult:
    """Several targets side by side (or one target run K times).

    `result["openai:gpt-4o"]` is that target's `Column` (its runs, responses, errors,
    stats); `.responses` is every answer; `.to_dataframe()` one row per run.
    """

    def __init__(self, columns: list[Column], *, format: str = "markdown", prompt: str = "",
                 notes: tuple[str, ...] = ()) -> None:
        self.columns = columns
        self.format = format
        self.prompt = prompt
        self.notes = notes

    @property
    def targets(self) -> list[str]:
        return [c.target for c in self.columns]

    def __getitem__(self, target: str | int) -> Column:
        if isinstance(target, int):
            return self.columns[target]
        for c in self.columns:
            if c.target == target:
                return c
        raise KeyError(f"{target!r} is not one of {self.targets}")

    def __iter__(self) -> Iterator[Column]:
        return iter(self.columns)

    def __len__(self) -> int:
        return len(self.columns)

    @property
    def responses(self) -> list[Response]:
        return [r for c in self.columns for r in c.responses]

    @property
    def errors(self) -> list[tuple[str, BaseException]]:
        return [(c.target, e) for c in self.columns for e in c.errors]

    @property
    def texts(self) -> dict[str, str]:
        """Each target's shown answer (its first, when it ran K times)."""
        out = {}
        for c in self.columns:
            run = c.shown
            out[c.target] = run.text if run is not None and run.ok else ""
        return out

    @property
    def text(self) -> str:
        return grid_text(self.columns)

    @property
    def call_ids(self) -> list[str]:
        return [r.call_id for r in self.responses]

    def to_dataframe(self) -> pandas.DataFrame:
        import pandas as pd

        rows = [_row(c.target, run, prompt=self.prompt, chat=None)
                for c in self.columns for run in c.runs]
        return pd.DataFrame(rows)

    def summary(self) -> pandas.DataFrame:
        """Per target: runs, answers, failures, mean and spread of latency, ttft, tokens.
        A DataFrame shown as a short formatted table; `.frame` is the plain frame."""
        import pandas as pd

        from ..analysis._tables import CompareSummary

        return CompareSummary(pd.DataFrame([{"target": c.target, **c.stats()}
                                            for c in self.columns]))

    def metadata(self) -> dict[str, Any]:
        cols = []
        for c in self.columns:
            cols.append({"target": c.target, "runs": len(c.runs),
                         "answers": [_provenance(r) for r in c.responses],
                         "errors": [str(e) for e in c.errors]})
        return {META_KEY: {"kind": "compare", "format": self.format, "call_ids": self.call_ids,
                           "columns": cols}}

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> tuple[Bundle, dict[str, Any]]:
        notes = clean("".join(f"\n{n}" for n in self.notes))
        data: Bundle = {
            "text/plain": grid_text(self.columns) + notes,
            "text/markdown": grid_markdown(self.columns) + "".join(
                f"\n\n> {markdown_text(n)}" for n in self.notes),
            "text/html": "".join(warning_html(n) for n in self.notes) +
                         grid_html(self.columns, self.format, live=False,
                                   notes=self._json_notes()),
        }
        return _filter(data, include, exclude), self.metadata()

    def _json_notes(self) -> dict[str, list[str]]:
        if self.format != "json":
            return {}
        out: dict[str, list[str]] = {}
        for c in self.columns:
            run = c.shown
            if run is not None and run.ok:
                check = schema_checked(check_json(run.text), run.response)
                fits = ", fits the schema" if run.response and run.response.valid else ""
                out[c.target] = [check.schema_error or f"valid JSON{fits}"] if check.ok \
                    else [str(check.error)]
        return out

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"CompareResult({', '.join(f'{c.target}: {c.status}' for c in self.columns)})"
