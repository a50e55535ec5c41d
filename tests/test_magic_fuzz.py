"""Fuzzed magic lines (issue 14, "bad input gets one clear error"): a seeded generator of
malformed `%llm ...` lines and `%%llm ...` cells, run in a real InteractiveShell with the
extension loaded, in demo mode against the emulators.

Each case must end in a normal result or exactly one `llm error:` line of ours: no
traceback, no raw Python exception (`ValueError:`, `KeyError:` ...) in what the user sees,
within a gross-stall guard of seconds, with every request an emulator received recorded
in the ledger, no budget reservation left open, and the shell still running code after.

The option names come from the parser itself (`_PARSER`), so options added later
(--schema, --tool, --image, --reasoning, ...) are fuzzed without editing this file.
Case counts: 3 seeds x 400 cases (1200 lines and cells); about 20-30 s on 2 cores.
"""

from __future__ import annotations

import faulthandler
import random
import re
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from IPython.core.error import UsageError as IPythonUsageError

import llmdispatch_nb
from llmdispatch_nb import CallRecord, Dispatcher
from llmdispatch_nb.notebook._errors import CellError
from llmdispatch_nb.notebook._parser import _PARSER, SUBCOMMANDS

from .test_magic_support import ANSI, Notebook

pytest_plugins = ("tests.test_magic_support",)  # its fixtures: shell, nb, demo, d, records

SEEDS = [1401, 1402, 1403]
CASES_PER_SEED = 400
STALL_S = 20.0  # a gross stall, not a timing: a demo call takes milliseconds

# A raw Python exception reaching the user: its type name then a colon.
RAW_EXCEPTION = re.compile(
    r"\b(ValueError|IndexError|KeyError|TypeError|AttributeError|AssertionError|"
    r"UnicodeEncodeError|UnicodeDecodeError|OverflowError|RecursionError|ZeroDivisionError|"
    r"NameError|RuntimeError|OSError|FileNotFoundError|StopIteration|SystemExit|"
    r"JSONDecodeError|Exception):")

# Pieces of a hostile line. Values are tried for every option, flags get them too.
TARGETS = ["gpt", "claude", "gemini", "openai:gpt-4o-mini", "anthropic", "google:",
           "nosuch", "nosuch:model", ":", "::", "openai:", ":gpt-4o-mini", "openai:nosuch",
           "a" * 400, "gpt\u00a0", "ｇｐｔ", "openai:gpt-4o-mini:extra", "../..", "*", "?"]
VALUES = ["", "0", "1", "-1", "-0", "2", "3", "0.5", "1e309", "-1e309", "1e-400", "nan", "NaN",
          "inf", "-inf", "Infinity", "99999999999999999999999", "9" * 5000, "-" + "9" * 50,
          "0x10", "1_000", "1e3", "abc", "none", "off", "$5", "$", "high", "minimal", "HIGH ",
          "{x}", "{x[0]}", "{x[" + "9" * 5000 + "]}", "{x['k']}", "{x.__class__}", "{{x}}",
          "{", "}", "{}", "{In[1]}", "{Out[99999]}", "{In[-1]}", "\\", "\\\\", "'", '"', "' '",
          "\x00", "a\x00b", "\ud800", "x\udfffy", "\u202e", "\x1b[31m", "\t", "\x7f", "é",
          "日本語", "🙂", "a" * 3000, "--", "-", "---", "-m", "--system", "=", "a=b",
          "class", "1abc", "a-b", "None", "_llm", "__builtins__", "In", "get_ipython", "Out",
          "__name__", "exit", "_", "_ih",
          "/nonexistent/img.png", "/dev/null", "/", ".", "x", "answer", "cfg", "f"]
WORDS = ["--", "-", "---", "-Z", "--bogus", "--max-tokens=5", "-m5", "-t=0.5", "--no-such",
         "-mm", "-hm", "--help", "-h", "--no-stream=1", "--tag=", "--stop=", "-o=x"]
SUB_ARGS = ["", "0", "-1", "5", "x", "-o", "-o x", "-o 1a", "-o class", "-o __builtins__",
            "-o get_ipython", "-o In", "info", "clear",
            "latency", "ttft", "cost", "tradeoff", "bogus", "none", "nan", "-5", "inf",
            "gpt", "fast gpt", "fast", "openai", "google", "submit", "status", "wait",
            "cancel", "results", "a b c d e", "'", "\ud800", "\x00", "9" * 5000]
BODIES = ["hi", "", "   ", "\n\n", "{x}", "{x[0]} and {x['k']}", "{{literal}}", "{",
          "}", "{In[1]}", "{Out[1]}", "{nosuch}", "{x.__class__}", "{x[" + "9" * 5000 + "]}",
          "\ud800 lone", "nul \x00 here", "\x1b[2J", "🙂" * 50, "x" * 20000,
          "def f():\n    return {'a': 1}", "%llm stats", "\u202e reversed"]
# The slow subcommands (figures, widgets, batch engines) run less often.
RARE_SUBCOMMANDS = {"plot", "panel", "batch", "team", "models"}


def option_names() -> tuple[list[str], list[str]]:
    """(options that take a value, flags): read from the parser, so new options count."""
    takes, flags = [], []
    for action in _PARSER._actions:
        if not action.option_strings:
            continue
        (takes if action.nargs != 0 else flags).extend(action.option_strings)
    return takes, flags


def quote_some(rng: random.Random, word: str) -> str:
    roll = rng.random()
    if roll < 0.15:
        return "'" + word + "'"
    if roll < 0.25:
        return '"' + word + '"'
    if roll < 0.3:
        return "'" + word  # unbalanced
    return word


def cell_line(rng: random.Random) -> str:
    takes, flags = option_names()
    words: list[str] = []
    for _ in range(rng.randint(0, 3)):
        words.append(rng.choice(TARGETS))
    for _ in range(rng.randint(0, 5)):
        roll = rng.random()
        if roll < 0.55:
            words.append(rng.choice(takes))
            if rng.random() < 0.85:  # otherwise the value is missing
                words.append(quote_some(rng, rng.choice(VALUES)))
        elif roll < 0.75:
            words.append(rng.choice(flags))
        elif roll < 0.9:
            words.append(rng.choice(WORDS))
        else:
            words.append(quote_some(rng, rng.choice(VALUES)))
    if rng.random() < 0.2:
        rng.shuffle(words)
    return " ".join(words)


def sub_line(rng: random.Random) -> str:
    name = rng.choice((*SUBCOMMANDS, "HELP", "Stats", "nosuch", "?", "-h", "--help", ""))
    if name in RARE_SUBCOMMANDS and rng.random() < 0.5:
        name = "stats"
    args = [quote_some(rng, rng.choice(SUB_ARGS)) for _ in range(rng.randint(0, 3))]
    return " ".join([name, *args])


def case(rng: random.Random) -> str:
    """One cell's source: a `%%llm` cell, a one-line `%llm ... -- prompt`, or a subcommand."""
    roll = rng.random()
    if roll < 0.5:
        body = rng.choice(BODIES)
        if rng.random() < 0.2:
            body = "".join(rng.choice(BODIES) for _ in range(3))
        return f"%%llm {cell_line(rng)}\n{body}"
    if roll < 0.75:
        prompt = quote_some(rng, rng.choice(BODIES).replace("\n", " "))
        dashes = rng.choice(["--", "--", " --", "-- --", "--x", "-- -m 5 --"])
        return f"%llm {cell_line(rng)} {dashes} {prompt}"
    if roll < 0.95:
        return f"%llm {sub_line(rng)}"
    # Odd shapes of the magic itself.
    return rng.choice(["%llm", "%%llm", "%%llm\n", "%llm ", "%llm --", "%llm -- ",
                       "%%llm --\nhi", "%%llm\n\n", "%llm -" + "m" * 500,
                       "%llm " + "x " * 2000 + "-- hi", "%%llm " + "-m 5 " * 300 + "\nhi"])


def requests_seen(d: Dispatcher) -> int:
    return sum(len(e.requests.chat()) for e in d.sim.emulators.values())


def attempts_recorded(records: list[CallRecord]) -> int:
    """Attempts that went on the wire: not a cache hit, not refused before sending."""
    return sum(1 for r in records if r.status in ("ok", "error") and not r.cache_hit)


def seen_text(cap_out: str, cap_err: str) -> str:
    return ANSI.sub("", cap_out + cap_err)


@pytest.fixture
def clean_namespace(nb: Notebook, d: Dispatcher) -> Iterator[dict[str, Any]]:
    """The fuzz may `-o` into any name, set aliases and a budget: put all of it back."""
    ns = nb.ns
    saved = dict(ns)
    ns.update({"x": ["first", {"k": "v"}], "cfg": {"a": 1}, "answer": 42, "f": len})
    aliases = dict(d.aliases)
    budget = getattr(d, "budget", None)
    limit = getattr(budget, "limit_usd", None)
    yield ns
    ns.clear()
    ns.update(saved)
    d.aliases.clear()
    d.aliases.update(aliases)
    if budget is not None:
        budget.set_limit(limit)


def run_case(nb: Notebook, source: str) -> tuple[Any, str, float]:
    from IPython.utils.capture import capture_output

    start = time.monotonic()
    with capture_output(display=False) as cap:
        # store_history=False: IPython's own history store is not under test here.
        result = nb.shell.run_cell(source, store_history=False, silent=False)
    return result, seen_text(cap.stdout, cap.stderr), time.monotonic() - start


def check_case(nb: Notebook, d: Dispatcher, records: list[CallRecord], source: str) -> list[str]:
    """What went wrong with one case (empty: it kept every promise)."""
    problems: list[str] = []
    before_req, before_rec = requests_seen(d), attempts_recorded(records)
    budget = getattr(d, "budget", None)
    result, text, elapsed = run_case(nb, source)
    if elapsed > STALL_S:
        problems.append(f"took {elapsed:.1f}s")
    err = result.error_in_exec or result.error_before_exec
    if "Traceback" in text or 'File "' in text:
        problems.append(f"traceback shown: {text[-600:]!r}")
    raw = RAW_EXCEPTION.search(text)
    if raw:
        problems.append(f"raw exception shown: {text[max(0, raw.start() - 200):raw.end() + 200]!r}")
    errors = [ln for ln in text.splitlines() if ln.startswith("llm error:")]
    if err is not None:
        # IPython's own UsageError (an empty `%%llm` body) is one line of IPython's, before
        # the magic runs; anything else must be ours.
        if not isinstance(err, CellError | IPythonUsageError):
            problems.append(f"failed with {type(err).__name__}: {str(err)[:300]!r}")
        elif ".render_traceback" in text or len(errors) > 1:
            problems.append(f"{len(errors)} error lines: {errors!r}")
        if isinstance(err, CellError) and "\n" in str(err):
            problems.append(f"error of more than one line: {str(err)[:300]!r}")
        if isinstance(err, CellError) and RAW_EXCEPTION.search(str(err)):
            problems.append(f"raw exception in the error line: {str(err)[:300]!r}")
    elif len(errors) > 1:
        problems.append(f"{len(errors)} error lines: {errors!r}")
    if hasattr(d.ledger, "flush"):
        d.ledger.flush()
    sent = requests_seen(d) - before_req
    kept = attempts_recorded(records) - before_rec
    if sent != kept:
        problems.append(f"{sent} requests reached an emulator, {kept} attempts in the ledger")
    if budget is not None and getattr(budget, "reserved", 0):
        problems.append(f"a budget reservation left open: {budget.reserved}")
    # Builtins and get_ipython (every magic line calls it) still there: an `-o` may not
    # have bound either.
    alive = nb.shell.run_cell("__fuzz_alive = len([get_ipython()]) * 42", store_history=False)
    if not alive.success or nb.ns.get("__fuzz_alive") != 42:
        problems.append("the shell no longer runs code")
    return problems


@pytest.mark.parametrize("seed", SEEDS)
def test_fuzzed_magic_lines_end_in_a_result_or_one_clear_line(
        seed: int, nb: Notebook, d: Dispatcher, records: list[CallRecord],
        clean_namespace: dict[str, Any]) -> None:
    rng = random.Random(seed)
    failures: list[str] = []
    # A real hang would stop the run: dump every thread's stack so it says where.
    faulthandler.dump_traceback_later(STALL_S * 3, repeat=True, file=sys.stderr)
    try:
        for i in range(CASES_PER_SEED):
            source = case(rng)
            problems = check_case(nb, d, records, source)
            if problems:
                failures.append(f"case {seed}/{i} {source[:200]!r}: " + "; ".join(problems))
    finally:
        faulthandler.cancel_dump_traceback_later()
    assert not failures, f"{len(failures)} of {CASES_PER_SEED} cases broke a promise:\n" + \
        "\n".join(failures[:25])


# Lines the fuzz (or a probe beside it) once broke, kept so they stay fixed.
FOUND = [
    "%%llm gpt\n{x[" + "9" * 5000 + "]}",  # int() past 4300 digits: raw ValueError
    "%%llm gpt --image 'a\x00b'\nhi",  # open(): ValueError: embedded null byte
    "%%llm gpt --image '\ud800'\nhi",  # open(): UnicodeEncodeError
    "%%llm gpt -n 99999999999999999999\nhi",  # a run per repeat: never ended
    "%%llm gpt --reasoning high -m 5\nhi",  # a warning made an error kept the reservation
    "%llm gpt --reasoning 99999999999999999999 -- hi",
    "%%llm gpt -m 5 -o __builtins__\nhi",  # every later cell failed: no builtins
    "%%llm gpt -m 5 -o get_ipython\nhi",  # every later magic failed
    "%llm stats -o __builtins__",
    "%llm calls 1 -o get_ipython",
    "%llm models openai -o __builtins__",
]

# A lone surrogate was sent: each emulator answered 500, retried three times, which opened
# the vendor's circuit, so a later cell waited 30 s. Now refused before sending, one line.
SURROGATES = ["%%llm claude -m 5\n\ud800 lone", "%%llm gpt -m 5 -s 'x\udfff'\nhi",
              "%%llm gpt -m 5\n{broken}", "%llm gemini --stop '\ud800' -- hi"]


@pytest.mark.parametrize("source", FOUND, ids=range(len(FOUND)))
def test_lines_the_fuzz_found_end_in_a_result_or_one_clear_line(
        source: str, nb: Notebook, d: Dispatcher, records: list[CallRecord],
        clean_namespace: dict[str, Any]) -> None:
    assert check_case(nb, d, records, source) == []


@pytest.mark.parametrize("source", SURROGATES, ids=range(len(SURROGATES)))
def test_a_lone_surrogate_is_refused_before_sending(
        source: str, nb: Notebook, d: Dispatcher, records: list[CallRecord],
        clean_namespace: dict[str, Any]) -> None:
    nb.ns["broken"] = "half an emoji: \ud83d"
    before = requests_seen(d)
    assert check_case(nb, d, records, source) == []
    _, text, _ = run_case(nb, source)
    assert "lone surrogate" in text and requests_seen(d) == before, text


def test_the_generator_reaches_every_option_and_subcommand() -> None:
    """The fuzz is only as good as its reach: every option and subcommand appears."""
    takes, flags = option_names()
    sources = " ".join(case(rng) for seed in SEEDS
                       for rng in [random.Random(seed)] for _ in range(CASES_PER_SEED))
    missing = [o for o in takes + flags if o not in sources.split()]
    missing += [s for s in SUBCOMMANDS if f"%llm {s}" not in sources]
    assert not missing, f"never generated: {missing}"


def test_the_shell_and_ledger_still_work_after_the_fuzz(
        nb: Notebook, d: Dispatcher, records: list[CallRecord]) -> None:
    """After hundreds of hostile cells, a plain cell still answers and is recorded."""
    run = nb.cell("gpt -m 5", "Say hello")
    assert run.success, run.stdout + run.stderr
    assert [r for r in records if r.status == "ok"]
    assert llmdispatch_nb.default() is d
