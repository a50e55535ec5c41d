"""The grid a sweep runs: prompts x var rows x targets x repeats, each cell with a stable id.

Prompts come as a string, a list, a dict of named prompts, or a pandas Series (its index
names the prompts) or DataFrame (a "prompt" column, or its only column; the other columns
travel with each prompt as its own vars, e.g. an expected answer). Vars come as a dict of
lists (their cross product) or rows (a DataFrame or a list of dicts).

With vars, every prompt is a `str.format` template (`{{` and `}}` for literal braces);
without vars, prompts are sent exactly as written. A template that names a var the row
lacks is not an exception: the cell carries the error and is never sent.

Ids are short sha256 digests of canonical JSON, so they are the same in every process:
a cell is its rendered prompt, vars, target, repeat and sampling parameters; a sweep is
its prompts, vars and parameters (not its targets or repeats, so adding a target or a
repeat to a sweep keeps its id and resumes what is already answered).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigurationError

# Columns every sweep row has; a var may not take one of these names.
RESERVED = frozenset({
    "sweep_id", "cell_id", "case_id", "prompt_id", "prompt", "target", "repeat", "status",
    "text", "vendor", "model", "latency_s", "ttft_s", "input_tokens", "output_tokens",
    "cost_usd", "spent_usd", "cached", "resumed", "attempts", "call_id", "error_type", "error",
    "score",
})


@dataclass(frozen=True, slots=True)
class PromptSpec:
    prompt_id: str
    template: str
    own_vars: Mapping[str, Any] = field(default_factory=dict)  # from a prompts DataFrame row


@dataclass(frozen=True, slots=True)
class Cell:
    """One run to make (or already made): a rendered prompt for one target and repeat."""

    index: int  # position in the grid, the row order of the result
    prompt_id: str
    template: str
    vars: Mapping[str, Any]
    target: str
    repeat: int
    prompt: str | None  # None when the template could not be filled
    template_error: tuple[str, str] | None  # (type, message)
    cell_id: str
    case_id: str  # the question, whatever target or repeat answers it


@dataclass(frozen=True)
class Params:
    """What is sent besides the prompt; part of every cell's identity."""

    system: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None

    def as_json(self) -> dict[str, Any]:
        return {"system": self.system, "max_tokens": self.max_tokens,
                "temperature": None if self.temperature is None else float(self.temperature)}


def digest(payload: Any, size: int = 16) -> str:
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                      default=str)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:size]


# -- reading what the user gave ------------------------------------------------------------


def read_prompts(prompts: Any) -> list[PromptSpec]:
    if isinstance(prompts, str):
        specs = [PromptSpec("p0", prompts)]
    elif isinstance(prompts, Mapping):
        specs = [PromptSpec(str(k), _text(v, str(k))) for k, v in prompts.items()]
    elif _is_frame(prompts):
        specs = _prompts_from_frame(prompts)
    elif _is_series(prompts):
        specs = [PromptSpec(str(k), _text(v, str(k))) for k, v in prompts.items()]
    elif isinstance(prompts, Iterable):
        specs = [PromptSpec(f"p{i}", _text(v, f"p{i}")) for i, v in enumerate(prompts)]
    else:
        raise ConfigurationError(
            f"prompts must be a string, a list or dict of strings, or a pandas Series or "
            f"DataFrame column; got {type(prompts).__name__}")
    if not specs:
        raise ConfigurationError("the sweep has no prompts")
    ids = [s.prompt_id for s in specs]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise ConfigurationError(f"prompt ids must be unique; repeated: {', '.join(dup[:5])}")
    return specs


def _prompts_from_frame(frame: Any) -> list[PromptSpec]:
    columns = [str(c) for c in frame.columns]
    if "prompt" in columns:
        col = "prompt"
    elif len(columns) == 1:
        col = columns[0]
    else:
        raise ConfigurationError(
            f"a prompts DataFrame needs a 'prompt' column (or just one column); it has "
            f"{', '.join(columns)}")
    others = [c for c in frame.columns if str(c) != col]
    specs = []
    for label, row in zip(frame.index, frame.to_dict("records"), strict=True):
        own = {str(c): _plain(row[c]) for c in others}
        specs.append(PromptSpec(str(label), _text(row[col], str(label)), own))
    return specs


def read_vars(vars: Any) -> list[dict[str, Any]]:
    """The var rows: one empty row when there are none."""
    if vars is None:
        return [{}]
    if isinstance(vars, Mapping):
        names = [str(k) for k in vars]
        values = [_values(v) for v in vars.values()]
        for name, vs in zip(names, values, strict=True):
            if not vs:
                raise ConfigurationError(f"var {name!r} has no values")
        return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*values)]
    if _is_frame(vars):
        return [{str(k): _plain(v) for k, v in row.items()} for row in vars.to_dict("records")]
    if isinstance(vars, Sequence) and not isinstance(vars, str):
        rows = []
        for r in vars:
            if not isinstance(r, Mapping):
                raise ConfigurationError(f"vars rows must be dicts, got {type(r).__name__}")
            rows.append({str(k): v for k, v in r.items()})
        return rows or [{}]
    raise ConfigurationError(
        f"vars must be a dict of lists (crossed), a DataFrame or a list of dicts (rows); "
        f"got {type(vars).__name__}")


def read_targets(targets: str | Sequence[str]) -> list[str]:
    out = [targets] if isinstance(targets, str) else [str(t) for t in targets]
    if not out:
        raise ConfigurationError("the sweep has no targets")
    if len(set(out)) != len(out):
        raise ConfigurationError("each target may appear only once in a sweep (use n= for repeats)")
    return out


def _values(v: Any) -> list[Any]:
    if isinstance(v, str | bytes) or not isinstance(v, Iterable):
        return [v]  # a single value, not a list of characters
    return [_plain(x) for x in v]


def _text(v: Any, where: str) -> str:
    if not isinstance(v, str):
        raise ConfigurationError(f"prompt {where!r} is {type(v).__name__}, not a string")
    return v


def _plain(v: Any) -> Any:
    """numpy scalars as Python values, so ids and JSON do not depend on the dtype."""
    item = getattr(v, "item", None)
    if callable(item) and type(v).__module__ == "numpy":
        try:
            return item()
        except (ValueError, TypeError):
            return v
    return v


def _is_frame(x: Any) -> bool:
    return type(x).__name__ == "DataFrame" and hasattr(x, "columns")


def _is_series(x: Any) -> bool:
    return type(x).__name__ == "Series" and hasattr(x, "index")


# -- the grid ------------------------------------------------------------------------------


def render(template: str, values: Mapping[str, Any], templated: bool) -> tuple[str | None, tuple[str, str] | None]:
    if not templated:
        return template, None
    try:
        return template.format_map(values), None
    except KeyError as exc:
        name = exc.args[0] if exc.args else "?"
        known = ", ".join(sorted(values)) or "none"
        return None, ("KeyError", f"the prompt needs var {name!r}, which this row does not give "
                                  f"(vars: {known}); write {{{{ and }}}} for literal braces")
    except (ValueError, IndexError, AttributeError, TypeError) as exc:
        return None, (type(exc).__name__, f"the prompt is not a valid template: {exc}; write "
                                          f"{{{{ and }}}} for literal braces")


def sweep_id(specs: Sequence[PromptSpec], var_rows: Sequence[Mapping[str, Any]],
             params: Params) -> str:
    return digest({"prompts": [[s.prompt_id, s.template, dict(s.own_vars)] for s in specs],
                   "vars": [dict(r) for r in var_rows], "params": params.as_json()}, 12)


def build_cells(specs: Sequence[PromptSpec], var_rows: Sequence[Mapping[str, Any]],
                targets: Sequence[str], n: int, params: Params) -> list[Cell]:
    if not isinstance(n, int) or n < 1:
        raise ConfigurationError(f"n (repeats per cell) must be a whole number >= 1, got {n!r}")
    names = {k for r in var_rows for k in r} | {k for s in specs for k in s.own_vars}
    clash = sorted(names & RESERVED)
    if clash:
        raise ConfigurationError(f"var name(s) {', '.join(clash)} clash with sweep columns; "
                                 f"rename them")
    templated = bool(names)
    p = params.as_json()
    cells: list[Cell] = []
    for spec in specs:
        for row in var_rows:
            values = {**spec.own_vars, **row}
            prompt, error = render(spec.template, values, templated)
            shown = prompt if prompt is not None else spec.template
            case = digest({"prompt_id": spec.prompt_id, "prompt": shown, "vars": values})
            for target in targets:
                for repeat in range(n):
                    cid = digest({"prompt": shown, "vars": values, "target": target,
                                  "repeat": repeat, "params": p})
                    cells.append(Cell(len(cells), spec.prompt_id, spec.template, values, target,
                                      repeat, prompt, error, cid, case))
    return cells


def var_names(cells: Sequence[Cell]) -> list[str]:
    """The var columns, in the order they first appear."""
    seen: dict[str, None] = {}
    for c in cells:
        for k in c.vars:
            seen.setdefault(k, None)
    return list(seen)
