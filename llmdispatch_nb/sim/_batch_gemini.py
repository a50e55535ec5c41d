"""Gemini's Batch Mode, emulated (vendor-protocols.md §15.3), inlined requests.

    POST /{version}/models/{model}:batchGenerateContent
         {"batch": {"displayName"?, "inputConfig": {"requests": {"requests": [
             {"request": GenerateContentRequest, "metadata": {"key": ...}}]}}}}
    GET  /{version}/batches[/{id}]   POST /{version}/batches/{id}:cancel   DELETE .../{id}

A batch is a long-running operation `{"name": "batches/…", "metadata": {…}, "done"}`; the
SDK reads everything from `metadata` (state BATCH_STATE_*, times, model, `output` with
`inlinedResponses` in input order, each a GenerateContentResponse or an `error`).
Each request is answered by the emulator's own `generateContent` (see `_batch_core`).
An expired, cancelled or failed batch carries no output.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ._batch_core import EmulatedBatch, engine
from ._gemini_errors import google_error

MAX_INLINE_BYTES = 20 * 1024 * 1024
_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch"


def batch_routes(emulator: Any) -> list[Route]:
    api = _BatchMode(emulator)
    return [
        Route("/{version}/models/{model}:batchGenerateContent", api.create, methods=["POST"]),
        Route("/{version}/batches", api.list_batches, methods=["GET"]),
        Route("/{version}/batches/{batch_id}:cancel", api.cancel, methods=["POST"]),
        Route("/{version}/batches/{batch_id}", api.retrieve, methods=["GET"]),
        Route("/{version}/batches/{batch_id}", api.delete, methods=["DELETE"]),
    ]


def _time(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _BatchMode:
    def __init__(self, emulator: Any) -> None:
        self.emu = emulator

    @property
    def engine(self) -> Any:
        return engine(self.emu)

    def _find(self, request: Request) -> tuple[EmulatedBatch | None, Response | None]:
        denied: Response | None = self.emu.check_key(request)
        if denied is not None:
            return None, denied
        batch = self.engine.items.get(request.path_params["batch_id"])
        if batch is None:
            return None, google_error(404, "NOT_FOUND", "Requested entity was not found.")
        return batch, None

    async def create(self, request: Request) -> Response:
        denied = self.emu.check_key(request)
        if denied is not None:
            return denied
        raw = await request.body()
        if len(raw) > MAX_INLINE_BYTES:
            return google_error(400, "INVALID_ARGUMENT", "Request payload size exceeds the limit: "
                               f"{MAX_INLINE_BYTES} bytes.")
        try:
            body = json.loads(raw)
        except ValueError:
            return google_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
        model = request.path_params["model"]
        batch_body = body.get("batch") if isinstance(body, dict) else None
        config = (batch_body or {}).get("inputConfig") or {}
        if "fileName" in config:
            return google_error(400, "INVALID_ARGUMENT", "This emulator takes inlined requests only "
                               "(inputConfig.requests).")
        reqs = ((config.get("requests") or {}).get("requests")) if isinstance(config, dict) else None
        if not isinstance(reqs, list) or not reqs:
            return google_error(400, "INVALID_ARGUMENT", "* BatchGenerateContentRequest.batch."
                               "input_config: input_config is required\n")
        if model not in self.emu_models():
            return google_error(404, "NOT_FOUND", f"models/{model} is not found for API version "
                               f"{request.path_params['version']}, or is not supported for "
                               f"batchGenerateContent.")
        keys = [str(((r.get("metadata") or {}).get("key")) if isinstance(r, dict) and
                    (r.get("metadata") or {}).get("key") is not None else i)
                for i, r in enumerate(reqs)]
        bodies = [r.get("request") if isinstance(r, dict) else None for r in reqs]
        batch = self.engine.new("", keys, {"model": f"models/{model}",
                                           "displayName": (batch_body or {}).get("displayName") or "",
                                           "metadata": [r.get("metadata") for r in reqs]})
        path = f"/{request.path_params['version']}/models/{model}:generateContent"
        self.engine.start(batch, "POST", [path] * len(bodies), bodies, request.headers)
        return Response(json.dumps(self.view(batch)).encode(), media_type="application/json")

    def emu_models(self) -> set[str]:
        from ._core import PROFILES

        return set(PROFILES["google"])

    async def retrieve(self, request: Request) -> Response:
        batch, refused = self._find(request)
        if batch is None:
            assert refused is not None
            return refused
        return Response(json.dumps(self.view(batch)).encode(), media_type="application/json")

    async def list_batches(self, request: Request) -> Response:
        denied = self.emu.check_key(request)
        if denied is not None:
            return denied
        ops = [self.view(b) for b in reversed(self.engine.items.values())]
        return Response(json.dumps({"operations": ops}).encode(), media_type="application/json")

    async def cancel(self, request: Request) -> Response:
        batch, refused = self._find(request)
        if batch is None:
            assert refused is not None
            return refused
        if not batch.ended():
            batch.cancelled_at = time.time()
        return Response(b"{}\n", media_type="application/json")

    async def delete(self, request: Request) -> Response:
        batch, refused = self._find(request)
        if batch is None:
            assert refused is not None
            return refused
        del self.engine.items[batch.id]
        return Response(b"{}\n", media_type="application/json")

    # -- the operation, by the clock --------------------------------------------------------

    def view(self, b: EmulatedBatch) -> dict[str, Any]:
        now = time.time()
        ended = b.ended(now) and b.ready
        n = len(b.keys)
        meta: dict[str, Any] = {
            "@type": _TYPE, "model": b.info["model"], "displayName": b.info["displayName"],
            "createTime": _time(b.created), "updateTime": _time(now),
            "state": "BATCH_STATE_RUNNING" if b.fraction(now) > 0.02 or b.ready
            else "BATCH_STATE_PENDING",
            "batchStats": {"requestCount": str(n), "pendingRequestCount": str(n)},
            "name": f"batches/{b.id}",
        }
        op: dict[str, Any] = {"name": f"batches/{b.id}", "metadata": meta, "done": ended}
        if not ended:
            return op
        meta["endTime"] = _time(b.cancelled_at or b.due)
        if b.fault == "failed":
            meta["state"] = "BATCH_STATE_FAILED"
            op["error"] = {"code": 3, "message": "The batch input could not be processed."}
            return op
        if b.cancelled_at is not None:
            meta["state"] = "BATCH_STATE_CANCELLED"
            return op
        if b.fault == "expired":
            meta["state"] = "BATCH_STATE_EXPIRED"
            return op
        meta["state"] = "BATCH_STATE_SUCCEEDED"
        assert b.answers is not None
        out, good = [], 0
        for i, a in enumerate(b.answers):
            item: dict[str, Any] = {}
            md = b.info["metadata"][i]
            if md:
                item["metadata"] = md
            if b.outcome(i) == "ok":
                item["response"] = a.body
                good += 1
            elif 200 <= a.status < 300:  # a "partial" batch's failed request
                item["error"] = {"code": 13, "message": "Internal error encountered."}
            else:
                err = (a.body or {}).get("error") if isinstance(a.body, dict) else None
                item["error"] = {"code": int((err or {}).get("code") or a.status),
                                 "message": str((err or {}).get("message") or "error"),
                                 "status": (err or {}).get("status")}
            out.append(item)
        meta["batchStats"] = {"requestCount": str(n), "successfulRequestCount": str(good),
                              "failedRequestCount": str(n - good)}
        meta["output"] = {"inlinedResponses": {"inlinedResponses": out}}
        return op
