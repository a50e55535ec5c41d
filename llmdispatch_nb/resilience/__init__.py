"""What happens when a call fails or would cost too much: retries that honour Retry-After,
a circuit breaker per candidate, client-side rate and concurrency limits, and budgets.

Each piece is pure bookkeeping with an injectable clock; the dispatcher wires them into
the call path (breaker -> budget -> limiter -> send -> retry or fall back).
"""

from .breaker import BreakerState, CircuitBreaker, counts_as_failure
from .budget import Budget, Reservation, money
from .limits import Lease, Limit, LimitWaitTimeoutError, RateLimiter
from .retry import RetryPolicy

__all__ = [
    "BreakerState",
    "Budget",
    "CircuitBreaker",
    "Lease",
    "Limit",
    "LimitWaitTimeoutError",
    "RateLimiter",
    "Reservation",
    "RetryPolicy",
    "counts_as_failure",
    "money",
]
