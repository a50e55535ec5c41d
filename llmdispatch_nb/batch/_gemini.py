"""Gemini's Batch Mode as a batch translator (vendor-protocols.md §15.3), inlined requests.

Submit: `models/{model}:batchGenerateContent` with every request's body (the live
adapter's own GenerateContentRequest) inlined, each tagged with its custom id as
`metadata.key`. Status: the operation's `metadata.state` (BATCH_STATE_*). Results:
`metadata.output.inlinedResponses`, in input order (matched back by `metadata.key`
where present, else by position). An expired, cancelled or failed batch has no output:
all its requests are that outcome. Inline input must stay under 20 MB per batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import httpx

from ..vendors import Endpoint, adapter_for
from ._vendor import ENDED, RUNNING, BatchVendor, Outcome, Send, register, rfc3339_seconds

_ENDED = {"BATCH_STATE_SUCCEEDED": None, "BATCH_STATE_FAILED": "failed",
          "BATCH_STATE_CANCELLED": "cancelled", "BATCH_STATE_EXPIRED": "expired"}
_HTTP = {3: 400, 5: 404, 7: 403, 8: 429, 13: 500, 14: 503, 4: 504}  # rpc codes -> HTTP


class GeminiBatches(BatchVendor):
    kind: ClassVar[str] = "gemini"
    max_requests: ClassVar[int] = 50_000
    max_bytes: ClassVar[int] = 19 * 1024 * 1024  # the whole inline request under 20 MB

    def url(self, endpoint: Endpoint, path: str) -> str:
        adapter: Any = adapter_for("gemini")
        url: str = adapter.version_url(endpoint, path)
        return url

    def body(self, request: Any, model: str, endpoint: Endpoint) -> dict[str, Any]:
        adapter: Any = adapter_for("gemini")
        body: dict[str, Any] = adapter.body(request, model, endpoint)
        return body

    async def submit(self, send: Send, endpoint: Endpoint, model: str,
                     lines: Sequence[tuple[str, Mapping[str, Any]]],
                     meta: Mapping[str, str]) -> dict[str, Any]:
        name = model if model.startswith("models/") else f"models/{model}"
        created = await send(self.post(endpoint, self.url(endpoint, f"{name}:batchGenerateContent"), {
            "batch": {"displayName": f"{meta.get('llmdispatch_job', '')}-{meta.get('part', '')}",
                      "inputConfig": {"requests": {"requests": [
                          {"request": body, "metadata": {"key": cid}} for cid, body in lines]}}}}))
        op = created.json()
        return {"remote_id": op["name"], **self.read_status({}, op)}

    def status_request(self, endpoint: Endpoint, part: Mapping[str, Any]) -> httpx.Request:
        # An ended operation carries every inline answer: read it past the one-answer cap.
        return self.get(endpoint, self.url(endpoint, str(part["remote_id"])), results=True)

    def read_status(self, part: Mapping[str, Any], data: Any) -> dict[str, Any]:
        meta = data.get("metadata") or {}
        state = str(meta.get("state"))
        stats = meta.get("batchStats") or {}
        ok = int(stats.get("successfulRequestCount") or 0)
        failed = int(stats.get("failedRequestCount") or 0)
        error = data.get("error") or {}
        return {"status": state, "state": ENDED if state in _ENDED else RUNNING,
                "created_at": rfc3339_seconds(meta.get("createTime")),
                "ended_at": rfc3339_seconds(meta.get("endTime")),
                "counts": {"total": int(stats.get("requestCount") or 0) or None,
                           "completed": ok, "failed": failed},
                "error": error.get("message") if isinstance(error, dict) else None}

    def cancel_request(self, endpoint: Endpoint, part: Mapping[str, Any]) -> httpx.Request:
        return self.post(endpoint, self.url(endpoint, f"{part['remote_id']}:cancel"))

    async def results(self, send: Send, endpoint: Endpoint,
                      part: Mapping[str, Any]) -> dict[str, Outcome]:
        op = (await send(self.status_request(endpoint, part))).json()
        meta = op.get("metadata") or {}
        whole = _ENDED.get(str(meta.get("state")))
        cids = list(part["custom_ids"])
        if whole is not None:
            message = (op.get("error") or {}).get("message")
            return {cid: Outcome(whole, message=message) for cid in cids}
        inlined = (((meta.get("output") or {}).get("inlinedResponses") or {})
                   .get("inlinedResponses") or [])
        out: dict[str, Outcome] = {}
        for i, item in enumerate(inlined):
            key = (item.get("metadata") or {}).get("key")
            cid = str(key) if key is not None else (cids[i] if i < len(cids) else str(i))
            if item.get("response") is not None:
                out[cid] = Outcome("ok", 200, item["response"])
            else:
                err = item.get("error") or {}
                code = int(err.get("code") or 13)
                status = code if code >= 100 else _HTTP.get(code, 500)
                out[cid] = Outcome("error", status, {"error": {
                    "code": status, "message": err.get("message") or "error",
                    "status": err.get("status") or "INTERNAL"}}, message=err.get("message"))
        return out


register(GeminiBatches())
