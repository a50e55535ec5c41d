"""Anthropic's Message Batches, emulated (vendor-protocols.md §15.2).

    POST /v1/messages/batches     {"requests": [{"custom_id", "params"}]}
    GET  /v1/messages/batches[/{id}]   POST .../{id}/cancel   DELETE .../{id}
    GET  /v1/messages/batches/{id}/results   (JSONL, any order)

Each request's params are answered by the emulator's own `/v1/messages` (see
`_batch_core`), so an invalid request is an `errored` result in the API's own words. The
batch is `in_progress` (all counts in `processing`) until it ends; then the counts say
succeeded / errored / canceled / expired, and `results_url` points at the results.
"""

from __future__ import annotations

import random
import re
import time
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ._batch_core import EmulatedBatch, engine, jsonl
from ._server import json_response

MAX_REQUESTS = 100_000
CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def batch_routes(emulator: Any) -> list[Route]:
    api = _MessageBatches(emulator)
    base = "/v1/messages/batches"
    return [
        Route(base, api.create, methods=["POST"]),
        Route(base, api.list_batches, methods=["GET"]),
        Route(base + "/{batch_id}", api.retrieve, methods=["GET"]),
        Route(base + "/{batch_id}", api.delete, methods=["DELETE"]),
        Route(base + "/{batch_id}/cancel", api.cancel, methods=["POST"]),
        Route(base + "/{batch_id}/results", api.results, methods=["GET"]),
    ]


def rfc3339(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


class _MessageBatches:
    def __init__(self, emulator: Any) -> None:
        self.emu = emulator

    @property
    def engine(self) -> Any:
        return engine(self.emu)

    def _find(self, request: Request) -> tuple[EmulatedBatch | None, Response | None]:
        denied: Response | None = self.emu.check_headers(request)
        if denied is not None:
            return None, denied
        batch = self.engine.items.get(request.path_params["batch_id"])
        if batch is None:
            return None, self.emu.error(request, 404, "not_found_error",
                                        f"No batch found with id {request.path_params['batch_id']}")
        return batch, None

    async def create(self, request: Request) -> Response:
        denied = self.emu.check_headers(request)
        if denied is not None:
            return denied
        body = await self.emu.json_body(request)
        reqs = body.get("requests") if isinstance(body, dict) else None
        if not isinstance(reqs, list) or not reqs:
            return self.emu.error(request, 400, "invalid_request_error",
                                  "requests: Field required" if not isinstance(reqs, list)
                                  else "requests: List should have at least 1 item")
        if len(reqs) > MAX_REQUESTS:
            return self.emu.error(request, 413, "request_too_large",
                                  f"requests: at most {MAX_REQUESTS} requests per batch")
        seen: set[str] = set()
        for i, r in enumerate(reqs):
            cid = r.get("custom_id") if isinstance(r, dict) else None
            if not isinstance(cid, str) or not CUSTOM_ID.fullmatch(cid):
                return self.emu.error(request, 400, "invalid_request_error",
                                      f"requests.{i}.custom_id: String should match pattern "
                                      f"'^[a-zA-Z0-9_-]{{1,64}}$'")
            if cid in seen:
                return self.emu.error(request, 400, "invalid_request_error",
                                      f"Duplicate custom_id: {cid!r}. custom_id must be unique "
                                      f"within a batch.")
            seen.add(cid)
            params = r.get("params")
            if not isinstance(params, dict):
                return self.emu.error(request, 400, "invalid_request_error",
                                      f"requests.{i}.params: Field required")
            if params.get("stream"):
                return self.emu.error(request, 400, "invalid_request_error",
                                      f"requests.{i}.params.stream: streaming is not supported "
                                      f"in a batch")
        batch = self.engine.new("msgbatch_", [r["custom_id"] for r in reqs], {})
        self.engine.start(batch, "POST", ["/v1/messages"] * len(reqs),
                          [r["params"] for r in reqs], request.headers)
        return json_response(self.view(request, batch))

    async def retrieve(self, request: Request) -> Response:
        batch, refused = self._find(request)
        if batch is None:
            assert refused is not None
            return refused
        return json_response(self.view(request, batch))

    async def list_batches(self, request: Request) -> Response:
        denied = self.emu.check_headers(request)
        if denied is not None:
            return denied
        limit = int(request.query_params.get("limit", "20"))
        items = list(reversed(self.engine.items.values()))
        after = request.query_params.get("after_id")
        if after is not None:
            ids = [b.id for b in items]
            items = items[ids.index(after) + 1:] if after in ids else []
        page = [self.view(request, b) for b in items[:limit]]
        return json_response({"data": page, "has_more": len(items) > limit,
                              "first_id": page[0]["id"] if page else None,
                              "last_id": page[-1]["id"] if page else None})

    async def cancel(self, request: Request) -> Response:
        batch, refused = self._find(request)
        if batch is None:
            assert refused is not None
            return refused
        if batch.ended() and batch.ready:
            return json_response(self.view(request, batch))
        if batch.cancelled_at is None:
            batch.cancelled_at = time.time()
        view = self.view(request, batch)  # the next look finds it ended
        view.update(processing_status="canceling", ended_at=None, results_url=None,
                    request_counts={**dict.fromkeys(view["request_counts"], 0),
                                    "processing": len(batch.keys)})
        return json_response(view)

    async def delete(self, request: Request) -> Response:
        batch, refused = self._find(request)
        if batch is None:
            assert refused is not None
            return refused
        if not batch.ended() or not batch.ready:
            return self.emu.error(request, 400, "invalid_request_error",
                                  "Batch must be ended before it can be deleted; cancel it first.")
        del self.engine.items[batch.id]
        return json_response({"id": batch.id, "type": "message_batch_deleted"})

    async def results(self, request: Request) -> Response:
        batch, refused = self._find(request)
        if batch is None:
            assert refused is not None
            return refused
        if not (batch.ended() and batch.ready):
            return self.emu.error(request, 400, "invalid_request_error",
                                  f"Batch {batch.id} is still in progress: its results are not "
                                  f"available yet.")
        lines = [{"custom_id": cid, "result": self.result(batch, i)}
                 for i, cid in enumerate(batch.keys)]
        random.Random(batch.id).shuffle(lines)  # "in arbitrary order", as the API says
        return Response(jsonl(lines), media_type="application/binary")

    # -- shapes -----------------------------------------------------------------------------

    def result(self, b: EmulatedBatch, i: int) -> dict[str, Any]:
        fate = b.outcome(i)
        if fate == "cancelled":
            return {"type": "canceled"}
        if fate == "expired":
            return {"type": "expired"}
        assert b.answers is not None
        a = b.answers[i]
        if fate == "ok" and b.fault != "failed":
            return {"type": "succeeded", "message": a.body}
        if 200 <= a.status < 300 or b.fault == "failed":
            err = {"type": "error", "error": {"type": "api_error", "message": "Internal server error"},
                   "request_id": f"req_{b.id[-16:]}{i:06d}"}
        else:
            err = a.body
        return {"type": "errored", "error": err}

    def view(self, request: Request, b: EmulatedBatch) -> dict[str, Any]:
        n = len(b.keys)
        ended = b.ended() and b.ready
        counts = {"processing": n, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        if ended:
            counts["processing"] = 0
            for i in range(n):
                kind = self.result(b, i)["type"]
                counts[kind] += 1
        status = "ended" if ended else "canceling" if b.cancelled_at is not None else "in_progress"
        base = str(request.base_url).rstrip("/")
        return {
            "id": b.id, "type": "message_batch", "processing_status": status,
            "request_counts": counts, "created_at": rfc3339(b.created),
            "expires_at": rfc3339(b.created + 86_400),
            "ended_at": rfc3339(b.cancelled_at or b.due) if ended else None,
            "cancel_initiated_at": rfc3339(b.cancelled_at), "archived_at": None,
            "results_url": f"{base}/v1/messages/batches/{b.id}/results" if ended else None,
        }
