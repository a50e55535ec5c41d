"""The data a call is made of: what the user asks (`Request`), what comes back
(`Response`, stream events) and what is remembered of each attempt (`CallRecord`).

Plain frozen dataclasses: cheap to build, safe to share across the loop thread, and
free of any vendor's shape. Vendor adapters translate to and from these.

Structured output and tools have one shape for every vendor:

- `Request.schema` is an `OutputSchema` (built from a pydantic model, a dataclass, a
  `TypedDict` or a JSON Schema dict by `_schema.output_schema`); the answer comes back
  with `Response.parsed` (the model instance, or the dict), `Response.valid` and
  `Response.validation_errors` (data, never an exception; `valid` is None when no schema
  was asked for).
- `Request.tools` is a tuple of `Tool` (from a Python function's signature and docstring,
  or an explicit schema: `_tools.as_tool`); `Request.tool_choice` is "auto", "none",
  "required" or one tool's name. The model's calls come back as `Response.tool_calls`:
  `ToolCall(id, name, arguments)` with the arguments parsed, whatever the vendor. A
  stream sends `ToolCallDelta` pieces as the arguments arrive and one `ToolCallEvent`
  per call once its arguments are whole.
- A tool round trip is a conversation: an assistant `Message` carrying `tool_calls`,
  then one `Message(role="tool", content=result, tool_call_id=..., name=...)` per call.

Images and files (PDFs) ride on a user turn as `Message.attachments`, each an `Attachment`
(built by `ld.Image(...)` / `ld.File(...)` in `_attachments.py` from a path, bytes, a PIL
image or a URL); a prompt given as `["Describe", ld.Image("chart.png")]` is one user turn.
Each adapter maps them to its vendor's part; the ledger keeps their hash and size only.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from .errors import RequestValidationError

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "content_filter", "tool_calls", "error", "other"]
UsageSource = Literal["reported", "estimated"]
# The unified `reasoning=`: a level, or a thinking budget in tokens (0 = off). Each adapter
# maps it to its vendor's knob (vendors/_rules.py); "minimal" exists on OpenAI and Gemini.
REASONING_LEVELS = ("none", "minimal", "low", "medium", "high")


# -- structured output and tools: one shape for every vendor ----------------------------


@dataclass(frozen=True, slots=True)
class OutputSchema:
    """The shape the answer must have. `json_schema` is plain JSON Schema (each adapter
    translates it to what its vendor accepts, or refuses naming the keyword); `python_type`
    is what `Response.parsed` is built as (a pydantic model, a dataclass, a TypedDict), or
    None for a dict schema (`parsed` is then the dict)."""

    name: str
    json_schema: Mapping[str, Any]
    python_type: Any = field(default=None, compare=False)
    description: str | None = None
    strict: bool = True


@dataclass(frozen=True, slots=True)
class Tool:
    """A function the model may call: its name, what it does, and its arguments as the
    JSON Schema of an object. `function` (when given) is what `Dispatcher.run_tools`
    runs; it is never sent."""

    name: str
    description: str
    parameters: Mapping[str, Any]
    function: Callable[..., Any] | None = field(default=None, compare=False, repr=False)
    strict: bool = False


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One call the model asked for. `arguments` is parsed (a dict); `raw_arguments` is
    the JSON text as the vendor sent it; `error` says why the arguments could not be read
    (not JSON, not an object), in which case `arguments` is empty. `signature` is an opaque
    token the vendor wants back with the call (Gemini's `thoughtSignature`)."""

    id: str
    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    raw_arguments: str = ""
    error: str | None = None
    signature: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Attachment:
    """An image or a file (a PDF) sent with a turn, in one shape for every vendor: the bytes
    and their media type, or a URL the vendor fetches. `sha256` and `size` are what the
    ledger keeps of it (never the bytes). Built by `ld.Image` / `ld.File`."""

    kind: Literal["image", "file"]
    media_type: str
    data: bytes | None = field(default=None, repr=False)
    url: str | None = None
    name: str | None = None  # a file name (OpenAI wants one with a PDF's bytes)
    detail: str | None = None  # OpenAI's image detail: "auto", "low", "high"
    sha256: str = ""
    size: int | None = None  # bytes (None: a URL, unknown until fetched)

    def __post_init__(self) -> None:
        if (self.data is None) == (self.url is None):
            raise RequestValidationError("an attachment has either bytes or a URL")
        if self.data is not None and not self.sha256:
            import hashlib

            object.__setattr__(self, "sha256", hashlib.sha256(self.data).hexdigest())
            object.__setattr__(self, "size", len(self.data))

    def describe(self) -> str:
        """One line for prompts in the ledger and cache keys: kind, type, size, hash."""
        if self.url is not None and self.data is None:
            return f"[{self.kind} {self.media_type} url {self.url[:200]}]"
        return f"[{self.kind} {self.media_type} {self.size} bytes sha256:{self.sha256[:16]}]"


@dataclass(frozen=True, slots=True)
class Message:
    """One turn. An assistant turn may carry the `tool_calls` it made; a "tool" turn is
    one call's result (`content`), naming the call (`tool_call_id`) and its tool (`name`:
    Gemini matches results by name). A user turn may carry `attachments` (images, PDFs),
    placed beside its text where each vendor advises (`_attachments.py`)."""

    role: Role
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None
    attachments: tuple[Attachment, ...] = ()

    def __post_init__(self) -> None:
        if self.role not in ("system", "user", "assistant", "tool"):
            raise RequestValidationError(
                f"message role {self.role!r} is not one of 'system', 'user', 'assistant', 'tool'"
            )
        if not isinstance(self.content, str):
            raise RequestValidationError("message content must be a string")
        if self.role == "tool" and not self.tool_call_id:
            raise RequestValidationError("a tool message needs the tool_call_id it answers")
        if self.tool_calls and self.role != "assistant":
            raise RequestValidationError("only an assistant message carries tool_calls")
        if self.attachments and self.role != "user":
            raise RequestValidationError("only a user message carries images or files")


def _as_messages(value: str | Sequence[Any]) -> tuple[Message, ...]:
    if isinstance(value, str):
        return (Message("user", value),)
    if value and not any(isinstance(m, Message | Mapping) for m in value):
        from ._attachments import user_turn  # ["Describe", ld.Image("chart.png")]: one turn

        return (user_turn(value),)
    out = []
    for m in value:
        if isinstance(m, Message):
            out.append(m)
        elif isinstance(m, Mapping):
            calls = tuple(c if isinstance(c, ToolCall) else ToolCall(
                str(c.get("id", "")), str(c.get("name", "")), dict(c.get("arguments") or {}))
                for c in m.get("tool_calls") or ())
            content = m.get("content") or ""
            attached: tuple[Attachment, ...] = tuple(m.get("attachments") or ())
            if not isinstance(content, str):  # a content list: text, images, files
                from ._attachments import user_turn

                turn = user_turn(content)
                content, attached = turn.content, attached + turn.attachments
            out.append(Message(m.get("role", "user"), content, calls,
                               m.get("tool_call_id"), m.get("name"), attached))
        else:
            raise RequestValidationError(f"cannot read a message from {type(m).__name__}")
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Request:
    """One prompt to send. `messages` may be a plain string (one user turn).

    `target` is `vendor:model`, an alias, a group or a bare model name; None means the
    dispatcher's default. `system` is kept apart from the turns because two of the five
    vendors want it outside the message list. `reasoning` is one of `REASONING_LEVELS` or a
    thinking budget in tokens; `strict_params` makes a parameter the model does not accept
    an error instead of a dropped parameter and a warning (vendors/_rules.py).

    `schema` (a pydantic model, dataclass, TypedDict or JSON Schema dict) asks for an
    answer of that shape; `tools` (functions or explicit schemas) offers tools to call,
    `tool_choice` says whether one must be called ("auto", "none", "required", a name).
    """

    messages: tuple[Message, ...]
    target: str | None = None
    system: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    user: str | None = None
    reasoning: str | int | None = None
    strict_params: bool = False
    tags: tuple[str, ...] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)
    schema: OutputSchema | None = None
    tools: tuple[Tool, ...] = ()
    tool_choice: str | None = None

    def __init__(
        self,
        messages: str | Sequence[Message | Mapping[str, Any]],
        target: str | None = None,
        *,
        system: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        stop: str | Sequence[str] | None = None,
        seed: int | None = None,
        user: str | None = None,
        reasoning: str | int | None = None,
        strict_params: bool = False,
        tags: Sequence[str] = (),
        metadata: Mapping[str, str] | None = None,
        schema: Any = None,
        tools: Sequence[Any] = (),
        tool_choice: str | None = None,
    ) -> None:
        msgs = _as_messages(messages)
        # A leading system turn is lifted out: every adapter then has one place to look.
        if msgs and msgs[0].role == "system":
            system = msgs[0].content if system is None else f"{system}\n\n{msgs[0].content}"
            msgs = msgs[1:]
        if any(m.role == "system" for m in msgs):
            raise RequestValidationError("a system message may only come first; use system=")
        stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
        s = object.__setattr__
        s(self, "messages", msgs)
        s(self, "target", target)
        s(self, "system", system)
        s(self, "max_tokens", max_tokens)
        s(self, "temperature", temperature)
        s(self, "top_p", top_p)
        s(self, "stop", stops)
        s(self, "seed", seed)
        s(self, "user", user)
        s(self, "reasoning", reasoning)
        s(self, "strict_params", bool(strict_params))
        s(self, "tags", tuple(tags))
        s(self, "metadata", dict(metadata or {}))
        if schema is not None and not isinstance(schema, OutputSchema):
            from ._schema import output_schema

            schema = output_schema(schema)
        s(self, "schema", schema)
        if tools:
            from ._tools import as_tool

            tools = tuple(t if isinstance(t, Tool) else as_tool(t) for t in tools)
        s(self, "tools", tuple(tools or ()))
        s(self, "tool_choice", tool_choice)
        self.validate()

    def validate(self) -> None:
        """Refuse what no vendor would accept, before any byte leaves."""
        if not self.messages:
            raise RequestValidationError("the request has no messages; give a prompt")
        if not any(m.content.strip() or m.attachments for m in self.messages if m.role == "user"):
            raise RequestValidationError("the prompt is empty; write something to send")
        names = [t.name for t in self.tools]
        if len(set(names)) < len(names):
            raise RequestValidationError(f"two tools share a name: {sorted(names)}")
        tc = self.tool_choice
        if tc is not None:
            if not self.tools:
                raise RequestValidationError("tool_choice needs tools=[...] to choose from")
            if tc not in ("auto", "none", "required") and tc not in names:
                raise RequestValidationError(
                    f"tool_choice must be 'auto', 'none', 'required' or a tool's name "
                    f"({', '.join(names)}), got {tc!r}")
        if self.max_tokens is not None and (
            not isinstance(self.max_tokens, int) or self.max_tokens < 1
        ):
            raise RequestValidationError(f"max_tokens must be a whole number >= 1, got {self.max_tokens!r}")
        if self.temperature is not None and not (
            isinstance(self.temperature, int | float) and 0 <= self.temperature <= 2
        ):
            raise RequestValidationError(f"temperature must be between 0 and 2, got {self.temperature!r}")
        if self.top_p is not None and not (
            isinstance(self.top_p, int | float) and 0 < self.top_p <= 1
        ):
            raise RequestValidationError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if len(self.stop) > 4:
            raise RequestValidationError("at most 4 stop sequences are accepted by every vendor")
        if any(not s for s in self.stop):
            raise RequestValidationError("stop sequences must be non-empty strings")
        r = self.reasoning
        if r is not None and not (r in REASONING_LEVELS or (
                isinstance(r, int) and not isinstance(r, bool) and r >= 0)):
            raise RequestValidationError(
                f"reasoning must be one of {', '.join(map(repr, REASONING_LEVELS))} or a thinking "
                f"budget in tokens (a whole number >= 0), got {r!r}")

    def with_target(self, target: str | None) -> Request:
        return replace(self, target=target)

    @property
    def prompt_text(self) -> str:
        """All text that will be sent, for estimates and cache keys (an attachment as one
        line naming its type, size and hash: never its bytes)."""
        parts = [self.system] if self.system else []
        for m in self.messages:
            parts.append(m.content)
            parts.extend(a.describe() for a in m.attachments)
        return "\n".join(parts)

    @property
    def attachments(self) -> tuple[Attachment, ...]:
        return tuple(a for m in self.messages for a in m.attachments)


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts, normalised.

    `input_tokens` is the whole prompt, cached parts included (OpenAI and Gemini count it
    that way; the Anthropic adapter adds its cache fields in so all vendors agree).
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    source: UsageSource = "reported"

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


def estimate_tokens(text: str) -> int:
    """A vendor-neutral estimate (about 4 characters a token), flagged as such where used.

    Exact counts need each vendor's tokenizer, two of which are not public; the reported
    usage is what bills, so this only sizes budgets, routing and missing usage.
    """
    return max(1, math.ceil(len(text) / 4)) if text else 0


@dataclass(frozen=True, slots=True)
class Cost:
    """A price in US dollars, or None when nobody knows it (never a silent $0)."""

    usd: float | None
    source: str  # "genai-prices", "models.dev", "override", "free", "cache", "unknown"

    @property
    def known(self) -> bool:
        return self.usd is not None


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try at one candidate: what the response's trail is made of."""

    vendor: str
    model: str
    status: str  # "ok", "error", "skipped"
    error: str | None = None
    latency_s: float | None = None


@dataclass(frozen=True, slots=True)
class Response:
    text: str
    finish_reason: FinishReason
    raw_finish_reason: str | None
    usage: Usage
    vendor: str
    model: str  # as served, e.g. gpt-4o-2024-08-06
    model_requested: str
    latency_s: float
    ttft_s: float | None
    request_id: str | None = None
    cost: Cost = Cost(None, "unknown")
    call_id: str = ""
    cached: bool = False
    simulated: bool = False
    attempts: tuple[Attempt, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)
    # The calls the model asked for (empty when it answered in text).
    tool_calls: tuple[ToolCall, ...] = ()
    # With a schema: the answer read as it (None when it does not fit), whether it fit,
    # and why not ("age: Input should be a valid integer"). `valid` is None without one.
    parsed: Any = None
    valid: bool | None = None
    validation_errors: tuple[str, ...] = ()

    @property
    def message(self) -> Message:
        """This answer as the assistant turn of a conversation (its tool calls included)."""
        return Message("assistant", self.text, self.tool_calls)

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        cost = "?" if self.cost.usd is None else f"${self.cost.usd:.6f}"
        return (
            f"Response(vendor={self.vendor!r}, model={self.model!r}, finish={self.finish_reason!r}, "
            f"tokens={self.usage.input_tokens}+{self.usage.output_tokens}, cost={cost}, "
            f"latency={self.latency_s:.3f}s, text={self.text[:60]!r}"
            + (f", tool_calls=[{', '.join(c.name for c in self.tool_calls)}]"
               if self.tool_calls else "")
            + (f", valid={self.valid}" if self.valid is not None else "") + ")"
        )


# -- stream events: what `Dispatcher.stream` yields -----------------------------------


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str
    kind: Literal["text"] = "text"


@dataclass(frozen=True, slots=True)
class UsageUpdate:
    usage: Usage
    kind: Literal["usage"] = "usage"


@dataclass(frozen=True, slots=True)
class Finish:
    reason: FinishReason
    raw: str | None
    kind: Literal["finish"] = "finish"


@dataclass(frozen=True, slots=True)
class StreamStart:
    """The vendor accepted the stream; what it says it serves."""

    model: str | None
    request_id: str | None
    kind: Literal["start"] = "start"


@dataclass(frozen=True, slots=True)
class Waiting:
    """The call is waiting before it can go on, for `seconds` more (None: no end known,
    such as a free concurrency slot), and says why. Sent (and logged) only for waits of
    about 2 s or more: a Retry-After or backoff before a retry ("retry"), a circuit to
    half-open ("breaker"), a client-side rate or concurrency limit ("limit"). When the
    wait is over and the call goes on, a last `Waiting` with `seconds=0` says so."""

    cause: Literal["retry", "breaker", "limit"]
    target: str  # the candidate waited for, vendor:model
    reason: str  # in words, for a status line
    seconds: float | None
    kind: Literal["waiting"] = "waiting"

    @property
    def over(self) -> bool:
        return self.seconds == 0

    def describe(self) -> str:
        if self.over:
            return f"{self.target}: done waiting ({self.reason})"
        how_long = "until it frees" if self.seconds is None else f"{self.seconds:.0f} s"
        return f"waiting {how_long} for {self.target}: {self.reason}"


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of tool call number `index` as it arrives: its id and name (on the first
    piece, None after) and the next piece of its arguments' JSON text. Gemini sends each
    call whole, as one piece."""

    index: int
    id: str | None
    name: str | None
    arguments: str
    kind: Literal["tool_call_delta"] = "tool_call_delta"


@dataclass(frozen=True, slots=True)
class ToolCallEvent:
    """Tool call number `index`, whole: its arguments assembled and parsed."""

    index: int
    call: ToolCall
    kind: Literal["tool_call"] = "tool_call"


StreamEvent = TextDelta | UsageUpdate | Finish | StreamStart | Waiting | ToolCallDelta | ToolCallEvent


@dataclass(frozen=True, slots=True)
class ParsedReply:
    """What an adapter reads out of one whole (non-streamed) vendor response."""

    text: str
    finish_reason: FinishReason
    raw_finish_reason: str | None
    usage: Usage | None
    model: str | None
    request_id: str | None
    extra: Mapping[str, Any] = field(default_factory=dict)
    tool_calls: tuple[ToolCall, ...] = ()


def new_call_id() -> str:
    return uuid.uuid4().hex


def now() -> float:
    """Wall-clock seconds, for records; durations use time.perf_counter()."""
    return time.time()


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One attempt, failed or not, as the ledger keeps it.

    Never holds a key or an auth header: it is built from our types, never from the
    `httpx.Request` that carried the credentials.
    """

    call_id: str
    attempt: int  # 1-based within the call, across candidates
    timestamp: float  # wall clock at send
    vendor: str
    model_requested: str
    model_served: str | None
    status: str  # "ok", "error", "cached", "refused"
    error_class: str | None = None
    error_message: str | None = None
    http_status: int | None = None
    request_id: str | None = None
    session: str | None = None
    route_reason: str | None = None
    retried: bool = False  # this attempt is a retry of the same candidate
    fell_back: bool = False  # this attempt is on a later candidate
    streamed: bool = False
    latency_s: float | None = None
    ttft_s: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None
    usage_source: UsageSource | None = None
    cost_usd: float | None = None
    price_source: str | None = None
    cache_hit: bool = False
    simulated: bool = False
    finish_reason: str | None = None
    tags: tuple[str, ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict)
    prompt: str | None = None
    response: str | None = None
    # `ledger.key_for(vendor, model, request)`: lets a replay pack serve this answer again.
    cache_key: str | None = None
    # A streamed answer's pieces as (seconds since send, text), so a replay keeps its pace.
    chunks: tuple[tuple[float, str], ...] = ()
    # A cache or replay hit: the recorded call's latency (`latency_s` is the hit's own).
    original_latency_s: float | None = None
    # What the ledger changed to store this record, e.g. "prompt: lone surrogates replaced
    # with U+FFFD; input_tokens: 2**70 does not fit 64 bits, stored as NULL" (None: nothing).
    repaired: str | None = None
    # Asked for a schema: whether the answer fit it (None: no schema was asked for).
    schema_valid: bool | None = None

    @property
    def output_tokens_per_s(self) -> float | None:
        if not self.output_tokens or not self.latency_s:
            return None
        gen = self.latency_s - (self.ttft_s or 0.0)
        return self.output_tokens / gen if gen > 0 else None
