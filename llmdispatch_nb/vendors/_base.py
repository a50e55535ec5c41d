"""What every vendor adapter is: a pure translator between our types and one vendor's wire.

An adapter builds an `httpx.Request` from a `Request`, reads a whole `httpx.Response`
into a `ParsedReply`, reads SSE events into stream events, and maps an error response to
our exception. It opens no sockets, sleeps on no clocks and retries nothing: the
dispatcher does all of that, the same way for every vendor.
"""

from __future__ import annotations

import difflib
import email.utils
import json
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import httpx

from .._sse import SSEEvent
from .._types import FinishReason, ParsedReply, Request, StreamEvent
from ..errors import (
    AuthenticationError,
    BadRequestError,
    OverloadedError,
    ProtocolError,
    RateLimitError,
    ServerError,
    VendorError,
    register_secret,
    wire_text,
)


class Secret:
    """A credential. Its value is only reachable through `reveal()`; every repr masks it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        register_secret(value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __reduce__(self) -> Any:
        raise TypeError("a Secret cannot be pickled; it would write the key out")


@dataclass(frozen=True)
class Endpoint:
    """One configured vendor: where it is, how to authenticate, what it serves.

    `name` is what users type before the colon (`openai`, `azure`, `ollama`); `kind` picks
    the adapter. Several endpoints may share a kind (two Ollama hosts, say).
    """

    name: str
    kind: str
    base_url: str
    key: Secret | None = field(default=None, repr=False)
    auth: str = "default"  # azure: "api-key" | "bearer"; anthropic: "x-api-key" | "bearer"
    api_version: str | None = None
    route: str = "default"  # azure: "deployments" | "v1"
    deployments: Mapping[str, str] = field(default_factory=dict)  # azure: deployment -> model
    models: tuple[str, ...] = ()
    default_model: str | None = None
    simulated: bool = False
    priced: bool = True  # local servers are free unless the user prices them
    headers: Mapping[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        key = "set" if self.key else "none"
        sim = ", simulated" if self.simulated else ""
        return f"Endpoint({self.name!r}, kind={self.kind!r}, base_url={self.base_url!r}, key={key}{sim})"

    def url(self, path: str) -> str:
        return self.base_url.rstrip("/") + "/" + path.lstrip("/")


class StreamParser(ABC):
    """Turns one vendor's SSE events into our stream events; one per streamed call."""

    def __init__(self, vendor: str) -> None:
        self.vendor = vendor
        self.done = False  # saw the vendor's own end-of-stream marker
        # What a whole reply would carry in `ParsedReply.extra` (content-filter results,
        # reasoning text): parsers fill it as the stream goes.
        self.extra: dict[str, Any] = {}

    @abstractmethod
    def feed(self, event: SSEEvent) -> list[StreamEvent]:
        """Read one event. Raises a VendorError for an error the vendor sent mid-stream."""

    def close(self) -> list[StreamEvent]:
        """The connection ended. A stream that never said it was finished was cut short."""
        if not self.done:
            raise ProtocolError("the stream ended before the vendor finished it", vendor=self.vendor)
        return []


class Adapter(ABC):
    kind: ClassVar[str]
    # Environment variables that hold this vendor's key, first one preferred.
    key_variables: ClassVar[tuple[str, ...]] = ()
    # genai-prices provider id used for pricing.
    price_provider: ClassVar[str | None] = None
    # Response headers that carry the vendor's request id, most specific first.
    request_id_headers: ClassVar[tuple[str, ...]] = ("x-request-id", "request-id")

    @abstractmethod
    def build_request(self, request: Request, model: str, endpoint: Endpoint, *, stream: bool) -> httpx.Request:
        ...

    def output_cap(self, request: Request, model: str, endpoint: Endpoint) -> int | None:
        """The answer cap this adapter sends for `request` (a default the wire requires, a
        cap raised for thinking, ...), or None when it sends none. The budget asks before
        every attempt, so the built-in adapters answer from the parameter rules without
        building the body; this fallback (for other adapters) builds it and reads it."""
        built = self.build_request(request, model, endpoint, stream=False)
        body = json.loads(built.content)
        if not isinstance(body, dict):
            return request.max_tokens
        config = body.get("generationConfig")
        for value in (*(body.get(name) for name in _CAP_FIELDS),
                      config.get("maxOutputTokens") if isinstance(config, dict) else None):
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        return None

    @abstractmethod
    def parse_reply(self, response: httpx.Response, endpoint: Endpoint) -> ParsedReply:
        """Read a whole 2xx response (already read into memory)."""

    @abstractmethod
    def stream_parser(self, endpoint: Endpoint) -> StreamParser:
        ...

    @abstractmethod
    def map_error(self, response: httpx.Response, endpoint: Endpoint) -> VendorError:
        """Map a non-2xx response (already read) to our exception."""

    def list_models_request(self, endpoint: Endpoint) -> httpx.Request | None:
        return None

    def parse_models(self, response: httpx.Response) -> list[str]:
        return []

    def pricing_model(self, model: str, endpoint: Endpoint) -> str:
        """The model name a price list knows this as (Azure maps deployments)."""
        return model


# -- helpers every adapter shares --------------------------------------------------------


# The body fields that cap a reply, per wire: OpenAI's newer and older names, Responses-style.
_CAP_FIELDS = ("max_completion_tokens", "max_tokens", "max_output_tokens")

_URLS: dict[tuple[str, tuple[tuple[str, str], ...]], httpx.URL] = {}
_HEADERS: dict[tuple[tuple[str, str], ...], httpx.Headers] = {}
_PARSED_LIMIT = 512


def post_json(url: str, headers: Mapping[str, str], content: bytes,
              params: Mapping[str, str] | None = None) -> httpx.Request:
    """A POST of a JSON body. The URL and headers come back call after call; each distinct
    one is parsed and checked once (httpx's URL parser and header checks cost more than
    the rest of building a request, about 50 µs a call)."""
    ukey = (url, tuple(params.items()) if params else ())
    parsed = _URLS.get(ukey)
    if parsed is None:
        if len(_URLS) >= _PARSED_LIMIT:
            _URLS.clear()
        # (httpx.URL(url, params=None) would drop the query already in `url`.)
        parsed = _URLS[ukey] = httpx.URL(url, params=params) if params else httpx.URL(url)
    hkey = tuple(headers.items())
    ready = _HEADERS.get(hkey)
    if ready is None:
        if len(_HEADERS) >= _PARSED_LIMIT:
            _HEADERS.clear()
        ready = _HEADERS[hkey] = httpx.Headers(headers)
    # httpx.Request copies the headers it is given, so the kept ones stay unchanged.
    return httpx.Request("POST", parsed, headers=ready, content=content)


_NOT_JSON = object()


def _loads(text: str | bytes) -> Any:
    """JSON, or `_NOT_JSON`. The errors are raised by the callers outside the `except`:
    a JSONDecodeError keeps the whole body in `.doc` (and a body may reflect the key
    back), which `from None` would still leave reachable as `__context__`. Nesting deep
    enough to exhaust the stack is not JSON we read either."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return _NOT_JSON


def read_json(response: httpx.Response, vendor: str) -> Any:
    data = _loads(response.content)
    if data is _NOT_JSON:
        raise ProtocolError(
            f"sent a body that is not JSON (HTTP {response.status_code}, "
            f"{len(response.content)} bytes); the vendor or a proxy in between is misbehaving",
            vendor=vendor)
    return data


def load_event_json(event: SSEEvent, vendor: str) -> Any:
    data = _loads(event.data)
    if data is _NOT_JSON:
        raise ProtocolError("sent a stream event that is not JSON", vendor=vendor)
    return data


def error_body(response: httpx.Response) -> tuple[Any, Any]:
    """An error response's JSON body (None when it is not JSON) and its `error` member.

    Leniently: error bodies come from vendors, gateways and proxies alike, and a body that
    is not what the vendor documents must still become a typed error, never a crash."""
    data = _loads(response.content)
    if data is _NOT_JSON:
        return None, None
    return data, data.get("error") if isinstance(data, dict) else None


def parse_retry_after(headers: httpx.Headers, now: float | None = None) -> float | None:
    """Seconds to wait, from `retry-after-ms`, then `retry-after` (seconds or HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            value = float(ms) / 1000.0
            if value >= 0:
                return value
        except ValueError:
            pass
    ra = headers.get("retry-after")
    if not ra:
        return None
    try:
        return max(0.0, float(ra))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(ra)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def parse_should_retry(headers: httpx.Headers) -> bool | None:
    value = headers.get("x-should-retry", "").strip().lower()
    return True if value == "true" else False if value == "false" else None


def error_class_for_status(status: int) -> type[VendorError]:
    if status in (401, 403):
        return AuthenticationError
    if status == 429:
        return RateLimitError
    if status in (503, 529):
        return OverloadedError
    if status in (408, 409) or status >= 500:
        return ServerError
    return BadRequestError


def finish_from(raw: Any, table: Mapping[str, FinishReason]) -> FinishReason:
    if raw is None:
        return "stop"
    return table.get(raw, "other") if isinstance(raw, str) else "other"


def request_id_of(response: httpx.Response, *names: str) -> str | None:
    """The vendor's request id from the first of `names` present, redacted: a gateway
    may echo anything there, the key included, and it is stored and shown."""
    for n in names or ("x-request-id", "request-id"):
        v = response.headers.get(n)
        if v:
            return wire_text(v)
    return None


def wire(value: Any) -> str | None:
    """A short string field of a vendor's body (a model name, an id, a finish reason) as
    it may be kept: text, redacted; anything else (a number, a list) is not that field."""
    return wire_text(value) if isinstance(value, str) and value else None


# -- usage counts ------------------------------------------------------------------------

# More tokens than any model bills for one call by three orders of magnitude: a count
# above it is a broken server or gateway, not usage (and would not fit a ledger column).
MAX_TOKEN_COUNT = 10**9


class UnreliableUsage(ValueError):
    """A usage block the vendor sent that cannot be believed; says which field and why."""


def token_count(block: Mapping[str, Any], name: str) -> int:
    """One token count of a usage block: absent or null is 0; a whole number from 0 to
    `MAX_TOKEN_COUNT` (as an int, an integral float or ASCII digits) is itself; anything
    else (NaN, a negative, a fraction, a list, a bool, text) raises `UnreliableUsage`."""
    value = block.get(name)
    if value is None:
        return 0
    count: Any = value
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        count = int(value.strip()) if len(value) < 20 else MAX_TOKEN_COUNT + 1
    elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
        count = int(value)
    if isinstance(count, int) and not isinstance(count, bool) and 0 <= count <= MAX_TOKEN_COUNT:
        return count
    shown = repr(value) if not isinstance(value, dict | list) else type(value).__name__
    raise UnreliableUsage(f"{name} is {shown[:40]}, not a token count")


def unreliable_usage_note(exc: UnreliableUsage) -> dict[str, str]:
    """What `ParsedReply.extra` / `StreamParser.extra` carry when a usage block was not
    believed: the dispatcher then estimates the usage (flagged "estimated")."""
    return {"usage_unreliable": f"the vendor's usage was not believed ({exc}); it is estimated"}


# -- "did you mean" for a model the vendor does not know ---------------------------------


def requested_model(response: httpx.Response) -> str | None:
    """The model (or Azure deployment) a failed request named: in its URL
    (`models/<m>:generateContent`, `deployments/<d>/`) or its JSON body's `model`."""
    try:
        request = response.request
    except RuntimeError:
        return None
    parts = request.url.path.split("/")
    for marker in ("deployments", "models"):
        if marker in parts and parts.index(marker) + 1 < len(parts):
            return parts[parts.index(marker) + 1].split(":")[0] or None
    try:
        model = json.loads(request.content).get("model")
    except (ValueError, AttributeError, httpx.RequestNotRead, RecursionError):
        return None
    return model if isinstance(model, str) else None


def model_hint(response: httpx.Response, endpoint: Endpoint) -> str:
    """` (did you mean 'openai:gpt-4o-mini'?)` after a 404 for a mistyped model, from the
    models this endpoint is known to serve; empty when none is close."""
    model = requested_model(response)
    known = [m for m in (*endpoint.models, *endpoint.deployments, endpoint.default_model) if m]
    if not model or model in known:
        return ""
    near = difflib.get_close_matches(model, known, n=1, cutoff=0.75)
    return f" (did you mean {endpoint.name + ':' + near[0]!r}?)" if near else ""
