"""Google's error answers for the emulated Gemini API, and the faults that answer with them.

Errors are pretty-printed `{"error":{code,message,status,details}}` bodies with `RetryInfo`,
`QuotaFailure`, `ErrorInfo` and `Help` details and no rate-limit headers: a wrong key is a 400
`API_KEY_INVALID`, a quota a 429 `RESOURCE_EXHAUSTED` whose `retryDelay` is a protobuf
Duration. Kept apart from `gemini.py` (the routes and answers) so that module stays the
request path.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from starlette.responses import Response

from ._core import Fault, Profile

JSON_TYPE = "application/json; charset=UTF-8"
RATE_QUOTA = "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"
DAY_QUOTA = "GenerateRequestsPerDayPerProjectPerModel-FreeTier"
QUOTA_METRIC = "generativelanguage.googleapis.com/generate_content_free_tier_requests"


def duration(seconds: float) -> str:
    """A protobuf Duration in JSON: "47s", "0.250s" (0, 3, 6 or 9 decimals)."""
    if float(seconds).is_integer():
        return f"{int(seconds)}s"
    for digits in (3, 6, 9):
        text = f"{seconds:.{digits}f}"
        if float(text) == seconds:
            return f"{text}s"
    return f"{seconds:.9f}s"


def pretty(obj: Any) -> bytes:
    return json.dumps(obj, indent=2, ensure_ascii=False).encode()


def google_error(code: int, status: str, message: str, details: list[dict[str, Any]] | None = None,
                 headers: Mapping[str, str] | None = None) -> Response:
    err: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        err["details"] = details
    return Response(pretty({"error": err}) + b"\n", status_code=code,
                    headers={"content-type": JSON_TYPE, **(headers or {})})


def error_object(code: int, status: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status}}


def bad_key() -> Response:
    msg = "API key not valid. Please pass a valid API key."
    return google_error(400, "INVALID_ARGUMENT", msg, [
        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
         "domain": "googleapis.com",
         "metadata": {"service": "generativelanguage.googleapis.com"}},
        {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US",
         "message": msg},
    ])


def not_found(model: str, version: str, method: str) -> Response:
    return google_error(404, "NOT_FOUND", (
        f"models/{model} is not found for API version {version}, or is not supported for "
        f"{method}. Call ListModels to see the list of available models and their supported "
        f"methods."))


def rate_limited(model: str, delay: float, quota_id: str, limit: int,
                 headers: Mapping[str, str] | None = None) -> Response:
    return google_error(429, "RESOURCE_EXHAUSTED", (
        "You exceeded your current quota, please check your plan and billing details. For "
        "more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.\n"
        f"* Quota exceeded for metric: {QUOTA_METRIC}, limit: {limit}, model: {model}\n"
        f"Please retry in {delay:g}s."), [
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
            {"quotaMetric": QUOTA_METRIC, "quotaId": quota_id,
             "quotaDimensions": {"location": "global", "model": model},
             "quotaValue": str(limit)}]},
        {"@type": "type.googleapis.com/google.rpc.Help", "links": [
            {"description": "Learn more about Gemini API quotas",
             "url": "https://ai.google.dev/gemini-api/docs/rate-limits"}]},
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": duration(delay)},
    ], headers)


OVERLOADED = "The model is overloaded. Please try again later."


def fault_response(fault: Fault, model: str, profile: Profile, prompt_tokens: int) -> Response | None:
    """The HTTP error a fault kind answers with, in Google's shape (None: not an HTTP error)."""
    k = fault.kind
    ra = fault.retry_after
    if k == "429":
        return rate_limited(model, ra if ra is not None else 2, RATE_QUOTA, 10)
    if k == "429-ms":  # Google has no retry-after-ms; RetryInfo carries fractions instead
        return rate_limited(model, ra if ra is not None else 0.25, RATE_QUOTA, 10)
    if k == "429-long":
        return rate_limited(model, ra if ra is not None else 3600, RATE_QUOTA, 10)
    if k == "429-no-retry":  # not a header Google sends; kept so clients can be tested on it
        return rate_limited(model, ra if ra is not None else 2, RATE_QUOTA, 10,
                            {"x-should-retry": "false"})
    if k == "quota":
        return rate_limited(model, ra if ra is not None else 43200, DAY_QUOTA, 250)
    if k == "408":
        # Google's own timeout is 504 DEADLINE_EXCEEDED; its front end answers 408 when the
        # request upload stalls. The kind is about a 408, so the code stays 408, in Google's shape.
        return google_error(408, "DEADLINE_EXCEEDED", "Request timed out while reading the request.")
    if k == "409":
        return google_error(409, "ABORTED", "The operation was aborted due to a concurrency "
                                            "conflict. Please try again.")
    if k == "500":
        return google_error(500, "INTERNAL", "An internal error has occurred. Please retry or "
                            "report in https://developers.generativeai.google/guide/troubleshooting")
    if k in ("503", "529", "midstream-error"):
        # Gemini has no 529: an overloaded model is a 503 UNAVAILABLE. A mid-stream error on a
        # plain call is the same failure before any byte was sent.
        return google_error(503, "UNAVAILABLE", OVERLOADED)
    if k == "401":  # Gemini answers a bad key with 400, never 401
        return bad_key()
    if k == "400":
        return google_error(400, "INVALID_ARGUMENT",
                            "* GenerateContentRequest.generation_config.temperature: must be "
                            "between 0 and 2\n")
    if k == "context-length":
        return google_error(400, "INVALID_ARGUMENT", (
            f"The input token count ({max(prompt_tokens, profile.context_window + 1731)}) exceeds "
            f"the maximum number of tokens allowed ({profile.context_window})."))
    return None
