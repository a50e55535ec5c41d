"""What the OpenAI-shaped emulators share besides behaviour: the accepted fields, OpenAI's
own error texts, Go-style durations, key masking, and one validated chat request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.responses import Response

from ._answers import Question
from ._core import Profile

OPENAI_VERSION = "2020-10-01"
LIMIT_REQUESTS = 10_000
LIMIT_TOKENS = 2_000_000

# Every top-level field Chat Completions accepts; anything else is a 400, as on the real API.
CHAT_PARAMS = frozenset({
    "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "n",
    "stop", "presence_penalty", "frequency_penalty", "seed", "response_format", "tools",
    "tool_choice", "parallel_tool_calls", "logprobs", "top_logprobs", "logit_bias", "user",
    "safety_identifier", "prompt_cache_key", "reasoning_effort", "verbosity", "stream",
    "stream_options", "metadata", "store", "modalities", "audio", "prediction", "service_tier",
    "functions", "function_call", "web_search_options",
})
ROLES = ("system", "developer", "user", "assistant", "tool", "function")

SERVER_ERROR = "The server had an error while processing your request. Sorry about that!"
PARSE_ERROR = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
    "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
    "sent was not valid JSON.)"
)
NO_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization "
    "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY). You can obtain an API key "
    "from https://platform.openai.com/account/api-keys."
)
QUOTA = (
    "You exceeded your current quota, please check your plan and billing details. For more "
    "information on this error, read the docs: "
    "https://platform.openai.com/docs/guides/error-codes/api-errors."
)
DEFAULT_WAIT = {"429": 1.0, "429-ms": 1.5, "429-long": 3600.0, "429-no-retry": 1.0}


def go_duration(seconds: float) -> str:
    """Go's `time.Duration.String()`, which OpenAI uses for resets: `20ms`, `1.574s`, `6m0s`."""
    ns = round(seconds * 1e9)
    if ns <= 0:
        return "0s"
    if ns < 1_000_000:
        return f"{_trim(ns / 1e3)}µs" if ns >= 1_000 else f"{ns}ns"
    if ns < 1_000_000_000:
        return f"{_trim(ns / 1e6)}ms"
    hours, rest = divmod(ns, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    out = f"{hours}h" if hours else ""
    if hours or minutes:
        out += f"{minutes}m"
    return out + f"{_trim(rest / 1e9)}s"


def _trim(x: float) -> str:
    return f"{x:.9f}".rstrip("0").rstrip(".")


def seconds_header(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def mask_key(key: str) -> str:
    """How OpenAI echoes a wrong key: never whole, only its last four characters."""
    if len(key) < 12:
        return "****"
    return ("sk-" if key.startswith("sk-") else "") + "..." + key[-4:]


def text_of(content: Any) -> str:
    """A message's text: a string, or the text parts of a content array."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content
                         if isinstance(p, dict) and p.get("type") in ("text", "input_text"))
    return ""


@dataclass(frozen=True)
class Target:
    """What serves one chat request."""

    name: str  # as the caller named it: model, dated model or (Azure) deployment
    key: str  # the profile's key, handed to generate()
    table: str  # the PROFILES table it lives in
    profile: Profile

    @property
    def reasoning(self) -> bool:
        # The catalogue's word (o-series, gpt-5.x), as the adapters read it.
        return self.table in ("openai", "azure") and self.profile.info.reasoning


@dataclass
class Chat:
    """One validated chat request, and the identity of its reply."""

    target: Target
    prompt: str
    prompt_tokens: int
    max_tokens: int | None
    stop: tuple[str, ...]
    seed: int | None
    stream: bool
    include_usage: bool
    obfuscate: bool
    id: str = ""
    question: Question | None = None  # what the simulated answer responds to
    created: int = 0
    effort: str | None = None  # reasoning_effort, as asked
    # Structured output and tools (sim/_openai_tools.py): the json_schema asked for, the
    # tools offered, the choice, and the tool results the conversation ends with.
    schema: Any = None
    tools: tuple[Any, ...] = ()
    tool_choice: str | None = None
    parallel: bool = True
    tool_results: tuple[tuple[str, str], ...] = ()


class Invalid(Exception):
    """The API refuses the request; carries the ready error response."""

    def __init__(self, response: Response) -> None:
        super().__init__("invalid request")
        self.response = response
