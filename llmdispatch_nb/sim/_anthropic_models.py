"""The emulated Anthropic Models API's answers: a model's card and the cursor-paged list.

`GET /v1/models` lists cards newest first, `limit` 1-1000 (default 20), paged by
`after_id` or `before_id` (not both), with `has_more`, `first_id` and `last_id`; a card
carries the dated id, a display name ("Claude Haiku 4.5"), `created_at` (from the id's
date), the context window and the output cap. Kept apart from `anthropic.py` (the Messages
API) because listing models shares nothing with answering them but the profiles.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from ._core import Profile

# Largest max_tokens each model accepts; the Messages API answers 400 above it.
MAX_OUTPUT = {"claude-opus-4-1": 32_000}
DEFAULT_MAX_OUTPUT = 64_000


def display_name(key: str) -> str:
    """claude-haiku-4-5 -> Claude Haiku 4.5"""
    words: list[str] = []
    version: list[str] = []
    for part in key.split("-"):
        (version if part.isdigit() else words).append(part)
    return " ".join([*(w.capitalize() for w in words), ".".join(version)]).strip()


def created_at(profile: Profile) -> str:
    m = re.search(r"(\d{4})(\d{2})(\d{2})$", profile.served)
    if m:
        return f"{m[1]}-{m[2]}-{m[3]}T00:00:00Z"
    return datetime.fromtimestamp(profile.created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def model_info(key: str, profile: Profile) -> dict[str, Any]:
    return {"type": "model", "id": profile.served, "display_name": display_name(key),
            "created_at": created_at(profile), "max_input_tokens": profile.context_window,
            "max_tokens": MAX_OUTPUT.get(key, DEFAULT_MAX_OUTPUT)}


def models_page(profiles: Iterable[tuple[str, Profile]],
                query: Mapping[str, str]) -> dict[str, Any] | str:
    """The page of model cards `query` asks for, or the 400 message refusing it."""
    models = sorted((model_info(k, p) for k, p in profiles),
                    key=lambda m: m["created_at"], reverse=True)  # newest first
    ids = [m["id"] for m in models]
    try:
        limit = int(query.get("limit", "20"))
    except ValueError:
        return "limit: Input should be a valid integer"
    if not 1 <= limit <= 1000:
        return "limit: Input should be between 1 and 1000"
    after, before = query.get("after_id"), query.get("before_id")
    if after and before:
        return "after_id and before_id cannot both be given"
    cursor = after or before
    # An id that is not in the list is refused († the real API's answer is undocumented).
    if cursor and cursor not in ids:
        return f"unknown model id {cursor!r}"
    if before:
        end = ids.index(before)
        start = max(0, end - limit)
        has_more = start > 0
    else:
        start = ids.index(after) + 1 if after else 0
        end = min(len(ids), start + limit)
        has_more = end < len(ids)
    page = models[start:end]
    return {"data": page, "has_more": has_more,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None}
