"""When to try the same candidate again, and how long to wait first.

A retry is for a failure that may pass: the error tree in `errors.py` decides that per
error (`LLMDispatchError.retryable`: 408/409/429/5xx/529, timeouts, connection errors,
malformed replies; never another 4xx, a quota that will not refill soon, or a stream that
already showed text; the vendor's `x-should-retry` header overrides the status). This
module only decides *whether another retry is allowed* and *how long to wait*.

The wait honours what the server said: `error.retry_after` (already read by the adapter
from `retry-after-ms`, `retry-after` in seconds or as an HTTP date, or Gemini's
`RetryInfo.retryDelay`) is waited exactly, and it is read from the latest error every
time, never remembered from the first. A server delay longer than `max_retry_after_s`
is not waited for on this candidate: `delay` returns None so the dispatcher moves on to a
fallback (Azure has been seen saying 86400).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from ..errors import ConfigurationError, LLMDispatchError

Backoff = Literal["exponential", "linear", "fixed"]

_shared_rng = random.Random()


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently one candidate is retried.

    `max_attempts` counts the first try (3 = one try and two retries). `per_error` caps
    the retries for an error class by its name instead (`{"RateLimitError": 5}`); a cap
    for a class also covers its subclasses unless they have their own, so
    `{"ServerError": 1}` covers `OverloadedError` too. The count compared with the cap
    is every retry already made on this candidate, whatever errors caused them.

    Backoff with `base_s=0.5`: exponential waits 0.5, 1, 2, 4, 8 s; linear 0.5, 1, 1.5 s;
    fixed 0.5 s every time; each capped at `max_backoff_s`, then multiplied by
    `1 - jitter * U[0, 1)` so many clients that failed together do not come back together
    (the defaults match the OpenAI and Anthropic SDKs).
    """

    max_attempts: int = 3
    backoff: Backoff = "exponential"
    base_s: float = 0.5
    max_backoff_s: float = 8.0
    jitter: float = 0.25
    max_retry_after_s: float = 60.0
    per_error: Mapping[str, int] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise ConfigurationError(
                f"RetryPolicy max_attempts must be a whole number >= 1 (1 = no retries), "
                f"got {self.max_attempts!r}")
        if self.backoff not in ("exponential", "linear", "fixed"):
            raise ConfigurationError(
                f"RetryPolicy backoff must be 'exponential', 'linear' or 'fixed', got {self.backoff!r}")
        if self.base_s < 0 or self.max_backoff_s < 0 or self.max_retry_after_s < 0:
            raise ConfigurationError("RetryPolicy delays must not be negative")
        if not 0 <= self.jitter <= 1:
            raise ConfigurationError(f"RetryPolicy jitter must be between 0 and 1, got {self.jitter!r}")
        for name, cap in self.per_error.items():
            if not isinstance(cap, int) or cap < 0:
                raise ConfigurationError(
                    f"RetryPolicy per_error[{name!r}] must be a whole number of retries >= 0, got {cap!r}")
        # Frozen means frozen: a caller's dict changed later must not change the policy.
        object.__setattr__(self, "per_error", MappingProxyType(dict(self.per_error)))

    @classmethod
    def none(cls) -> RetryPolicy:
        """Never retry (fallbacks still happen)."""
        return cls(max_attempts=1)

    def retries_allowed(self, error: LLMDispatchError) -> int:
        """How many retries this candidate may have when failing with `error`."""
        if not error.retryable:
            return 0
        for klass in type(error).__mro__:
            cap = self.per_error.get(klass.__name__)
            if cap is not None:
                return cap
        return self.max_attempts - 1

    def backoff_s(self, retries_done: int, rng: random.Random | None = None) -> float:
        """The wait before retry number `retries_done + 1` when the server named none."""
        k = max(0, retries_done)
        if self.backoff == "exponential":
            # 2**k overflows a float long after it passes any sane cap; stop early.
            raw = self.base_s * (2.0 ** min(k, 64))
        elif self.backoff == "linear":
            raw = self.base_s * (k + 1)
        else:
            raw = self.base_s
        capped = min(raw, self.max_backoff_s)
        u = (rng or _shared_rng).random()
        return capped * (1.0 - self.jitter * u)

    def delay(self, retries_done: int, error: LLMDispatchError, rng: random.Random | None = None,
              *, remaining_s: float | None = None) -> float | None:
        """Seconds to wait before retrying this candidate after `error`, or None: do not.

        `retries_done` is how many retries this candidate has had already (0 after the
        first failure). With `remaining_s` (time left before the call's deadline), a
        server delay that does not fit returns None (waiting less than the server asked
        would only earn another 429), and a backoff is shortened to fit.
        """
        if not error.retryable:
            return None
        if retries_done >= self.retries_allowed(error):
            return None
        server = getattr(error, "retry_after", None)
        if server is not None:
            wait = max(0.0, float(server))
            if wait > self.max_retry_after_s:
                return None
            if remaining_s is not None and wait > remaining_s:
                return None
            return wait
        wait = self.backoff_s(retries_done, rng)
        if remaining_s is not None:
            if remaining_s <= 0:
                return None
            wait = min(wait, remaining_s)
        return wait

    def describe(self) -> str:
        caps = ", ".join(f"{k}: {v}" for k, v in sorted(self.per_error.items()))
        return (f"up to {self.max_attempts} attempt(s) per candidate, {self.backoff} backoff from "
                f"{self.base_s:g} s (max {self.max_backoff_s:g} s, jitter {self.jitter:g}), "
                f"server delays up to {self.max_retry_after_s:g} s honoured"
                + (f"; retries by error: {caps}" if caps else ""))
