"""`Dispatcher.run_tools`: the model calls your functions, and gets their results back,
for a bounded number of rounds.

    run = d.run_tools("What's the weather in Paris and Rome?", "gpt", tools=[get_weather])
    run.text, run.calls, run.rounds, run.cost_usd

Each round is one ordinary call (its own call id, attempts, retries and cost in the
ledger, tagged `tool-round-<n>`). The calls of one round run at once (a vendor may ask for
several in parallel); a sync function runs in a worker thread so the dispatcher's loop
stays free. A function that raises, or arguments that do not fit its signature, go back to
the model as an error result it can act on. After `max_rounds` rounds of calls the last
request says `tool_choice="none"`, so the model answers in text and the run ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._tools import as_tool, run_call
from ._types import Message, Request, Response, Tool, ToolCall, _as_messages
from .errors import RequestValidationError

if TYPE_CHECKING:
    from ._dispatcher import Dispatcher


@dataclass(frozen=True)
class ToolResult:
    """One call the model made, and what your function gave back."""

    call: ToolCall
    result: str
    failed: bool
    round: int


@dataclass(frozen=True)
class ToolRun:
    """What `run_tools` did: every round's answer, every call and its result, the
    conversation as it ended (send `messages` again to go on)."""

    rounds: tuple[Response, ...]
    results: tuple[ToolResult, ...]
    messages: tuple[Message, ...]
    stopped: str  # "answered": the model answered in text; "max_rounds": the bound was hit

    @property
    def response(self) -> Response:
        return self.rounds[-1]

    @property
    def text(self) -> str:
        return self.response.text

    @property
    def calls(self) -> tuple[ToolCall, ...]:
        return tuple(r.call for r in self.results)

    @property
    def cost_usd(self) -> float | None:
        """All rounds together; None when any round's price is unknown."""
        costs = [r.cost.usd for r in self.rounds]
        return None if any(c is None for c in costs) else sum(c for c in costs if c is not None)

    def __repr__(self) -> str:
        names = ", ".join(c.name for c in self.calls) or "none"
        return (f"ToolRun(rounds={len(self.rounds)}, calls=[{names}], stopped={self.stopped!r}, "
                f"text={self.text[:60]!r})")


async def arun_tools(d: Dispatcher, prompt: Any, target: str | None, tools: Sequence[Any],
                     max_rounds: int, params: Mapping[str, Any]) -> ToolRun:
    if isinstance(max_rounds, bool) or not isinstance(max_rounds, int) or max_rounds < 1:
        raise RequestValidationError(f"max_rounds must be a whole number >= 1, got {max_rounds!r}")
    if isinstance(prompt, Request):
        raise RequestValidationError("run_tools takes a prompt or a list of messages, not a "
                                     "Request (its tools are given as tools=)")
    kit = [as_tool(t) for t in tools]
    if not kit:
        raise RequestValidationError("run_tools needs tools=[...]: functions to call")
    by_name: dict[str, Tool] = {t.name: t for t in kit}
    messages = list(_as_messages(prompt))
    params = dict(params)
    first_choice = params.pop("tool_choice", None)
    tags = list(params.pop("tags", ()) or ())
    rounds: list[Response] = []
    results: list[ToolResult] = []
    for n in range(1, max_rounds + 2):
        # A forced choice holds for the first round only (it would loop otherwise); the
        # round after the last allowed one may not call tools at all.
        choice = "none" if n > max_rounds else first_choice if n == 1 else \
            "auto" if first_choice not in (None, "none") else first_choice
        resp = await d.asend(messages, target, tools=kit, tool_choice=choice,
                             tags=[*tags, f"tool-round-{n}"], **params)
        rounds.append(resp)
        messages.append(resp.message)
        if not resp.tool_calls:
            return ToolRun(tuple(rounds), tuple(results), tuple(messages), "answered")
        outcomes = await asyncio.gather(*(_run(by_name.get(c.name), c) for c in resp.tool_calls))
        for call, (text, failed) in zip(resp.tool_calls, outcomes, strict=True):
            results.append(ToolResult(call, text, failed, n))
            messages.append(Message("tool", text, tool_call_id=call.id or call.name,
                                    name=call.name))
    return ToolRun(tuple(rounds), tuple(results), tuple(messages), "max_rounds")


async def _run(tool: Tool | None, call: ToolCall) -> tuple[str, bool]:
    return await run_call(tool, call)
