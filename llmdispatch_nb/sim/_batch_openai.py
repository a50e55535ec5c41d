"""OpenAI's Batch API, emulated (vendor-protocols.md §15.1), for OpenAI and Azure OpenAI.

    POST /v1/files (multipart, purpose=batch)       GET /v1/files/{id}[/content]
    POST /v1/batches  GET /v1/batches[/{id}]        POST /v1/batches/{id}/cancel

Input lines `{"custom_id","method","url","body"}`; output and error file lines
`{"id","custom_id","response":{"status_code","request_id","body"}|null,"error":...}`. Each
line is answered by the emulator's own chat route (see `_batch_core`). Azure serves the
same under `/openai/...` with the line's `body.model` a deployment name and never expires
a batch (its long ones run on; §15.4).
"""

from __future__ import annotations

import json
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ._batch_core import EmulatedBatch, engine, jsonl, read_jsonl, read_multipart
from ._server import json_response

MAX_REQUESTS = 50_000
MAX_BYTES = 200 * 1024 * 1024
ENDPOINTS = ("/v1/chat/completions", "/v1/responses", "/v1/embeddings", "/v1/completions",
             "/v1/moderations")


def batch_routes(emulator: Any, prefix: str = "/v1", chat_path: str | None = None) -> list[Route]:
    """The files and batches routes, to mount before the emulator's catch-all route.
    `chat_path` is where a line's chat request is answered (default: under `prefix`)."""
    api = _OpenAIBatches(emulator, prefix, chat_path or f"{prefix}/chat/completions")
    return [
        Route(f"{prefix}/files", api.upload, methods=["POST"]),
        Route(f"{prefix}/files", api.list_files, methods=["GET"]),
        Route(f"{prefix}/files/{{file_id}}", api.get_file, methods=["GET"]),
        Route(f"{prefix}/files/{{file_id}}/content", api.file_content, methods=["GET"]),
        Route(f"{prefix}/batches", api.create, methods=["POST"]),
        Route(f"{prefix}/batches", api.list_batches, methods=["GET"]),
        Route(f"{prefix}/batches/{{batch_id}}", api.retrieve, methods=["GET"]),
        Route(f"{prefix}/batches/{{batch_id}}/cancel", api.cancel, methods=["POST"]),
    ]


class _OpenAIBatches:
    def __init__(self, emulator: Any, prefix: str, chat_path: str) -> None:
        self.emu = emulator
        self.prefix = prefix
        self.chat_path = chat_path
        self.azure = emulator.vendor == "azure"

    @property
    def engine(self) -> Any:
        return engine(self.emu)

    def _denied(self, request: Request) -> Response | None:
        self.emu._begin(request)
        denied: Response | None = self.emu.check_auth(request)
        return denied

    def _error(self, request: Request, status: int, message: str, **kw: Any) -> Response:
        response: Response = self.emu.error(request, status, message, **kw)
        return response

    # -- files ----------------------------------------------------------------------------

    async def upload(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        form = read_multipart(await request.body(), request.headers.get("content-type", ""))
        purpose = form.get("purpose", (None, b""))[1].decode()
        if "file" not in form:
            return self._error(request, 400, "Missing required parameter: 'file'.", param="file")
        if purpose not in ("batch", "fine-tune", "assistants", "vision", "user_data", "evals"):
            return self._error(request, 400, f"'{purpose}' is not one of the supported purposes",
                               param="purpose")
        name, data = form["file"]
        if len(data) > MAX_BYTES:
            return self._error(request, 400, "File is too large.", param="file")
        meta = self.engine.add_file("file-", data, {
            "object": "file", "filename": name or "upload.jsonl", "purpose": purpose,
            "status": "processed", "expires_at": None, "status_details": None})
        return json_response(meta)

    async def list_files(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        data = [f["meta"] for f in self.engine.files.values()]
        return json_response({"object": "list", "data": data, "has_more": False,
                              "first_id": data[0]["id"] if data else None,
                              "last_id": data[-1]["id"] if data else None})

    async def get_file(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        found = self.engine.files.get(request.path_params["file_id"])
        if found is None:
            return self._no_file(request)
        return json_response(found["meta"])

    async def file_content(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        found = self.engine.files.get(request.path_params["file_id"])
        if found is None:
            return self._no_file(request)
        return Response(found["data"], media_type="application/octet-stream")

    def _no_file(self, request: Request) -> Response:
        return self._error(request, 404, f"No such File object: {request.path_params['file_id']}",
                           param="id")

    # -- batches --------------------------------------------------------------------------

    async def create(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        body = await self.emu.json_body(request)
        if not isinstance(body, dict):
            return self._error(request, 400, "We could not parse the JSON body of your request.")
        for name in ("input_file_id", "endpoint", "completion_window"):
            if not isinstance(body.get(name), str):
                return self._error(request, 400, f"Missing required parameter: '{name}'.", param=name)
        endpoint = body["endpoint"]
        if self.azure and not endpoint.startswith("/v1/"):
            endpoint = "/v1" + endpoint  # Azure's examples name it without /v1 (§15.4)
        if endpoint not in ENDPOINTS:
            return self._error(request, 400, f"Invalid value: '{endpoint}'. Supported values are: "
                               + ", ".join(f"'{e}'" for e in ENDPOINTS) + ".", param="endpoint",
                               code="invalid_value")
        if body["completion_window"] != "24h":
            return self._error(request, 400, "Invalid value for 'completion_window': only '24h' "
                               "is supported.", param="completion_window")
        found = self.engine.files.get(body["input_file_id"])
        if found is None or found["meta"]["purpose"] != "batch":
            return self._error(request, 400, f"Invalid 'input_file_id': '{body['input_file_id']}'. "
                               "File must have purpose 'batch'.", param="input_file_id")
        problems: list[dict[str, Any]] = []
        try:
            lines = read_jsonl(found["data"])
        except ValueError:
            lines = []
            problems.append({"code": "invalid_json_line", "line": None, "param": None,
                             "message": "A line of the input file is not valid JSON."})
        if len(lines) > MAX_REQUESTS:
            problems.append({"code": "too_many_requests", "line": None, "param": None,
                             "message": f"The batch input file has more than {MAX_REQUESTS} requests."})
        seen: set[str] = set()
        for i, line in enumerate(lines, 1):
            cid = line.get("custom_id") if isinstance(line, dict) else None
            url = line.get("url") if isinstance(line, dict) else None
            want = (endpoint, endpoint.removeprefix("/v1")) if self.azure else (endpoint,)
            if not isinstance(cid, str) or cid in seen:
                problems.append({"code": "duplicate_custom_id" if cid in seen else "missing_required_parameter",
                                 "line": i, "param": "custom_id",
                                 "message": "The custom_id for this request is missing or a duplicate."})
            elif url not in want:
                problems.append({"code": "mismatched_endpoint", "line": i, "param": "url",
                                 "message": f"The url for this request does not match the batch "
                                            f"endpoint {endpoint}."})
            elif not isinstance(line.get("body"), dict):
                problems.append({"code": "missing_required_parameter", "line": i, "param": "body",
                                 "message": "The body for this request is missing."})
            if isinstance(cid, str):
                seen.add(cid)
        keys = [str(line.get("custom_id")) for line in lines if isinstance(line, dict)]
        model = next((line["body"].get("model") for line in lines if isinstance(line, dict)
                      and isinstance(line.get("body"), dict)), None)
        batch = self.engine.new("batch_", keys, {
            "endpoint": endpoint, "input_file_id": body["input_file_id"],
            "metadata": body.get("metadata"), "model": model, "errors": problems,
            "completion_window": "24h"})
        if problems:
            batch.fault = "failed"
        elif self.azure and batch.fault == "expired":
            batch.fault = None  # Azure runs a long batch on rather than expire it (§15.4)
        chat = (self.chat_path if endpoint == "/v1/chat/completions"
                else self.prefix + endpoint.removeprefix("/v1"))
        bodies = [line["body"] for line in lines] if not problems else []
        self.engine.start(batch, "POST", [chat] * len(bodies), bodies, request.headers)
        return json_response(self.view(batch), headers=self.emu.common_headers(request))

    async def retrieve(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        batch = self.engine.items.get(request.path_params["batch_id"])
        if batch is None:
            return self._error(request, 404, f"No batch found with id '{request.path_params['batch_id']}'.",
                               code="not_found")
        return json_response(self.view(batch), headers=self.emu.common_headers(request))

    async def list_batches(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        limit = int(request.query_params.get("limit", "20"))
        after = request.query_params.get("after")
        items = list(reversed(self.engine.items.values()))  # newest first, as OpenAI lists them
        if after is not None:
            ids = [b.id for b in items]
            items = items[ids.index(after) + 1:] if after in ids else []
        page = items[:limit]
        data = [self.view(b) for b in page]
        return json_response({"object": "list", "data": data, "has_more": len(items) > limit,
                              "first_id": data[0]["id"] if data else None,
                              "last_id": data[-1]["id"] if data else None})

    async def cancel(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        batch = self.engine.items.get(request.path_params["batch_id"])
        if batch is None:
            return self._error(request, 404, f"No batch found with id '{request.path_params['batch_id']}'.",
                               code="not_found")
        if batch.ended():
            status = self.view(batch)["status"]
            return self._error(request, 409, f"Cannot cancel a batch with status '{status}'.")
        batch.cancelled_at = time.time()
        view = self.view(batch)
        view["status"] = "cancelling"  # the next look finds it cancelled
        return json_response(view, headers=self.emu.common_headers(request))

    # -- the batch object, by the clock ---------------------------------------------------

    def view(self, b: EmulatedBatch) -> dict[str, Any]:
        created = int(b.created)
        span = b.due - b.created
        out: dict[str, Any] = {
            "id": b.id, "object": "batch", "endpoint": b.info["endpoint"], "errors": None,
            "input_file_id": b.info["input_file_id"], "completion_window": "24h",
            "status": "validating", "output_file_id": None, "error_file_id": None,
            "created_at": created, "in_progress_at": None, "expires_at": created + 86_400,
            "finalizing_at": None, "completed_at": None, "failed_at": None, "expired_at": None,
            "cancelling_at": None, "cancelled_at": None,
            "request_counts": {"total": len(b.keys), "completed": 0, "failed": 0},
            "metadata": b.info.get("metadata"), "model": b.info.get("model"), "usage": None,
        }
        now = time.time()
        if b.fault == "failed":
            out.update(status="failed", failed_at=created,
                       errors={"object": "list", "data": b.info.get("errors") or [
                           {"code": "invalid_request", "line": 1, "param": None,
                            "message": "The batch input file could not be validated."}]},
                       request_counts={"total": 0, "completed": 0, "failed": 0})
            return out
        if b.fraction(now) > 0.02 or b.ready:
            out.update(status="in_progress", in_progress_at=int(b.created + span * 0.02))
        if b.cancelled_at is not None:
            # Cancelled once the requests already running are done (here: answered).
            out.update(cancelling_at=int(b.cancelled_at), status="cancelling")
            if b.ready:
                out.update(cancelled_at=int(now), status="cancelled")
        elif b.ended(now):
            status = "expired" if b.fault == "expired" and not self.azure else "completed"
            out.update(status=status, finalizing_at=int(b.due),
                       **{"expired_at" if status == "expired" else "completed_at": int(b.due)})
        elif b.ready and b.fraction(now) > 0.95:
            out.update(status="finalizing", finalizing_at=int(b.created + span * 0.95))
        elif b.ready or b.fraction(now) > 0.02:
            # Running: counts grow with the clock (OpenAI shows them as it goes).
            out["request_counts"]["completed"] = int(len(b.keys) * b.fraction(now) * 0.9)
        if out["status"] in ("completed", "expired", "cancelled"):
            self._finish(b, out)
        return out

    def _finish(self, b: EmulatedBatch, out: dict[str, Any]) -> None:
        """Write the output and error files once; fill the counts and usage."""
        if "files" not in b.info:
            good, bad = [], []
            usage: dict[str, Any] = {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0,
                     "input_tokens_details": {"cached_tokens": 0},
                     "output_tokens_details": {"reasoning_tokens": 0}}
            assert b.answers is not None
            for i, (cid, a) in enumerate(zip(b.keys, b.answers, strict=True)):
                fate = b.outcome(i)
                line_id = f"batch_req_{b.id[-12:]}{i:06d}"
                if fate == "ok":
                    good.append({"id": line_id, "custom_id": cid, "error": None, "response": {
                        "status_code": a.status, "request_id": a.request_id or line_id,
                        "body": a.body}})
                    u = a.body.get("usage") if isinstance(a.body, dict) else None
                    if isinstance(u, dict):
                        usage["input_tokens"] += int(u.get("prompt_tokens") or 0)
                        usage["output_tokens"] += int(u.get("completion_tokens") or 0)
                elif fate == "error" and b.fault == "partial" and 200 <= a.status < 300:
                    bad.append({"id": line_id, "custom_id": cid, "error": None, "response": {
                        "status_code": 500, "request_id": line_id, "body": {"error": {
                            "message": "The server had an error processing your request.",
                            "type": "server_error", "param": None, "code": None}}}})
                elif fate == "error":
                    bad.append({"id": line_id, "custom_id": cid, "error": None, "response": {
                        "status_code": a.status, "request_id": a.request_id or line_id,
                        "body": a.body}})
                else:
                    code = "batch_expired" if fate == "expired" else "batch_cancelled"
                    bad.append({"id": line_id, "custom_id": cid, "response": None, "error": {
                        "code": code, "message": "This request could not be executed before the "
                        "completion window expired." if fate == "expired" else
                        "This request was not executed because the batch was cancelled."}})
            usage["total_tokens"] = usage["input_tokens"] + usage["output_tokens"]
            files = {"output": None, "error": None, "completed": len(good), "failed": len(bad),
                     "usage": usage}
            if good:
                files["output"] = self.engine.add_file("file-", jsonl(good), {
                    "object": "file", "filename": f"{b.id}_output.jsonl", "purpose": "batch_output",
                    "status": "processed", "expires_at": None, "status_details": None})["id"]
            if bad:
                files["error"] = self.engine.add_file("file-", jsonl(bad), {
                    "object": "file", "filename": f"{b.id}_error.jsonl", "purpose": "batch_output",
                    "status": "processed", "expires_at": None, "status_details": None})["id"]
            b.info["files"] = files
        files = b.info["files"]
        out.update(output_file_id=files["output"], error_file_id=files["error"],
                   usage=json.loads(json.dumps(files["usage"])),
                   request_counts={"total": len(b.keys), "completed": files["completed"],
                                   "failed": files["failed"]})
