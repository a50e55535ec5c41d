"""What the magic shows when something goes wrong: one line, what failed and what to do.

`CellError` is raised out of the magic. IPython asks an exception for
`_render_traceback_()` before formatting a traceback, so the cell fails (Run All stops
there, as after any error) and the frontend shows our single line instead of frames.
"""

from __future__ import annotations

from ..errors import (
    AllCandidatesFailedError,
    AuthenticationError,
    BudgetExceededError,
    CircuitOpenError,
    ConfigurationError,
    ContextLengthError,
    LLMDispatchError,
    MidStreamError,
    QuotaExhaustedError,
    RateLimitError,
    TransportError,
    VendorTimeoutError,
)

_RED = "\x1b[1;31m"
_RESET = "\x1b[0m"


class CellError(Exception):
    """A failed `%%llm` / `%llm`, shown as one line without a traceback."""

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))

    @property
    def line(self) -> str:
        return str(self)

    def _render_traceback_(self) -> list[str]:
        return [f"{_RED}llm error:{_RESET} {self}"]


class UsageError(CellError):
    """The user typed something the magic cannot read (an option, a subcommand)."""


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def _hint(exc: BaseException) -> str:
    # Ordered from the most specific class to the least.
    if isinstance(exc, AllCandidatesFailedError):
        last = exc.last
        return _hint(last) if last is not None else "check %llm vendors"
    if isinstance(exc, AuthenticationError):
        return "check that vendor's key (%llm vendors shows which keys are set)"
    if isinstance(exc, QuotaExhaustedError):
        return "the account is out of quota: add credit, or send to another target"
    if isinstance(exc, RateLimitError):
        return "wait a moment and run again, or add --fallback TARGET"
    if isinstance(exc, ContextLengthError):
        return "shorten the prompt, or trim the chat (%llm reset NAME)"
    if isinstance(exc, MidStreamError):
        return "the partial answer is kept above; run the cell again"
    if isinstance(exc, VendorTimeoutError):
        return "run again, or try another target"
    if isinstance(exc, TransportError):
        return "check the vendor's address and your network, then run again"
    if isinstance(exc, BudgetExceededError):
        return "raise the limit with %llm budget AMOUNT or --max-cost, lower -m, or pick a cheaper model"
    if isinstance(exc, CircuitOpenError):
        return "that vendor failed repeatedly and is paused; try another target"
    if isinstance(exc, ConfigurationError):
        return ""  # configuration messages already say what to set
    return "see %llm calls for the attempts"


def describe(exc: BaseException) -> str:
    """One line for an error from the core: its message, then what to do about it."""
    if isinstance(exc, LLMDispatchError):
        msg = one_line(exc.message)
    else:
        msg = one_line(f"{type(exc).__name__}: {exc}")
    hint = _hint(exc)
    own = getattr(exc, "advice", "")
    if hint and own:  # the magic's advice (naming its own commands) replaces the core's
        msg = one_line(msg.removesuffix(one_line(own)))
    if hint and hint not in msg:
        msg = f"{msg.rstrip('. ')} — {hint}"
    return msg


def from_dispatch(exc: BaseException) -> CellError:
    return CellError(describe(exc))
