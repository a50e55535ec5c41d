"""What `Dispatcher.send/stream/asend/astream/request` accept, checked at the door.

Python types are loose where a caller's data is messy: `None` from a failed lookup, a
number where text belongs, `True` where a count belongs (a bool *is* an int to Python, so
`max_tokens=True` would go out as 1). Each such argument becomes one
`RequestValidationError` naming the argument and what to pass instead, before anything
is planned, reserved or sent; never a `TypeError` from deep inside a call.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ._call import CallOptions, split_options
from ._types import Attachment, Message, Request
from .errors import RequestValidationError

_MESSAGES_HELP = ("pass the text to send as a string, or a list of messages such as "
                  "[{'role': 'user', 'content': 'Hello'}]")


@functools.cache
def _request_parameters() -> tuple[str, ...]:
    # Read from Request itself, so a parameter added there is accepted here at once
    # (once per process: inspect.signature costs more than all the checks together).
    sig = inspect.signature(Request.__init__)
    return tuple(n for n, p in sig.parameters.items()
                 if p.kind is inspect.Parameter.KEYWORD_ONLY)


_SURROGATE = re.compile("[\ud800-\udfff]")


def broken_text(what: str, text: Any) -> str | None:
    """What is wrong with `text` if it holds a lone surrogate (half an emoji from a bad
    decode), else None. No vendor reads one: a JSON body carrying it is refused (or, on a
    server that crashes on it, answered with a 5xx that is retried and counts against the
    vendor's circuit), so it is refused here, before anything is sent."""
    if not isinstance(text, str):
        return None
    m = _SURROGATE.search(text)
    if m is None:
        return None
    return (f"{what} has a broken character (a lone surrogate, U+{ord(m.group()):04X}, at "
            f"character {m.start()}), usually half an emoji from a bad decode; repair the text, "
            "e.g. text.encode('utf-16', 'surrogatepass').decode('utf-16', 'replace')")


def _check_texts(prompt: Any, params: Mapping[str, Any]) -> None:
    texts: list[tuple[str, Any]] = [("system", params.get("system"))]
    stop = params.get("stop")
    texts += [("a stop sequence", s) for s in ([stop] if isinstance(stop, str) else stop or ())]
    if isinstance(prompt, str):
        texts.append(("the prompt", prompt))
    elif isinstance(prompt, Sequence):
        # A list of messages, or one user turn of parts (["Describe", ld.Image(...)]).
        turn = not any(isinstance(m, Message | Mapping) for m in prompt)
        for i, m in enumerate(prompt):
            content = m.content if isinstance(m, Message) else (
                m.get("content") if isinstance(m, Mapping) else m)
            parts = content if isinstance(content, list) else [content]
            what = f"part {i} of the prompt" if turn else f"message {i} of the prompt"
            texts += [(what, part) for part in parts]
    for what, text in texts:
        problem = broken_text(what, text)
        if problem is not None:
            raise RequestValidationError(problem)


def _type(value: Any) -> str:
    return "None" if value is None else type(value).__name__


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_prompt(prompt: Any) -> None:
    if isinstance(prompt, str | Request):
        return
    if prompt is None:
        raise RequestValidationError(f"the prompt is None; {_MESSAGES_HELP}")
    if isinstance(prompt, bytes | bytearray):
        raise RequestValidationError(f"the prompt is bytes; decode it first "
                                     f"(prompt.decode('utf-8')), or {_MESSAGES_HELP}")
    if isinstance(prompt, Mapping):
        raise RequestValidationError(f"the prompt is one message as a dict; put it in a list "
                                     f"([message]), or {_MESSAGES_HELP}")
    if not isinstance(prompt, Sequence):
        raise RequestValidationError(f"the prompt is a {_type(prompt)}; {_MESSAGES_HELP}")
    if any(isinstance(m, str | Attachment) for m in prompt) and \
            not any(isinstance(m, Message | Mapping) for m in prompt):
        # One user turn of parts: ["Describe", ld.Image(...)] (read in _attachments.py).
        for i, m in enumerate(prompt):
            if not isinstance(m, str | Attachment) and \
                    not type(m).__module__.startswith("PIL."):
                raise RequestValidationError(f"part {i} of the prompt is a {_type(m)}; give "
                                             f"text, ld.Image(...) or ld.File(...)")
        return
    for i, m in enumerate(prompt):
        if isinstance(m, Message):
            continue
        if not isinstance(m, Mapping):
            raise RequestValidationError(f"message {i} of the prompt is a {_type(m)}; "
                                         f"{_MESSAGES_HELP}")
        content = m.get("content")
        if not isinstance(content, str) and not (isinstance(content, list) and content):
            raise RequestValidationError(f"message {i} of the prompt has content of type "
                                         f"{_type(content)}; give its text as a string")


def check_target(target: Any) -> None:
    if target is not None and not isinstance(target, str):
        raise RequestValidationError(f"target must be a string such as 'openai:gpt-4o-mini' or "
                                     f"an alias such as 'gpt', got a {_type(target)}")


def check_params(params: Mapping[str, Any]) -> None:
    known = _request_parameters()
    for name, value in params.items():
        if name not in known:
            near = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {near[0]}?)" if near else ""
            # (Its value is not shown: it may be a key passed by mistake.)
            raise RequestValidationError(f"unknown parameter {name!r}{hint}; "
                                         f"known: {', '.join(sorted(known))}")
        if value is None:
            continue
        if name in ("system", "user") and not isinstance(value, str):
            raise RequestValidationError(f"{name} must be a string (or None), got a {_type(value)}")
        if name in ("max_tokens", "seed") and not (isinstance(value, int) and not isinstance(value, bool)):
            raise RequestValidationError(f"{name} must be a whole number, got {_short(value)} "
                                         f"({_type(value)})")
        if name in ("temperature", "top_p") and not _is_number(value):
            raise RequestValidationError(f"{name} must be a number, got {_short(value)} "
                                         f"({_type(value)})")
        if name == "strict_params" and not isinstance(value, bool):
            raise RequestValidationError(f"strict_params must be True or False, got {_short(value)}")
        if name == "reasoning" and (isinstance(value, bool) or not isinstance(value, str | int)):
            raise RequestValidationError(f"reasoning must be 'none', 'low', 'medium', 'high' or a "
                                         f"thinking budget in tokens, got {_short(value)}")
        if name == "stop" and not isinstance(value, str) and not (
                isinstance(value, Sequence) and all(isinstance(s, str) for s in value)):
            raise RequestValidationError("stop must be a string or a list of strings, "
                                         f"got {_short(value)}")
        if name == "tags" and (isinstance(value, str) or not isinstance(value, Sequence)
                               or not all(isinstance(t, str) for t in value)):
            raise RequestValidationError(f"tags must be a list of strings, e.g. tags=['demo'], "
                                         f"got {_short(value)}")
        if name == "metadata" and not (isinstance(value, Mapping) and all(
                isinstance(k, str) and isinstance(v, str) for k, v in value.items())):
            raise RequestValidationError("metadata must be a dict of strings to strings, "
                                         f"got {_short(value)}")


def check_options(options: Mapping[str, Any]) -> None:
    """The routing options (`strategy`, `fallbacks`, `max_cost`, `cache`), as given."""
    mc = options.get("max_cost")
    if mc is not None and not (_is_number(mc) and math.isfinite(mc) and mc >= 0):
        raise RequestValidationError(f"max_cost must be a number of dollars >= 0 (or None for "
                                     f"no limit), got {_short(mc)}")
    cache = options.get("cache")
    if cache is not None and not isinstance(cache, bool):
        raise RequestValidationError(f"cache must be True, False or None, got {_short(cache)}")
    fb = options.get("fallbacks")
    if fb is not None and not isinstance(fb, str) and not (
            isinstance(fb, Sequence) and all(isinstance(t, str) for t in fb)):
        raise RequestValidationError("fallbacks must be a target or a list of targets "
                                     "(strings such as 'claude')")
    strategy = options.get("strategy")
    if strategy is not None and not (isinstance(strategy, str) or callable(strategy)):
        raise RequestValidationError(f"strategy must be a name such as 'cheapest' or a "
                                     f"function, got a {_type(strategy)}")


def checked_options(params: dict[str, Any]) -> CallOptions:
    """The routing options taken out of a call's `params`, once they are checked."""
    check_options(params)
    return split_options(params)


def check_call(prompt: Any, target: Any, params: Mapping[str, Any]) -> None:
    """Everything a call was given, before a `Request` is built from it."""
    check_prompt(prompt)
    check_target(target)
    if isinstance(prompt, Request):
        # A Request built by hand went through its own checks, which let a bool pass as
        # a count and a number as a system prompt: its fields get the same checks here.
        fields = {name: getattr(prompt, name) for name in _request_parameters()
                  if hasattr(prompt, name)}
        check_params(fields)
        check_target(prompt.target)
        _check_texts(list(prompt.messages), fields)
    else:
        check_params(params)
        _check_texts(prompt, params)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
