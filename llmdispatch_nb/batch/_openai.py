"""OpenAI's Batch API (and Azure OpenAI's global batch) as a batch translator (§15.1, §15.4).

Submit: upload the JSONL input to `files` (purpose "batch"), then create the batch on it.
Status: the batch object. Results: the output file (answers) and the error file (failed,
expired and cancelled requests), matched back by `custom_id`. Azure is the same wire at
the resource's `/openai/v1/` (files and batches are resource-level, not per deployment),
with each line's `body.model` the batch deployment's name.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import httpx

from ..vendors import Endpoint, adapter_for
from ._vendor import ENDED, RUNNING, BatchVendor, Outcome, Send, jsonl, read_jsonl, register

CHAT = "/v1/chat/completions"
_ENDED = ("completed", "failed", "expired", "cancelled")


class OpenAIBatches(BatchVendor):
    kind: ClassVar[str] = "openai"
    max_requests: ClassVar[int] = 50_000
    max_bytes: ClassVar[int] = 200 * 1024 * 1024

    def url(self, endpoint: Endpoint, path: str) -> str:
        return endpoint.url(path)

    def line_url(self) -> str:
        return CHAT

    def body(self, request: Any, model: str, endpoint: Endpoint) -> dict[str, Any]:
        adapter: Any = adapter_for(endpoint.kind)
        body: dict[str, Any] = adapter.body(request, model, endpoint, stream=False)
        body["model"] = model  # Azure's classic route names the deployment in the URL only
        body.pop("stream", None)
        body.pop("stream_options", None)
        return body

    async def submit(self, send: Send, endpoint: Endpoint, model: str,
                     lines: Sequence[tuple[str, Mapping[str, Any]]],
                     meta: Mapping[str, str]) -> dict[str, Any]:
        data = jsonl([{"custom_id": cid, "method": "POST", "url": self.line_url(), "body": body}
                      for cid, body in lines])
        boundary = uuid.uuid4().hex
        form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n"
                f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
                f"filename=\"batch.jsonl\"\r\nContent-Type: application/jsonl\r\n\r\n").encode()
        form += data + f"\r\n--{boundary}--\r\n".encode()
        upload = httpx.Request("POST", self.url(endpoint, "files"), content=form, headers={
            **self.headers(endpoint), "Content-Type": f"multipart/form-data; boundary={boundary}"})
        file_id = (await send(upload)).json()["id"]
        created = await send(self.post(endpoint, self.url(endpoint, "batches"), {
            "input_file_id": file_id, "endpoint": CHAT, "completion_window": "24h",
            "metadata": dict(meta)}))
        batch = created.json()
        return {"remote_id": batch["id"], "input_file_id": file_id,
                **self.read_status({}, batch)}

    def status_request(self, endpoint: Endpoint, part: Mapping[str, Any]) -> httpx.Request:
        return self.get(endpoint, self.url(endpoint, f"batches/{part['remote_id']}"))

    def read_status(self, part: Mapping[str, Any], data: Any) -> dict[str, Any]:
        status = str(data.get("status"))
        counts = data.get("request_counts") or {}
        ended_at = next((data.get(k) for k in ("completed_at", "failed_at", "expired_at",
                                                "cancelled_at") if data.get(k)), None)
        errors = (data.get("errors") or {}).get("data") or []
        return {
            "status": status, "state": ENDED if status in _ENDED else RUNNING,
            "created_at": float(data.get("created_at") or 0) or None,
            "counts": {"total": counts.get("total"), "completed": counts.get("completed"),
                       "failed": counts.get("failed")},
            "ended_at": float(ended_at) if ended_at else None,
            "output_file_id": data.get("output_file_id"),
            "error_file_id": data.get("error_file_id"),
            "error": "; ".join(f"line {e.get('line')}: {e.get('message')}" for e in errors)[:500]
                     or None,
        }

    def cancel_request(self, endpoint: Endpoint, part: Mapping[str, Any]) -> httpx.Request:
        return self.post(endpoint, self.url(endpoint, f"batches/{part['remote_id']}/cancel"))

    async def results(self, send: Send, endpoint: Endpoint,
                      part: Mapping[str, Any]) -> dict[str, Outcome]:
        out: dict[str, Outcome] = {}
        for key in ("output_file_id", "error_file_id"):
            fid = part.get(key)
            if not fid:
                continue
            raw = (await send(self.get(endpoint, self.url(endpoint, f"files/{fid}/content"),
                                       results=True))).content
            for line in read_jsonl(raw):
                out[str(line.get("custom_id"))] = self.outcome(line)
        if part.get("status") == "failed":
            for cid in part["custom_ids"]:
                out.setdefault(cid, Outcome("failed", message="the batch failed validation: "
                                            + (part.get("error") or "no reason given")))
        return out

    @staticmethod
    def outcome(line: Mapping[str, Any]) -> Outcome:
        response = line.get("response")
        if isinstance(response, dict):
            status = int(response.get("status_code") or 0)
            return Outcome("ok" if 200 <= status < 300 else "error", status,
                           response.get("body"), request_id=response.get("request_id"))
        error = line.get("error") or {}
        code = str(error.get("code") or "")
        kind = {"batch_expired": "expired", "batch_cancelled": "cancelled"}.get(code, "error")
        return Outcome(kind, message=str(error.get("message") or code), code=code or None)


class AzureBatches(OpenAIBatches):
    kind: ClassVar[str] = "azure"
    max_requests: ClassVar[int] = 100_000  # commonly cited, not verified (§15.4)

    def url(self, endpoint: Endpoint, path: str) -> str:
        adapter: Any = adapter_for("azure")
        return f"{adapter.root(endpoint)}/openai/v1/{path}"

    def line_url(self) -> str:
        return "/chat/completions"  # Azure's own examples write the path without /v1


register(OpenAIBatches())
register(AzureBatches())
