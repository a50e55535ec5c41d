"""Every error llmdispatch-nb raises, in one tree.

    LLMDispatchError                    base: catch this to catch everything of ours
    ├── ConfigurationError              the setup is wrong; fix it and run again
    │   ├── MissingKeyError             a vendor has no key (names the variable to set)
    │   ├── UnknownTargetError          no vendor/alias/model matches (lists what exists)
    │   └── RequestValidationError      the request itself is invalid (empty, out of range)
    ├── BudgetExceededError             refused before sending: it would break a budget
    ├── CircuitOpenError                every candidate's breaker is open
    ├── VendorError                     the vendor answered with an error
    │   ├── AuthenticationError         401/403, Gemini API_KEY_INVALID
    │   ├── BadRequestError             400/404/413/422 and other 4xx
    │   │   ├── ContextLengthError      the prompt does not fit the model
    │   │   └── ContentFilterError      Azure content filter, Gemini blocked prompt
    │   ├── RateLimitError              429 that may succeed later
    │   │   └── QuotaExhaustedError     429 that will not (insufficient_quota, spend limit, per day)
    │   ├── ServerError                 5xx, 408, 409
    │   │   └── OverloadedError         503/529 overloaded
    │   └── MidStreamError              the stream failed after it started (keeps partial text)
    ├── TransportError                  nothing usable came back
    │   ├── ConnectError                could not connect / connection reset
    │   ├── VendorTimeoutError          no answer within the timeout
    │   └── ProtocolError               garbage, malformed JSON, a stream cut short
    │       └── ResponseTooLargeError   an answer ran over a size cap (keeps partial text)
    └── AllCandidatesFailedError        every candidate was tried; `.errors` has each

Vendor errors carry `vendor`, `status`, `request_id`, `retry_after` (seconds, from the
latest response) and `body_excerpt`, redacted of anything shaped like a key. Every error
has `retryable` (may the same call succeed if tried again soon?) and a message that says
what to do. Lower-level httpx errors are mapped in exactly one place (`_transport.py`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

__all__ = [
    "AllCandidatesFailedError",
    "AuthenticationError",
    "BadRequestError",
    "BudgetExceededError",
    "CircuitOpenError",
    "ConfigurationError",
    "ConnectError",
    "ContentFilterError",
    "ContextLengthError",
    "LLMDispatchError",
    "MidStreamError",
    "MissingKeyError",
    "OverloadedError",
    "ProtocolError",
    "QuotaExhaustedError",
    "RateLimitError",
    "RequestValidationError",
    "ResponseTooLargeError",
    "ServerError",
    "TransportError",
    "UnknownTargetError",
    "VendorError",
    "VendorTimeoutError",
    "redact",
    "wire_text",
]

_KEYLIKE = re.compile(
    r"(sk-[A-Za-z0-9_\-]{8,}|AIza[0-9A-Za-z_\-]{20,}|(?i:bearer)\s+[A-Za-z0-9._\-]{8,}"
    r"|(?i:(?:api[-_]?key|x-goog-api-key|authorization)[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+)"
)
_registered_secrets: set[str] = set()


def register_secret(value: str) -> None:
    """Remember a configured key so `redact` removes it wherever it appears."""
    if value and len(value) >= 4:
        _registered_secrets.add(value)


def redact(text: str, limit: int | None = 500) -> str:
    """Remove known keys and key-shaped strings; cut to `limit` characters."""
    for secret in _registered_secrets:
        if secret in text:
            text = text.replace(secret, "[redacted]")
    text = _KEYLIKE.sub("[redacted]", text)
    if limit is not None and len(text) > limit:
        text = text[:limit] + "…"
    return text


class LLMDispatchError(Exception):
    """Base of every error raised by llmdispatch-nb."""

    retryable: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(redact(message, limit=None))

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


def _name_vendor(vendor: str, status: int | None, message: str) -> str:
    """`vendor status: message`, the one place a message is labelled with its vendor. A
    message that already starts with that label (an error re-raised as another, say a
    broken stream wrapping the transport error) keeps its own: never "fake: fake: ...".
    """
    already = re.match(rf"{re.escape(vendor)}(?: \d{{3}})?: ", message)
    if already:
        return message
    return f"{vendor} {status}: {message}" if status else f"{vendor}: {message}"


class ConfigurationError(LLMDispatchError):
    """The setup is wrong: a key, a target, an option."""


class MissingKeyError(ConfigurationError):
    def __init__(self, vendor: str, variables: Sequence[str]) -> None:
        self.vendor = vendor
        self.variables = tuple(variables)
        names = " or ".join(self.variables)
        super().__init__(
            f"no API key for {vendor}: set {names} (in the environment or a .env file), "
            f"or pass it to Dispatcher(...)"
        )


class UnknownTargetError(ConfigurationError):
    """`suggestion` is the known target closest to the one typed (`gtp` -> `gpt`), if any."""

    def __init__(self, target: str, vendors: Sequence[str], aliases: Sequence[str] = (), hint: str = "",
                 *, suggestion: str | None = None) -> None:
        self.target = target
        self.vendors = tuple(vendors)
        self.aliases = tuple(aliases)
        self.suggestion = suggestion
        known = ", ".join(self.vendors) or "none"
        near = f" (did you mean {suggestion!r}?)" if suggestion else ""
        msg = f"unknown target {target!r}{near}{': ' + hint if hint else ''}. Vendors: {known}"
        if self.aliases:
            msg += f"; aliases: {', '.join(self.aliases)}"
        msg += ". Write vendor:model, e.g. openai:gpt-4o-mini"
        super().__init__(msg)


class RequestValidationError(ConfigurationError):
    """The request cannot be sent as it is (empty prompt, parameter out of range)."""


class BudgetExceededError(LLMDispatchError):
    """`advice` (what to do) is kept apart from the facts and said once, at the end of the
    message, so a front end with advice of its own (the magic's `%llm budget`) can put
    its own in its place rather than say it twice."""

    def __init__(self, message: str, *, budget: float | None = None, spent: float | None = None,
                 estimate: float | None = None, advice: str = "") -> None:
        self.budget = budget
        self.spent = spent
        self.estimate = estimate
        self.advice = advice
        super().__init__(f"{message.rstrip('. ')}. {advice}" if advice else message)


class CircuitOpenError(LLMDispatchError):
    retryable = True

    def __init__(self, message: str, *, reopens_in: float | None = None) -> None:
        self.reopens_in = reopens_in
        super().__init__(message)


class WireText:
    """An error attribute holding text that came from the wire (a request id, an error
    code or type): redacted, and cut to 200 characters, whenever it is set, so a key a
    gateway reflects back never reaches `err.code`, a ledger row or a notebook."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.slot = f"_{name}"

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        return obj.__dict__.get(self.slot)

    def __set__(self, obj: Any, value: Any) -> None:
        obj.__dict__[self.slot] = wire_text(value)


def wire_text(value: Any, limit: int = 200) -> str | None:
    """One string from the wire, made safe to keep and show: None stays None; anything
    else becomes text, redacted of keys and cut to `limit` characters."""
    if value is None:
        return None
    return redact(value if isinstance(value, str) else str(value), limit=limit)


class VendorError(LLMDispatchError):
    """The vendor answered, with an error."""

    request_id = WireText()
    code = WireText()
    error_type = WireText()

    retryable = False

    def __init__(
        self,
        message: str,
        *,
        vendor: str,
        status: int | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
        body: str | bytes | None = None,
        code: str | None = None,
        error_type: str | None = None,
        should_retry: bool | None = None,
    ) -> None:
        self.vendor = vendor
        self.status = status
        self.request_id = request_id
        self.retry_after = retry_after
        self.code = code
        self.error_type = error_type
        if isinstance(body, bytes):
            body = body.decode("utf-8", "replace")
        self.body_excerpt = redact(body, limit=300) if body else ""
        # The vendor's own x-should-retry header overrides our reading of the status.
        if should_retry is not None:
            self.retryable = should_retry
        super().__init__(_name_vendor(vendor, status, message))

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.__dict__, self.args))


def _rebuild(cls: Any, state: dict[str, Any], args: tuple[Any, ...]) -> Any:
    obj = cls.__new__(cls)
    obj.__dict__.update(state)
    obj.args = args
    return obj


class AuthenticationError(VendorError):
    pass


class BadRequestError(VendorError):
    pass


class ContextLengthError(BadRequestError):
    pass


class ContentFilterError(BadRequestError):
    pass


class RateLimitError(VendorError):
    retryable = True


class QuotaExhaustedError(RateLimitError):
    """A 429 that waiting will not cure soon: out of credit, spend limit, daily quota."""

    retryable = False


class ServerError(VendorError):
    retryable = True


class OverloadedError(ServerError):
    pass


class MidStreamError(VendorError):
    """The stream broke after text reached the caller; retrying would repeat it."""

    def __init__(self, message: str, *, vendor: str, partial_text: str = "", usage: Any = None,
                 **kw: Any) -> None:
        self.partial_text = partial_text
        self.usage = usage
        super().__init__(message, vendor=vendor, **kw)
        self.retryable = False


class TransportError(LLMDispatchError):
    retryable = True
    request_id = WireText()

    def __init__(self, message: str, *, vendor: str) -> None:
        self.vendor = vendor
        self.status: int | None = None
        self.request_id = None
        self.retry_after: float | None = None
        super().__init__(_name_vendor(vendor, None, message))


class ConnectError(TransportError):
    pass


class VendorTimeoutError(TransportError):
    pass


class ProtocolError(TransportError):
    pass


class ResponseTooLargeError(ProtocolError):
    """A response ran over a size cap (its decoded body, one SSE line or event, a whole
    streamed answer; `_transport.py` lists them). `partial_text` keeps the text that had
    arrived. Not retryable: asking again would read the same oversized answer."""

    retryable = False

    def __init__(self, message: str, *, vendor: str, limit_bytes: int, setting: str,
                 partial_text: str = "") -> None:
        self.limit_bytes = limit_bytes
        self.setting = setting  # the environment variable that sets this cap
        self.partial_text = partial_text
        self.usage: Any = None
        super().__init__(message, vendor=vendor)


class AllCandidatesFailedError(LLMDispatchError):
    def __init__(self, errors: Sequence[LLMDispatchError]) -> None:
        self.errors = tuple(errors)
        last = self.errors[-1] if self.errors else None
        tried = len(self.errors)
        msg = f"all {tried} attempt(s) failed"
        if last is not None:
            msg += f"; last: {last}"
        super().__init__(msg)

    @property
    def last(self) -> LLMDispatchError | None:
        return self.errors[-1] if self.errors else None
