"""Anthropic's Message Batches as a batch translator (vendor-protocols.md §15.2).

Submit: one POST of every request's params (the live adapter's own Messages body, without
`stream`). Status: `processing_status` in_progress / canceling / ended, with counts that
stay in `processing` until the end. Results: the JSONL at `results_url`, in any order,
each `succeeded` (a Message), `errored` (the API's error envelope), `canceled` or `expired`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import httpx

from ..vendors import Endpoint, adapter_for
from ._vendor import (
    ENDED,
    RUNNING,
    BatchVendor,
    Outcome,
    Send,
    read_jsonl,
    register,
    rfc3339_seconds,
)


class AnthropicBatches(BatchVendor):
    kind: ClassVar[str] = "anthropic"
    max_requests: ClassVar[int] = 100_000
    max_bytes: ClassVar[int] = 256 * 1024 * 1024

    def url(self, endpoint: Endpoint, path: str) -> str:
        adapter: Any = adapter_for("anthropic")
        url: str = adapter.api_url(endpoint, path)
        return url

    def body(self, request: Any, model: str, endpoint: Endpoint) -> dict[str, Any]:
        adapter: Any = adapter_for("anthropic")
        body: dict[str, Any] = adapter.body(request, model, stream=False)
        body.pop("stream", None)
        return body

    async def submit(self, send: Send, endpoint: Endpoint, model: str,
                     lines: Sequence[tuple[str, Mapping[str, Any]]],
                     meta: Mapping[str, str]) -> dict[str, Any]:
        created = await send(self.post(endpoint, self.url(endpoint, "messages/batches"), {
            "requests": [{"custom_id": cid, "params": body} for cid, body in lines]}))
        batch = created.json()
        return {"remote_id": batch["id"], **self.read_status({}, batch)}

    def status_request(self, endpoint: Endpoint, part: Mapping[str, Any]) -> httpx.Request:
        return self.get(endpoint, self.url(endpoint, f"messages/batches/{part['remote_id']}"))

    def read_status(self, part: Mapping[str, Any], data: Any) -> dict[str, Any]:
        status = str(data.get("processing_status"))
        counts = data.get("request_counts") or {}
        done = sum(int(counts.get(k) or 0) for k in ("succeeded", "errored", "canceled", "expired"))
        return {"status": status, "state": ENDED if status == "ended" else RUNNING,
                "created_at": rfc3339_seconds(data.get("created_at")),
                "ended_at": rfc3339_seconds(data.get("ended_at")),
                "counts": {"total": done + int(counts.get("processing") or 0),
                           "completed": int(counts.get("succeeded") or 0),
                           "failed": done - int(counts.get("succeeded") or 0)},
                "results_url": data.get("results_url")}

    def cancel_request(self, endpoint: Endpoint, part: Mapping[str, Any]) -> httpx.Request:
        return self.post(endpoint, self.url(endpoint, f"messages/batches/{part['remote_id']}/cancel"))

    async def results(self, send: Send, endpoint: Endpoint,
                      part: Mapping[str, Any]) -> dict[str, Outcome]:
        url = part.get("results_url") or self.url(
            endpoint, f"messages/batches/{part['remote_id']}/results")
        req = self.get(endpoint, url, results=True)
        req.headers["Accept"] = "application/binary"
        raw = (await send(req)).content
        out: dict[str, Outcome] = {}
        for line in read_jsonl(raw):
            result = line.get("result") or {}
            kind = result.get("type")
            if kind == "succeeded":
                out[str(line.get("custom_id"))] = Outcome("ok", 200, result.get("message"))
            elif kind == "errored":
                err = result.get("error") or {}
                inner = err.get("error") or {}
                status = {"invalid_request_error": 400, "authentication_error": 401,
                          "permission_error": 403, "not_found_error": 404,
                          "request_too_large": 413, "rate_limit_error": 429,
                          "overloaded_error": 529}.get(str(inner.get("type")), 500)
                out[str(line.get("custom_id"))] = Outcome(
                    "error", status, err, message=inner.get("message"),
                    code=inner.get("type"), request_id=err.get("request_id"))
            else:
                out[str(line.get("custom_id"))] = Outcome(
                    "cancelled" if kind == "canceled" else "expired")
        return out


register(AnthropicBatches())
