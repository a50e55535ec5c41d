"""What a vendor's batch translator is: our requests in, the vendor's batch wire out, and
each request's outcome read back, with no sockets of its own.

Like the live adapters (`vendors/`), a translator builds `httpx.Request`s and reads
`httpx.Response`s; the one thing it is handed is `send`, the dispatcher's pooled client
behind the one place its errors are mapped, so a submission of two steps (OpenAI's upload
then create) stays one readable function. Each request's own answer is read by the live
adapter (`parse_reply`, `map_error`), so a batch answer is the same `ParsedReply` and the
same typed error a live call gives.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

import httpx

from ..errors import LLMDispatchError
from ..vendors import Endpoint, adapter_for

Send = Callable[[httpx.Request], Awaitable[httpx.Response]]

# Where a part's remote batch stands, the same words for every vendor.
RUNNING, ENDED = "running", "ended"


def rfc3339_seconds(stamp: Any) -> float | None:
    """A vendor's RFC 3339 time ("2026-12-07T04:13:00Z") as epoch seconds; None if not one."""
    if not isinstance(stamp, str):
        return None
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


# A results file holds every answer of a batch in one body, far past the cap meant for one
# answer (the transport honours a request's own cap).
RESULTS_MAX_BYTES = 8 * 1024**3

BATCH_DISCOUNT = 0.5  # every vendor bills batch work at half its list price (§15.5)


class BatchRequestError(LLMDispatchError):
    """A request of a batch that never ran: the window expired, the batch was cancelled or
    failed before it ran. `outcome` says which; `job.retry_failed()` sends it again."""

    def __init__(self, message: str, *, outcome: str, code: str | None = None) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.code = code


@dataclass(frozen=True)
class Outcome:
    """One request's result as the vendor's batch reported it.

    kind: "ok" (`status`, `body` the vendor's own response), "error" (`status` and `body`
    the vendor's error response, or only `message`), "expired", "cancelled" or "failed"."""

    kind: str
    status: int | None = None
    body: Any = None
    message: str | None = None
    code: str | None = None
    request_id: str | None = None


class BatchVendor(ABC):
    """One vendor's batch engine. Limits split big work into several batches."""

    kind: ClassVar[str]
    max_requests: ClassVar[int]
    max_bytes: ClassVar[int]

    def body(self, request: Any, model: str, endpoint: Endpoint) -> dict[str, Any]:
        """The live adapter's own request body for `request` (what a live call would send)."""
        built = adapter_for(endpoint.kind).build_request(request, model, endpoint, stream=False)
        body: dict[str, Any] = json.loads(built.content)
        return body

    def line_size(self, custom_id: str, body: Mapping[str, Any]) -> int:
        """About what one request adds to the batch's input, in bytes."""
        return len(json.dumps(body, separators=(",", ":"))) + len(custom_id) + 80

    @abstractmethod
    async def submit(self, send: Send, endpoint: Endpoint, model: str,
                     lines: Sequence[tuple[str, Mapping[str, Any]]],
                     meta: Mapping[str, str]) -> dict[str, Any]:
        """Submit (custom id, body) pairs as one batch; the part's vendor fields."""

    @abstractmethod
    def status_request(self, endpoint: Endpoint, part: Mapping[str, Any]) -> httpx.Request:
        ...

    @abstractmethod
    def read_status(self, part: Mapping[str, Any], data: Any) -> dict[str, Any]:
        """The part's fields updated from the vendor's batch object: `status` (the
        vendor's word), `state` (RUNNING or ENDED), `counts`, `ended_at`, result locations."""

    @abstractmethod
    def cancel_request(self, endpoint: Endpoint, part: Mapping[str, Any]) -> httpx.Request:
        ...

    @abstractmethod
    async def results(self, send: Send, endpoint: Endpoint,
                      part: Mapping[str, Any]) -> dict[str, Outcome]:
        """Every request's outcome by custom id, once the part has ENDED."""

    # -- shared -------------------------------------------------------------------------

    def headers(self, endpoint: Endpoint) -> dict[str, str]:
        """The auth and vendor headers a live call carries, from the live adapter (so the
        key handling stays in one place)."""
        adapter: Any = adapter_for(endpoint.kind)
        if hasattr(adapter, "auth_headers"):
            return {**endpoint.headers, **adapter.auth_headers(endpoint)}
        return dict(adapter.headers(endpoint))

    def get(self, endpoint: Endpoint, url: str, *, results: bool = False,
            **params: str) -> httpx.Request:
        """A GET; `results=True` for a body of many answers, read past the one-answer cap."""
        return httpx.Request("GET", url, headers=self.headers(endpoint), params=params or None,
                             extensions={"llmdispatch_max_body": RESULTS_MAX_BYTES} if results
                             else None)

    def post(self, endpoint: Endpoint, url: str, body: Any = None, **params: str) -> httpx.Request:
        headers = {**self.headers(endpoint), "Content-Type": "application/json"}
        content = json.dumps(body if body is not None else {}).encode()
        return httpx.Request("POST", url, headers=headers, content=content, params=params or None)


def jsonl(lines: Sequence[Any]) -> bytes:
    return b"".join(json.dumps(x, separators=(",", ":")).encode() + b"\n" for x in lines)


def read_jsonl(data: bytes) -> list[Any]:
    return [json.loads(line) for line in data.splitlines() if line.strip()]


_REGISTRY: dict[str, BatchVendor] = {}
_TRANSLATORS = ("_openai", "_anthropic", "_gemini")


def register(vendor: BatchVendor) -> None:
    _REGISTRY[vendor.kind] = vendor


def batch_vendor(kind: str) -> BatchVendor:
    """The batch translator for an endpoint kind; a vendor with no batch engine is refused."""
    import importlib

    for name in _TRANSLATORS:  # each registers itself on import
        importlib.import_module(f"{__package__}.{name}")

    found = _REGISTRY.get(kind)
    if found is None:
        from ..errors import ConfigurationError

        raise ConfigurationError(
            f"{kind} has no batch engine here; batch runs on {', '.join(sorted(_REGISTRY))} "
            f"(send the others live, or with sweep(mode='live'))")
    return found
