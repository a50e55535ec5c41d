"""One Chat Completions request body read and checked as OpenAI checks it, into a `Chat`.

The messages (roles, images and PDFs as OpenAI takes or refuses them), `stream_options`
only with `stream`, positive token caps, `reasoning_effort` and the reasoning models'
parameter rules (`_rules.openai_refusal`), at most four stop sequences, the context
window, and a structured-output or tools request (`_openai_tools.read_structured`); each
refusal is OpenAI's 400 text with its `param` and `code`. Local servers (`local=True`)
check less, as Ollama and llama.cpp do. The emulator (and Azure's, through its
`read_chat` hook) resolves the model first and passes the target, the refusal maker and
its context-window error in, so this module never imports the emulator.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.responses import Response

from ._answers import Question, response_format_shape
from ._attachments import Refusal, openai_media_tokens, openai_seen
from ._core import count_tokens
from ._openai_tools import Refuse, read_structured
from ._openai_wire import ROLES, Chat, Invalid, Target, text_of
from ._rules import Refused, openai_refusal


def chat_of(body: dict[str, Any], target: Target, refuse: Refuse, *, local: bool,
            include_usage_supported: bool,
            context_error: Callable[[int], Response]) -> Chat:
    """The checked `Chat` of `body` for `target`; raises `Invalid` with OpenAI's refusal."""
    messages = body.get("messages")
    if messages is None:
        raise refuse("Missing required parameter: 'messages'.", "messages",
                     "missing_required_parameter")
    if not isinstance(messages, list):
        raise refuse("Invalid type for 'messages': expected an array.", "messages",
                     "invalid_type")
    if not messages:
        raise refuse("Invalid 'messages': empty array. Expected an array with minimum length "
                     "1, but got an empty array instead.", "messages", "empty_array")
    texts = []
    for i, m in enumerate(messages):
        role = m.get("role") if isinstance(m, dict) else None
        if role not in ROLES:
            raise refuse(f"Invalid value: {role!r}. Supported values are: 'system', "
                         f"'assistant', 'user', 'function', 'tool', and 'developer'.",
                         f"messages[{i}].role", "invalid_value")
        try:  # an image or a PDF: refused as OpenAI refuses it, or a line the answer quotes
            seen = openai_seen(m.get("content"), i, target.profile.info)
        except Refusal as exc:
            raise refuse(str(exc), exc.param, exc.code) from None
        texts.append(f"{seen} {text_of(m.get('content'))}" if seen else text_of(m.get("content")))
    stream = body.get("stream") is True
    options = body.get("stream_options")
    if options is not None and not stream:
        raise refuse("The 'stream_options' parameter is only allowed when 'stream' is "
                     "enabled.", "stream_options")
    for field in ("max_completion_tokens", "max_tokens"):
        v = body.get(field)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise refuse(f"Invalid '{field}': integer below minimum value. Expected a value "
                         f">= 1, but got {v!r} instead.", field, "integer_below_min_value")
    effort = body.get("reasoning_effort")
    if target.reasoning and not local:
        try:
            openai_refusal(body, target.profile.info, target.name)
        except Refused as exc:
            raise refuse(str(exc), exc.param, exc.code) from None
    elif effort is not None and target.table in ("openai", "azure") and not local:
        raise refuse("Unsupported parameter: 'reasoning_effort' is not supported with this "
                     "model.", "reasoning_effort", "unsupported_parameter")
    stop = body.get("stop")
    stops = (stop,) if isinstance(stop, str) else tuple(s for s in stop if isinstance(s, str)) \
        if isinstance(stop, list) else ()
    if len(stops) > 4:
        raise refuse(f"Invalid 'stop': array too long. Expected an array with maximum length "
                     f"4, but got an array with length {len(stops)} instead.", "stop",
                     "array_above_max_length")
    prompt = "\n".join(texts)
    tokens = count_tokens(prompt)
    if tokens > target.profile.context_window:
        raise Invalid(context_error(tokens))
    # Images and PDFs bill by pixels and pages (OpenAI's rules), beside their line; not
    # held against the window (gpt-4o-mini's multiplied image tokens are billing only).
    tokens += openai_media_tokens(messages, target.profile.info.model)
    opts = options if isinstance(options, dict) else {}
    structured = read_structured(body, messages, target.profile.info, target.name, refuse,
                                 local=local)
    seed = body.get("seed")
    max_tokens = body.get("max_completion_tokens")
    return Chat(
        target=target, prompt=prompt, prompt_tokens=tokens,
        # The latest user turn, not the history; a JSON response format asks for JSON.
        question=Question.from_turns(
            zip((m.get("role") for m in messages), texts, strict=True),
            shape=response_format_shape(body.get("response_format"))),
        max_tokens=max_tokens if max_tokens is not None else body.get("max_tokens"),
        stop=stops, seed=seed if isinstance(seed, int) else None, stream=stream,
        include_usage=stream and opts.get("include_usage") is True
        and include_usage_supported,
        obfuscate=stream and not local and opts.get("include_obfuscation") is not False,
        effort=effort if isinstance(effort, str) else None,
        **structured,
    )
