"""`%%llm` and `%llm`: a thin layer over the dispatcher.

The line is parsed into a `CellArgs`; the prompt is interpolated; a `Runner` streams
the answer(s) while a `LiveOutput` updates the cell in place; the result object lands in
`_llm` (and `-o NAME`). Subcommands live in `_subcommands.py`. Every failure the user can
act on becomes one `CellError` line; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import Any

from IPython.core.magic import Magics, line_cell_magic, magics_class, no_var_expand
from traitlets import Bool, Enum, Float, Int, TraitError, Unicode, validate

from .._arguments import broken_text
from ..errors import LLMDispatchError, MissingKeyError
from ._chats import Chat, ChatBook
from ._display import (
    LiveOutput,
    error_bundle,
    footer_text,
    live_bundle,
    live_grid_bundle,
)
from ._errors import CellError, describe, from_dispatch
from ._interpolate import fill
from ._parser import (
    FORMATS,
    USAGE,
    CellArgs,
    parse_cell_line,
    parse_subcommand,
    split_line_prompt,
    with_format_hint,
)
from ._results import CompareResult, LLMResult, fenced_code
from ._run import Column, Runner
from ._structured_view import cell_extras, thumbnails_bundle


def dispatcher() -> Any:
    """The dispatcher the magic sends through (tests inject one with `set_default`)."""
    import llmdispatch_nb

    return llmdispatch_nb.default()


@magics_class
class LLMMagics(Magics):
    """Send prompts to LLMs from a notebook: `%%llm`, `%llm`. Settings: `%config LLMMagics`."""

    default_target = Unicode(
        None, allow_none=True,
        help="Target used when a cell names none (vendor:model, alias or model); "
             "None: the dispatcher's default.").tag(config=True)
    stream = Bool(True, help="Stream answers into the cell as they arrive "
                             "(--no-stream waits for the whole answer).").tag(config=True)
    output_format = Enum(list(FORMATS), default_value="markdown",
                         help="How answers are shown unless -f says otherwise.").tag(config=True)
    throttle_s = Float(0.1, help="Least time between two updates of a streaming output, in "
                                 "seconds, so a fast stream never floods the frontend.").tag(config=True)
    chat_max_turns = Int(20, help="Earlier exchanges a --chat sends (the oldest are dropped "
                                  "first).").tag(config=True)
    chat_max_tokens = Int(8000, help="Token budget (estimated) for a --chat's history plus the "
                                     "new prompt; 0 = no limit.").tag(config=True)
    interpolate = Bool(True, help="Fill {name}, {In[n]}, {Out[n]} into prompts "
                                  "(--no-interpolate turns it off for one cell).").tag(config=True)
    warn_unresolved = Bool(True, help="Print one line naming placeholders sent as written "
                                      "because no such variable exists.").tag(config=True)
    fail_cell_on_error = Bool(True, help="A failed call fails the cell (one line, no traceback), "
                                         "so Run All stops there. False: show the line and go "
                                         "on.").tag(config=True)

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        self.chats = ChatBook()

    @validate("throttle_s")
    def _check_throttle(self, proposal: Any) -> float:
        value = float(proposal["value"])
        if value < 0:
            raise TraitError("throttle_s must be 0 or more seconds")
        return value

    @validate("chat_max_turns", "chat_max_tokens")
    def _check_chat_limits(self, proposal: Any) -> int:
        value = int(proposal["value"])
        if value < 0:
            raise TraitError(f"{proposal['trait'].name} must be 0 or more")
        return value

    # -- entry point ---------------------------------------------------------------------

    @no_var_expand
    @line_cell_magic
    def llm(self, line: str, cell: str | None = None) -> Any:
        try:
            if cell is None:
                return self._line(line)
            return self._cell(line, cell)
        except CellError as exc:
            error: CellError = exc
        except LLMDispatchError as exc:
            error = from_dispatch(exc)
        except KeyboardInterrupt:
            # Ctrl-C / the kernel's interrupt: one line, and the cell always fails (Run All
            # stops); the Runner has cancelled the calls, which the ledger keeps as cancelled.
            raise CellError("interrupted: the call was cancelled (%llm calls shows it)") from None
        # Raised here, outside the except blocks, so no chained context tags along.
        return self.fail(error)

    llm.__doc__ = USAGE

    def fail(self, error: CellError, live: LiveOutput | None = None) -> None:
        if self.fail_cell_on_error:
            raise error
        bundle = error_bundle(error.line)
        if live is not None:
            live.show(bundle)
        else:
            from IPython.display import display

            display(bundle, raw=True)

    def _line(self, line: str) -> Any:
        split = split_line_prompt(line)
        if split is not None:
            options, prompt = split
            return self._cell(options, prompt)
        from ._subcommands import run_subcommand

        return run_subcommand(self, parse_subcommand(line))

    def _cell(self, line: str, cell: str) -> Any:
        args = parse_cell_line(line)
        if args.help:
            print(USAGE)
            return None
        self.send(args, cell)
        return None

    # -- sending -------------------------------------------------------------------------

    def _fill(self, text: str, args: CellArgs) -> str:
        interpolate = self.interpolate if args.interpolate is None else args.interpolate
        if not interpolate:
            return text
        filled = fill(text, self.shell.user_ns if self.shell is not None else {})
        warning = filled.warning()
        if warning and self.warn_unresolved:
            print(warning, file=sys.stderr)
        return filled.text

    def _label(self, d: Any, target: str | None, *, compare: bool = False) -> str:
        """The target as the user will see it; resolving it now turns a typo into one line.

        In a comparison, a vendor with no key is left to fail in its own column (the other
        targets still run); a misspelt target still stops the cell before anything is sent.
        """
        label = target if target else d.resolver.default()
        try:
            d.resolver.resolve(label)
        except MissingKeyError:
            if not compare:
                raise
        return label

    def send(self, args: CellArgs, template: str) -> LLMResult | CompareResult | None:
        d = dispatcher()
        fmt = args.format or self.output_format
        stream = self.stream if args.stream is None else args.stream
        prompt = self._fill(template, args).strip()
        system = self._fill(args.system, args) if args.system is not None else None

        # A new chat is only kept once its first turn is answered.
        chat: Chat | None = self.chats.find(args.chat) if args.chat else None
        if chat is not None and system is None:
            system = chat.system
        targets: list[str | None] = list(args.targets)
        if not targets:
            targets = [chat.target if chat is not None and chat.target else self.default_target]
        _check_text("the prompt", prompt)
        for what, text in (("-s", system), *(("--stop", t) for t in args.stop)):
            _check_text(what, text)
        labels = [self._label(d, t, compare=len(targets) > 1) for t in targets]
        _check_strategy(args.strategy)
        for fb in args.fallbacks:
            d.resolver.resolve(fb)

        messages: Any = prompt
        if chat is not None:
            messages = chat.messages(prompt, self.chat_max_turns, self.chat_max_tokens)
        send_params = args.send_params()
        # --schema / --tool name things in the notebook; --image attaches files (shown small
        # above the answers), on the turn being sent.
        extras, attached = cell_extras(args.schema, args.tools, args.images,
                                       self.shell.user_ns if self.shell is not None else {})
        send_params.update(extras)
        if attached:
            messages = [*messages[:-1], replace(messages[-1], attachments=tuple(attached))] \
                if chat is not None else [prompt, *attached]
        hinted = with_format_hint(system, fmt)  # -f json / -f code say so to the model
        if hinted is not None:
            send_params["system"] = hinted
        d.request(messages, None, **send_params)  # refuses an empty prompt, bad ranges, now
        params = {**send_params, **args.route_options()}

        runner = Runner(d, messages, labels, params, labels=labels, repeat=args.repeat,
                        stream=stream, throttle_s=self.throttle_s, run_tools=args.run_tools,
                        schema=args.schema)
        if attached:
            from IPython.display import display

            display(thumbnails_bundle(attached), raw=True)
        if args.compare:
            return self._compare(runner, args, fmt, prompt)
        return self._single(runner, args, fmt, prompt, chat, system)

    def _single(self, runner: Runner, args: CellArgs, fmt: str, prompt: str,
                chat: Chat | None, system: str | None = None) -> LLMResult | None:
        label = runner.columns[0].target
        live = LiveOutput()
        in_place = live.updates_in_place
        printed = 0
        if in_place:
            live.show(live_bundle(label, "", fmt=fmt))

        def on_update(columns: list[Column], final: bool) -> None:
            nonlocal printed
            run = columns[0].current
            text = run.text if run else ""
            if in_place:
                if not final:
                    live.show(live_bundle(label, text, fmt=fmt,
                                          wait=run.wait_line() if run else None))
            elif len(text) > printed:  # a terminal: print the new text as it comes
                print(text[printed:], end="", flush=True)
                printed = len(text)

        runner.run(on_update)
        if printed:
            print()
        run = runner.columns[0].runs[0]
        if run.error is not None:
            show_in: LiveOutput | None = None
            if in_place and run.text:  # keep what arrived; the error line says why it stopped
                live.show({"text/plain": run.text,
                           "text/markdown": run.text + "\n\n<sub>stopped early</sub>"})
            elif in_place:
                show_in = live  # the placeholder gives way to the error (or to nothing)
                if self.fail_cell_on_error:
                    live.show({"text/plain": ""})
            self.fail(CellError(describe(run.error)), show_in)
            return None
        result = LLMResult(label, run, format=fmt, prompt=prompt, chat=args.chat)
        if chat is not None:
            chat.system = system  # the user's own: the format's hint is added per turn
            chat.record(prompt, run.text, label)
            self.chats.keep(chat)
        if fmt == "code" and self.shell is not None:
            code = fenced_code(result.text)
            # Only fenced code: prose in a code cell would fail when run (the result's note
            # says nothing was inserted).
            if code is not None:
                self.shell.set_next_input(code, replace=False)
        if printed and not in_place:
            print("— " + footer_text(result.response))
        else:
            live.show_object(result)
        self._keep(result, args.output)
        return result

    def _compare(self, runner: Runner, args: CellArgs, fmt: str, prompt: str) -> CompareResult:
        live = LiveOutput()
        in_place = live.updates_in_place  # a terminal gets the finished grid only
        if in_place:
            live.show(live_grid_bundle(runner.columns, fmt))

        def on_update(columns: list[Column], final: bool) -> None:
            if in_place and not final:
                live.show(live_grid_bundle(columns, fmt))

        runner.run(on_update)
        result = CompareResult(runner.columns, format=fmt, prompt=prompt)
        live.show_object(result)
        self._keep(result, args.output)
        if not result.responses:
            self.fail(CellError(f"every target failed ({len(result.errors)} errors, shown in "
                                "their columns above)"))
        return result

    def _keep(self, result: Any, name: str | None) -> None:
        if self.shell is None:
            return
        self.shell.user_ns["_llm"] = result
        if name:
            self.shell.user_ns[name] = result




def _check_text(what: str, text: str | None) -> None:
    """Refuse text with a lone surrogate before sending (the core's check, as a cell error)."""
    problem = broken_text(what, text)
    if problem is not None:
        raise CellError(problem)


def _check_strategy(strategy: str | None) -> None:
    if strategy is None:
        return
    try:
        from ..routing import STRATEGIES
    except ImportError:  # a core without named strategies: the dispatcher will judge
        return
    if strategy not in STRATEGIES:
        raise CellError(f"--strategy {strategy}: unknown strategy; use one of "
                        f"{', '.join(STRATEGIES)}")


def load(ipython: Any) -> None:
    ipython.register_magics(LLMMagics)


def unload(ipython: Any) -> None:
    manager = ipython.magics_manager
    for kind in ("line", "cell"):
        manager.magics[kind].pop("llm", None)
    manager.registry.pop("LLMMagics", None)
    configurables = getattr(ipython, "configurables", [])
    configurables[:] = [c for c in configurables if not isinstance(c, LLMMagics)]
