"""RetryPolicy: what is retried, how often, and how long each wait is.

Errors are built by the real adapters from real HTTP responses (sans-IO: no socket is
needed to read a status and headers), so the retry_after under test is the one each
header produces in the product, not a value set by hand.
"""

from __future__ import annotations

import email.utils
import json
import random
import time

import httpx
import pytest

from llmdispatch_nb.errors import (
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    ConnectError,
    ContextLengthError,
    LLMDispatchError,
    MidStreamError,
    OverloadedError,
    ProtocolError,
    QuotaExhaustedError,
    RateLimitError,
    ServerError,
    VendorTimeoutError,
)
from llmdispatch_nb.resilience import RetryPolicy
from llmdispatch_nb.vendors import Endpoint, adapter_for

OPENAI = Endpoint("openai", "openai", "http://127.0.0.1:1/v1")
ANTHROPIC = Endpoint("anthropic", "anthropic", "http://127.0.0.1:1")
GOOGLE = Endpoint("google", "gemini", "http://127.0.0.1:1")


def openai_error(status: int, headers: dict[str, str] | None = None, code: str | None = None,
                 etype: str | None = None) -> LLMDispatchError:
    body = {"error": {"message": f"status {status}", "type": etype or "error", "code": code}}
    r = httpx.Response(status, headers=headers or {}, content=json.dumps(body).encode())
    return adapter_for("openai").map_error(r, OPENAI)


def anthropic_error(status: int, etype: str, *, code: str | None = None, message: str = "error",
                    headers: dict[str, str] | None = None) -> LLMDispatchError:
    err: dict[str, object] = {"type": etype, "message": message}
    if code:
        err["details"] = {"error_code": code}
    r = httpx.Response(status, headers=headers or {},
                       content=json.dumps({"type": "error", "error": err}).encode())
    return adapter_for("anthropic").map_error(r, ANTHROPIC)


def gemini_429(retry_delay: str, quota_id: str) -> LLMDispatchError:
    body = {"error": {"code": 429, "message": "You exceeded your current quota",
                      "status": "RESOURCE_EXHAUSTED", "details": [
                          {"@type": "type.googleapis.com/google.rpc.QuotaFailure",
                           "violations": [{"quotaMetric": "m", "quotaId": quota_id}]},
                          {"@type": "type.googleapis.com/google.rpc.RetryInfo",
                           "retryDelay": retry_delay}]}}
    r = httpx.Response(429, content=json.dumps(body).encode())
    return adapter_for("gemini").map_error(r, GOOGLE)


class FixedRandom(random.Random):
    """A Random whose random() is always `value`: pins the jitter draw."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


NO_JITTER = FixedRandom(0.0)


# -- what is retried ----------------------------------------------------------------------


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504])
def test_retryable_statuses_are_retried(status: int) -> None:
    err = openai_error(status)
    assert err.retryable
    assert RetryPolicy().delay(0, err, NO_JITTER) == 0.5


def test_anthropic_529_overloaded_is_retried() -> None:
    err = anthropic_error(529, "overloaded_error", message="Overloaded")
    assert isinstance(err, OverloadedError)
    assert RetryPolicy().delay(0, err, NO_JITTER) == 0.5


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422])
def test_client_errors_are_never_retried(status: int) -> None:
    err = openai_error(status)
    assert isinstance(err, BadRequestError | AuthenticationError)
    policy = RetryPolicy(max_attempts=10, per_error={"BadRequestError": 5, "AuthenticationError": 5,
                                                    "VendorError": 5})
    assert policy.delay(0, err) is None
    assert policy.retries_allowed(err) == 0


def test_context_length_error_is_not_retried() -> None:
    err = openai_error(400, code="context_length_exceeded")
    assert isinstance(err, ContextLengthError)
    assert RetryPolicy().delay(0, err) is None


def test_openai_insufficient_quota_is_not_retried() -> None:
    err = openai_error(429, code="insufficient_quota", etype="insufficient_quota",
                       headers={"retry-after": "1"})
    assert isinstance(err, QuotaExhaustedError)
    assert RetryPolicy(per_error={"RateLimitError": 9}).delay(0, err) is None


def test_anthropic_spend_limit_429_is_not_retried() -> None:
    err = anthropic_error(429, "rate_limit_error", code="enforced_spend_limit_reached",
                          headers={"retry-after": "5"})
    assert isinstance(err, QuotaExhaustedError)
    assert RetryPolicy().delay(0, err) is None


def test_gemini_per_day_quota_is_not_retried_but_per_minute_is() -> None:
    daily = gemini_429("47s", "GenerateRequestsPerDayPerProjectPerModel-FreeTier")
    assert isinstance(daily, QuotaExhaustedError)
    assert RetryPolicy().delay(0, daily) is None
    minute = gemini_429("47s", "GenerateRequestsPerMinutePerProjectPerModel-FreeTier")
    assert type(minute) is RateLimitError
    assert RetryPolicy().delay(0, minute) == 47.0


def test_x_should_retry_false_overrides_a_retryable_status() -> None:
    err = openai_error(503, headers={"x-should-retry": "false"})
    assert RetryPolicy().delay(0, err) is None


def test_x_should_retry_true_overrides_a_client_status() -> None:
    err = openai_error(400, headers={"x-should-retry": "true"})
    assert RetryPolicy().delay(0, err, NO_JITTER) == 0.5


def test_transport_errors_are_retried() -> None:
    for err in (ConnectError("reset", vendor="openai"), VendorTimeoutError("slow", vendor="openai"),
                ProtocolError("garbage", vendor="openai")):
        assert RetryPolicy().delay(0, err, NO_JITTER) == 0.5


def test_midstream_error_after_text_is_not_retried() -> None:
    err = MidStreamError("cut", vendor="openai", partial_text="Hello", status=200)
    assert RetryPolicy().delay(0, err) is None


# -- how long to wait: the server's word --------------------------------------------------


def test_retry_after_ms_is_waited_exactly() -> None:
    err = openai_error(429, headers={"retry-after-ms": "1500", "retry-after": "9"})
    assert RetryPolicy().delay(0, err, FixedRandom(0.99)) == 1.5


def test_retry_after_seconds_is_waited_exactly_without_jitter() -> None:
    err = openai_error(503, headers={"retry-after": "7"})
    assert RetryPolicy().delay(0, err, FixedRandom(0.99)) == 7.0


def test_retry_after_http_date() -> None:
    when = email.utils.formatdate(time.time() + 20, usegmt=True)
    err = openai_error(429, headers={"retry-after": when})
    delay = RetryPolicy().delay(0, err)
    assert delay is not None
    # An HTTP date has whole-second precision and the clock moved on while building it.
    assert 18.0 <= delay <= 20.0


def test_gemini_retry_info_delay_is_honoured() -> None:
    err = gemini_429("3.5s", "GenerateRequestsPerMinutePerProjectPerModel")
    assert RetryPolicy().delay(0, err) == 3.5


def test_server_delay_is_read_from_the_latest_error_each_time() -> None:
    policy = RetryPolicy(max_attempts=4)
    errors = [openai_error(429, headers={"retry-after": s}) for s in ("2", "11", "0.25")]
    assert [policy.delay(i, e) for i, e in enumerate(errors)] == [2.0, 11.0, 0.25]


def test_server_delay_longer_than_the_cap_moves_on() -> None:
    err = openai_error(429, headers={"retry-after": "86400"})
    assert RetryPolicy().delay(0, err) is None
    assert RetryPolicy(max_retry_after_s=100_000).delay(0, err) == 86400.0
    at_cap = openai_error(429, headers={"retry-after": "60"})
    assert RetryPolicy().delay(0, at_cap) == 60.0


def test_server_delay_beyond_the_remaining_deadline_is_not_waited() -> None:
    err = openai_error(429, headers={"retry-after": "10"})
    assert RetryPolicy().delay(0, err, remaining_s=5.0) is None
    assert RetryPolicy().delay(0, err, remaining_s=10.0) == 10.0


def test_backoff_is_clamped_to_the_remaining_deadline() -> None:
    err = openai_error(500)
    assert RetryPolicy().delay(1, err, NO_JITTER, remaining_s=0.3) == 0.3
    assert RetryPolicy().delay(0, err, NO_JITTER, remaining_s=0.0) is None


# -- how many retries ----------------------------------------------------------------------


def test_max_attempts_includes_the_first_try() -> None:
    err = openai_error(500)
    policy = RetryPolicy(max_attempts=3)
    assert [policy.delay(i, err) is not None for i in range(4)] == [True, True, False, False]
    assert RetryPolicy(max_attempts=1).delay(0, err) is None
    assert RetryPolicy.none().delay(0, err) is None


def test_per_error_cap_overrides_max_attempts() -> None:
    policy = RetryPolicy(max_attempts=2, per_error={"RateLimitError": 5, "ServerError": 0})
    limited = openai_error(429)
    assert [policy.delay(i, limited) is not None for i in range(6)] == [True] * 5 + [False]
    assert policy.delay(0, openai_error(500)) is None


def test_per_error_cap_covers_subclasses_unless_they_have_their_own() -> None:
    overloaded = anthropic_error(529, "overloaded_error")
    assert RetryPolicy(per_error={"ServerError": 1}).retries_allowed(overloaded) == 1
    policy = RetryPolicy(per_error={"ServerError": 1, "OverloadedError": 4})
    assert policy.retries_allowed(overloaded) == 4
    assert policy.retries_allowed(openai_error(500)) == 1
    assert policy.retries_allowed(openai_error(429)) == 2  # max_attempts 3 - the first try


def test_per_error_is_frozen_against_later_changes() -> None:
    caps = {"RateLimitError": 5}
    policy = RetryPolicy(per_error=caps)
    caps["RateLimitError"] = 0
    assert policy.retries_allowed(openai_error(429)) == 5
    assert policy == RetryPolicy(per_error={"RateLimitError": 5})


# -- backoff shapes and jitter --------------------------------------------------------------


def test_exponential_backoff_shape_and_cap() -> None:
    policy = RetryPolicy(max_attempts=10)
    assert [policy.backoff_s(k, NO_JITTER) for k in range(7)] == [0.5, 1, 2, 4, 8, 8, 8]
    assert policy.backoff_s(10_000, NO_JITTER) == 8.0  # no float overflow


def test_linear_backoff_shape() -> None:
    policy = RetryPolicy(backoff="linear", base_s=1.0, max_backoff_s=3.5)
    assert [policy.backoff_s(k, NO_JITTER) for k in range(5)] == [1, 2, 3, 3.5, 3.5]


def test_fixed_backoff_shape() -> None:
    policy = RetryPolicy(backoff="fixed", base_s=2.0)
    assert [policy.backoff_s(k, NO_JITTER) for k in range(4)] == [2, 2, 2, 2]


def test_jitter_multiplies_by_one_minus_jitter_times_u() -> None:
    policy = RetryPolicy()
    assert policy.backoff_s(0, FixedRandom(0.5)) == 0.5 * (1 - 0.25 * 0.5)
    rng = random.Random(7)
    for k in range(6):
        top = min(0.5 * 2**k, 8.0)
        for _ in range(200):
            d = policy.backoff_s(k, rng)
            assert top * 0.75 <= d <= top


def test_zero_jitter_is_exact_and_full_jitter_may_reach_zero() -> None:
    assert RetryPolicy(jitter=0).backoff_s(1, FixedRandom(0.99)) == 1.0
    assert RetryPolicy(jitter=1).backoff_s(1, FixedRandom(0.0)) == 1.0
    assert RetryPolicy(jitter=1).backoff_s(1, FixedRandom(0.5)) == 0.5


def test_backoff_is_used_when_the_server_names_no_delay() -> None:
    err = openai_error(503)
    assert getattr(err, "retry_after", 0) is None
    assert RetryPolicy(max_attempts=5).delay(2, err, NO_JITTER) == 2.0


@pytest.mark.parametrize("kwargs", [
    {"max_attempts": 0}, {"backoff": "random"}, {"jitter": 1.5}, {"base_s": -1},
    {"per_error": {"RateLimitError": -1}},
])
def test_bad_settings_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_describe_mentions_the_settings() -> None:
    text = RetryPolicy(per_error={"RateLimitError": 5}).describe()
    assert "3 attempt" in text and "exponential" in text and "RateLimitError: 5" in text


def test_server_error_built_by_hand_with_retry_after() -> None:
    # The dispatcher may raise its own typed errors; the policy reads the attribute alike.
    err = ServerError("busy", vendor="x", status=503, retry_after=1.25)
    assert RetryPolicy().delay(0, err) == 1.25
