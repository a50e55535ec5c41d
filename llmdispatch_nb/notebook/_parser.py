"""Reading the magic's line: targets and options into a typed `CellArgs`, or a subcommand.

argparse does the reading; its error path raises our one-line `UsageError` instead of
printing usage and calling `sys.exit`, which would end a kernel's cell with SystemExit.
"""

from __future__ import annotations

import argparse
import keyword
import re
import shlex
from dataclasses import dataclass
from typing import Any, NoReturn

from .._types import REASONING_LEVELS
from ._errors import UsageError

FORMATS = ("markdown", "text", "code", "json", "html")

# What `-f json` and `-f code` tell the model, as a line of the system prompt: no vendor
# guesses from the display format that JSON or a code block is wanted, and a system line
# works on every vendor (Anthropic's Messages API has no JSON mode). The emulators read
# the same words, so a demo answer takes the same shape.
FORMAT_HINTS = {
    "json": "Reply with JSON only: one JSON value, no prose around it and no code fence.",
    "code": "Put the code of your answer in a fenced code block.",
}


def with_format_hint(system: str | None, fmt: str) -> str | None:
    """The system prompt with the line `fmt` asks for (once) at its end."""
    hint = FORMAT_HINTS.get(fmt)
    if hint is None or (system and hint in system):
        return system
    return f"{system}\n\n{hint}" if system else hint
PLOTS = ("latency", "ttft", "cost", "tradeoff")
MAX_REPEAT = 100
SUBCOMMANDS = ("vendors", "models", "alias", "unalias", "stats", "calls", "plot", "budget",
               "cache", "config", "chats", "reset", "panel", "batch", "team", "help")

USAGE = """\
Send the cell to one or more LLMs; stream the answer; compare targets side by side.

    %%llm [TARGET ...] [options]
    prompt text, with {name}, {In[3]}, {Out[4]} filled in from the notebook

    %llm [TARGET ...] [options] -- one-line prompt
    %llm SUBCOMMAND [...]

TARGET is vendor:model (openai:gpt-4o-mini), an alias (gpt, claude, gemini, or your own),
a group, or a bare model name. No target: the chat's, else LLMMagics.default_target,
else the dispatcher's default. Two or more targets run at once, side by side.

Options:
  -s, --system TEXT        system prompt
  -t, --temperature X      0..2
  -m, --max-tokens N       longest answer, in tokens
  --top-p X                nucleus sampling, (0, 1]
  --stop TEXT              stop sequence (repeatable, at most 4)
  --seed N                 sampling seed, where the vendor supports one
  --reasoning R            how hard a reasoning model thinks: none, minimal, low, medium,
                           high, or a thinking budget in tokens (-m stays the answer's)
  --strategy NAME          how candidates are picked (model, cheapest, fastest, ...)
  --fallback TARGET        try this target if the first fails (repeatable)
  --max-cost USD           refuse to send if the call could cost more
  --no-cache               always ask the vendor, never the response cache
  --tag TAG                label the call in the ledger (repeatable)
  -n K                     run each target K times; columns show mean and spread
  -f, --format FORMAT      markdown (default), text, code (asks for a fenced block; its
                           code goes into a new cell below), json (asks for JSON and
                           validates it), html
  -o NAME                  also keep the result in the variable NAME (always in _llm)
  --no-stream              wait for the whole answer instead of streaming it
  --chat NAME              continue the named conversation (its history is sent)
  --no-interpolate         send {braces} exactly as written
  --schema NAME            ask for an answer of this shape: NAME is a pydantic model,
                           dataclass, TypedDict or JSON Schema dict in the notebook; each
                           column shows the parsed object and valid/invalid
  --tool NAME              offer the function NAME as a tool (repeatable); the columns
                           show the calls made
  --run-tools              run the calls with your functions, send the results back and
                           show the final answer
  --image PATH             attach an image (or a PDF) (repeatable); shown small above the
                           answers

Interpolation: {name} or {name.attr} or {name[0]} / {name['key']} from the namespace,
{In[n]} / {Out[n]} from the history; {{ and }} give literal braces. Anything else in
braces (dict literals, code blocks, format strings) is sent as written; a placeholder
naming a variable that does not exist is sent as written too, with a one-line warning.

Subcommands:
  %llm vendors             configured vendors, key set or not, demo or real
  %llm models [VENDOR] [-o NAME]  models with context, output cap, reasoning, tools, prices
  %llm alias [NAME TARGET] list aliases, or add one;  %llm unalias NAME
  %llm stats [-o NAME]     summary of the calls so far;  %llm calls [N] [-o NAME]  the last N
                           (shown: the columns read first; NAME keeps every column)
  %llm plot latency|ttft|cost|tradeoff
  %llm budget [AMOUNT]     show the spend budget, or set it in US dollars
  %llm cache info|clear    the response cache
  %llm chats               the conversations;  %llm reset [NAME]  clear one (or all)
  %llm config              the magic's settings (%config LLMMagics.<name> = value)
  %llm panel               the widget panel
  %llm team                the team's spend per user, vendor and model; the shared budget
  %llm batch [submit PROMPTS TARGET... | status|wait|cancel|results [JOB]]
                           sweeps on the vendors' batch engines (half price, resumable)

Errors show as one line in the cell; every attempt, failed or not, is in the ledger.
"""


@dataclass(frozen=True)
class CellArgs:
    """What one `%%llm` line asks for."""

    targets: tuple[str, ...] = ()
    system: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    reasoning: str | int | None = None
    strategy: str | None = None
    fallbacks: tuple[str, ...] = ()
    max_cost: float | None = None
    no_cache: bool = False
    tags: tuple[str, ...] = ()
    repeat: int = 1
    format: str | None = None  # None: LLMMagics.output_format
    output: str | None = None
    stream: bool | None = None  # None: LLMMagics.stream
    chat: str | None = None
    interpolate: bool | None = None  # None: LLMMagics.interpolate
    help: bool = False
    schema: str | None = None  # a name in the user's namespace
    tools: tuple[str, ...] = ()  # names of functions in the user's namespace
    run_tools: bool = False
    images: tuple[str, ...] = ()  # paths (or names of variables holding an image)

    @property
    def compare(self) -> bool:
        return len(self.targets) > 1 or self.repeat > 1

    def send_params(self) -> dict[str, Any]:
        """Parameters that shape the request itself."""
        out: dict[str, Any] = {}
        for name in ("system", "temperature", "max_tokens", "top_p", "seed", "reasoning"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.stop:
            out["stop"] = list(self.stop)
        if self.tags:
            out["tags"] = list(self.tags)
        return out

    def route_options(self) -> dict[str, Any]:
        """How the dispatcher routes it; only what the user set, so defaults stay theirs."""
        out: dict[str, Any] = {}
        if self.strategy is not None:
            out["strategy"] = self.strategy
        if self.fallbacks:
            out["fallbacks"] = list(self.fallbacks)
        if self.max_cost is not None:
            out["max_cost"] = self.max_cost
        # Repeats measure spread: a cached copy of the first run would hide it.
        if self.no_cache or self.repeat > 1:
            out["cache"] = False
        return out


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message}; see %llm? for usage")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise UsageError(message or "see %llm? for usage")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be 1 or more")
    return value


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def _reasoning(text: str) -> str | int:
    if text.strip().lower() in REASONING_LEVELS:
        return text.strip().lower()
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not one of {', '.join(REASONING_LEVELS)} or a thinking budget in tokens")
    return value


def _build() -> _Parser:
    p = _Parser(prog="%%llm", add_help=False, allow_abbrev=False)
    p.add_argument("targets", nargs="*")
    p.add_argument("-h", "--help", action="store_true")
    p.add_argument("-s", "--system")
    p.add_argument("-t", "--temperature", type=_number)
    p.add_argument("-m", "--max-tokens", type=_positive_int)
    p.add_argument("--top-p", type=_number)
    p.add_argument("--stop", action="append", default=[])
    p.add_argument("--seed", type=_whole)
    p.add_argument("--reasoning", type=_reasoning)
    p.add_argument("--strategy")
    p.add_argument("--fallback", action="append", default=[], dest="fallbacks")
    p.add_argument("--max-cost", type=_number)
    p.add_argument("--no-cache", action="store_true")
    p.add_argument("--tag", action="append", default=[], dest="tags")
    p.add_argument("-n", type=_positive_int, default=1, dest="repeat")
    p.add_argument("-f", "--format", choices=FORMATS)
    p.add_argument("-o", "--output")
    p.add_argument("--no-stream", action="store_true")
    p.add_argument("--chat")
    p.add_argument("--no-interpolate", action="store_true")
    p.add_argument("--schema")
    p.add_argument("--tool", action="append", default=[], dest="tools")
    p.add_argument("--run-tools", action="store_true")
    p.add_argument("--image", action="append", default=[], dest="images")
    return p


_PARSER = _build()


def is_output_name(name: str) -> bool:
    """A name `-o` may bind: a Python name that is not a keyword, nor one the shell runs
    on (`__builtins__` replaced breaks every later cell; `get_ipython`, every magic)."""
    return (name.isidentifier() and not keyword.iskeyword(name) and name != "get_ipython"
            and not (name.startswith("__") and name.endswith("__")))


def split_words(line: str) -> list[str]:
    try:
        return shlex.split(line, posix=True)
    except ValueError as exc:  # an unclosed quote
        raise UsageError(f"cannot read the line ({exc}); check its quotes") from None


def parse_cell_line(line: str) -> CellArgs:
    words = split_words(line)
    ns = _PARSER.parse_intermixed_args(words)
    if ns.output is not None and not is_output_name(ns.output):
        raise UsageError(f"-o {ns.output!r}: give a Python variable name, e.g. -o answer")
    if ns.chat is not None and not ns.chat.strip():
        raise UsageError("--chat needs a name, e.g. --chat review")
    if ns.repeat > MAX_REPEAT:  # each run is a thread and a column: 10**20 would never end
        raise UsageError(f"-n: at most {MAX_REPEAT} runs a cell; for more, "
                         "use llmdispatch_nb.experiments or %llm batch")
    if ns.max_cost is not None and ns.max_cost < 0:
        raise UsageError("--max-cost must be 0 or more (US dollars)")
    for t in ns.targets:
        if t.startswith("-"):
            raise UsageError(f"unknown option {t}; see %llm? for usage")
    args = CellArgs(
        targets=tuple(ns.targets), system=ns.system, temperature=ns.temperature,
        max_tokens=ns.max_tokens, top_p=ns.top_p, stop=tuple(ns.stop), seed=ns.seed,
        reasoning=ns.reasoning,
        strategy=ns.strategy, fallbacks=tuple(ns.fallbacks), max_cost=ns.max_cost,
        no_cache=ns.no_cache, tags=tuple(ns.tags), repeat=ns.repeat, format=ns.format,
        output=ns.output, stream=False if ns.no_stream else None, chat=ns.chat,
        interpolate=False if ns.no_interpolate else None, help=ns.help,
        schema=ns.schema, tools=tuple(ns.tools), run_tools=ns.run_tools, images=tuple(ns.images))
    if args.run_tools and not args.tools:
        raise UsageError("--run-tools runs the calls of --tool functions: name one, e.g. "
                         "--tool get_weather --run-tools")
    if args.chat and len(args.targets) > 1:
        raise UsageError("--chat keeps one conversation: give it one target, not "
                         f"{len(args.targets)}")
    if args.chat and args.repeat > 1:
        raise UsageError("--chat and -n cannot be combined: a conversation takes one answer a turn")
    return args


# `%llm gpt -- prompt`: the prompt starts after the first free-standing `--`.
_PROMPT_SPLIT = re.compile(r"(?:^|\s)--(?:\s|$)")


def split_line_prompt(line: str) -> tuple[str, str] | None:
    """(options, prompt) for a one-line prompt, or None when the line has no `--`."""
    m = _PROMPT_SPLIT.search(line)
    if m is None:
        return None
    return line[: m.start()], line[m.end():].strip()


@dataclass(frozen=True)
class Subcommand:
    name: str
    args: tuple[str, ...]


def parse_subcommand(line: str) -> Subcommand:
    words = split_words(line)
    if not words:
        return Subcommand("help", ())
    name = words[0].lower()
    if name in ("-h", "--help", "?"):
        name = "help"
    if name not in SUBCOMMANDS:
        raise UsageError(
            f"unknown subcommand {words[0]!r}; subcommands: {', '.join(SUBCOMMANDS)}. "
            "To send a prompt from one line: %llm TARGET -- your prompt")
    return Subcommand(name, tuple(words[1:]))


def expect(sub: Subcommand, at_most: int, usage: str, at_least: int = 0) -> tuple[str, ...]:
    if not at_least <= len(sub.args) <= at_most:
        raise UsageError(f"usage: %llm {sub.name} {usage}".rstrip())
    return sub.args
