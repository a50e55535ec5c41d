"""Azure OpenAI, emulated: OpenAI's chat completions behind Azure's routes, auth and annotations.

Routes (vendor-protocols.md §4):
    POST /openai/deployments/{deployment}/chat/completions?api-version=...   (classic)
    POST /openai/v1/chat/completions   (body `model` = deployment name)
    GET  /openai/models?api-version=...   and   GET /openai/v1/models

Everything that Azure passes through from OpenAI (the completion body, the SSE framing,
validation errors) comes from `OpenAIEmulator`; this subclass changes what Azure changes:
`api-key` or Entra `Bearer` auth, string error codes, `retry-after-ms`, `apim-request-id`,
content-filter results on every response and the empty-choices filter chunk that opens a
stream. Deployments are names the user picks; `add_deployment("prod-4o", "gpt-4o")` adds one.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ._batch_openai import batch_routes
from ._core import PROFILES, Fault, Profile
from ._openai_wire import CHAT_PARAMS, DEFAULT_WAIT, QUOTA, Chat, Invalid, Target
from ._server import json_response
from .openai import OpenAIEmulator

REGION = "East US"
API_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview)?$")
V1_VERSIONS = frozenset({"v1", "preview", "latest"})

ACCESS_DENIED = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide "
    "a valid key for an active subscription and use a correct regional API endpoint for your "
    "resource."
)
MISSING_KEY = (
    "Access denied due to missing subscription key. Make sure to include subscription key when "
    "making requests to an API."
)
NO_DEPLOYMENT = (
    "The API deployment for this resource does not exist. If you created the deployment within "
    "the last 5 minutes, please wait a moment and try again."
)
PROMPT_FILTERED = (
    "The response was filtered due to the prompt triggering Azure OpenAI's content management "
    "policy. Please modify your prompt and retry. To learn more about our content filtering "
    "policies please read our documentation: https://go.microsoft.com/fwlink/?linkid=2198766"
)

_SAFE = {"filtered": False, "severity": "safe"}
SAFE: dict[str, Any] = {c: dict(_SAFE) for c in ("hate", "self_harm", "sexual", "violence")}
PROMPT_SAFE: dict[str, Any] = {**SAFE, "jailbreak": {"filtered": False, "detected": False}}
# What a filtered answer or prompt is annotated with: one category over the threshold.
FLAGGED: dict[str, Any] = {**SAFE, "violence": {"filtered": True, "severity": "medium"}}


def deployable(model: str) -> Profile | None:
    return PROFILES["azure"].get(model) or PROFILES["openai"].get(model)


class AzureEmulator(OpenAIEmulator):
    vendor = "azure"
    base_path = ""  # clients are given the resource root, e.g. https://res.openai.azure.com
    known_params = CHAT_PARAMS | {"data_sources", "user_security_context"}

    def __init__(self, **kw: Any) -> None:
        # deployment name -> the model (a key of PROFILES["azure"]) it serves
        self.deployments: dict[str, str] = {name: name for name in PROFILES["azure"]}
        super().__init__(**kw)

    def add_deployment(self, name: str, model: str) -> None:
        """Deploy `model` as `name`: an Azure profile's, or any OpenAI model's (o4-mini, gpt-5,
        ...), which then follows OpenAI's rules for that model as Azure does."""
        if deployable(model) is None:
            raise ValueError(f"no Azure profile for {model!r}; known: "
                             f"{', '.join({**PROFILES['openai'], **PROFILES['azure']})}")
        self.deployments[name] = model

    def routes(self) -> list[Any]:
        return [
            Route("/openai/deployments/{deployment}/chat/completions", self.deployment_chat,
                  methods=["POST"]),
            Route("/openai/v1/chat/completions", self.chat, methods=["POST"]),
            Route("/openai/models", self.list_models, methods=["GET"]),
            Route("/openai/v1/models", self.list_models, methods=["GET"]),
            # Global batch: files and batches are resource-level (_batch_openai).
            *batch_routes(self, "/openai/v1", "/openai/v1/chat/completions"),
            *batch_routes(self, "/openai", "/openai/v1/chat/completions"),
            Route("/{path:path}", self.invalid_url,
                  methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
        ]

    # -- routes ---------------------------------------------------------------------------

    def version_ok(self, request: Request) -> bool:
        version = request.query_params.get("api-version")
        if request.url.path.startswith("/openai/v1/"):
            return version is None or version in V1_VERSIONS or bool(API_VERSION.match(version))
        return version is not None and bool(API_VERSION.match(version))

    async def deployment_chat(self, request: Request) -> Response:
        self._begin(request)
        body = await self.json_body(request)
        deployment = request.path_params["deployment"]
        if not self.version_ok(request):
            self.log(request, deployment, False, None)
            return self.invalid_route(request)
        # The deployment picks the model; the body's `model` is ignored.
        return await self.serve_chat(request, body, deployment)

    async def chat(self, request: Request) -> Response:
        if not self.version_ok(request):
            self.log(request, None, False, None)
            return self.invalid_route(request)
        return await super().chat(request)

    async def list_models(self, request: Request) -> Response:
        self._begin(request)
        self.log(request, None, False, None)
        if not self.version_ok(request):
            return self.invalid_route(request)
        denied = self.check_auth(request)
        if denied is not None:
            return denied
        data = [{
            "status": "succeeded",
            "capabilities": {"fine_tune": False, "inference": True, "completion": False,
                             "chat_completion": True, "embeddings": False},
            "lifecycle_status": "generally-available",
            "id": key, "created_at": prof.created, "object": "model",
        } for key, prof in PROFILES["azure"].items()]
        return json_response({"data": data, "object": "list"}, headers=self.common_headers(request))

    async def invalid_url(self, request: Request) -> Response:
        self._begin(request)
        self.log(request, None, False, None)
        return self.invalid_route(request)

    def invalid_route(self, request: Request) -> Response:
        # A missing or unknown api-version lands here too, as on the real service.
        return self.error(request, 404, "Resource not found", type=None)

    def resolve_or_refuse(self, request: Request, name: str | None) -> Target:
        if not name:
            raise Invalid(self.error(request, 400, "you must provide a model parameter"))
        model = self.deployments.get(name)
        if model is None:
            raise Invalid(self.error(request, 404, NO_DEPLOYMENT, type=None,
                                     code="DeploymentNotFound"))
        profile = deployable(model)
        assert profile is not None  # add_deployment checked it
        return Target(name, model, "azure", profile)

    def read_chat(self, request: Request, body: Any, name: str | None) -> Chat:
        chat = super().read_chat(request, body, name)
        chat.obfuscate = False  # Azure's chunks carry no obfuscation padding
        return chat

    # -- auth, errors, headers ------------------------------------------------------------

    def check_auth(self, request: Request) -> Response | None:
        key = request.headers.get("api-key") or self.bearer(request)
        if not key:
            return self.error(request, 401, MISSING_KEY, type=None, code="401")
        if self.api_key is not None and key != self.api_key:
            return self.error(request, 401, ACCESS_DENIED, type=None, code="401")
        return None

    def error_body(self, status: int, message: str, type: str | None, param: str | None,
                   code: str | int | None, extra: Mapping[str, Any]) -> dict[str, Any]:
        # Azure's `code` is always a string; `type` and `param` appear only when OpenAI's
        # own error is passed through.
        err: dict[str, Any] = {"code": str(code) if code is not None else str(status),
                               "message": message}
        if param is not None:
            err["param"] = param
        if type is not None:
            err["type"] = type
        err.update(extra)
        return {"error": err}

    def uuid(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def common_headers(self, request: Request) -> dict[str, str]:
        return {"apim-request-id": self.uuid(), "x-request-id": self.uuid(),
                "x-ms-region": REGION, "x-ms-rai-invoked": "true",
                "x-content-type-options": "nosniff"}

    def ratelimit_headers(self, tokens: int, wait: float | None = None) -> dict[str, str]:
        # Azure's limit and reset headers are not dependable; the remaining counts are.
        every = super().ratelimit_headers(tokens, wait)
        return {k: v for k, v in every.items() if "-remaining-" in k}

    def status_fault(self, request: Request, fault: Fault, chat: Chat) -> Response | None:
        k = fault.kind
        if k in DEFAULT_WAIT:
            wait = fault.retry_after if fault.retry_after is not None else DEFAULT_WAIT[k]
            secs = max(1, math.ceil(wait))
            headers = {**self.ratelimit_headers(chat.prompt_tokens, wait),
                       "retry-after": str(secs), "retry-after-ms": str(round(wait * 1000))}
            if k == "429-no-retry":
                # Azure itself never sends x-should-retry; an APIM policy in front can.
                headers["x-should-retry"] = "false"
            version = request.query_params.get("api-version", "v1")
            msg = (f"Requests to the ChatCompletions_Create Operation under Azure OpenAI API "
                   f"version {version} have exceeded token rate limit of your current OpenAI S0 "
                   f"pricing tier. Please retry after {secs} seconds. Please go here: "
                   f"https://aka.ms/oai/quotaincrease if you would like to further increase the "
                   f"default rate limit.")
            return self.error(request, 429, msg, type=None, code="429", headers=headers)
        if k == "quota":
            # Azure bills afterwards and has no credit to run out of; the nearest is OpenAI's
            # insufficient_quota passed through, which waiting does not cure.
            return self.error(request, 429, QUOTA, type="insufficient_quota",
                              code="insufficient_quota")
        if k == "401":
            return self.error(request, 401, ACCESS_DENIED, type=None, code="401")
        if k in ("content-filter", "blocked"):
            return self.error(request, 400, PROMPT_FILTERED, type=None, param="prompt",
                              code="content_filter", extra={
                                  "status": 400,
                                  "innererror": {"code": "ResponsibleAIPolicyViolation",
                                                 "content_filter_result": {
                                                     **FLAGGED,
                                                     "jailbreak": {"filtered": False,
                                                                   "detected": False}}}})
        return super().status_fault(request, fault, chat)

    # -- annotations ----------------------------------------------------------------------

    def annotate_completion(self, body: dict[str, Any], finish: str) -> None:
        body.pop("service_tier", None)
        body["prompt_filter_results"] = [{"prompt_index": 0,
                                          "content_filter_results": PROMPT_SAFE}]
        body["choices"][0]["content_filter_results"] = (
            FLAGGED if finish == "content_filter" else SAFE)

    def stream_preamble(self, chat: Chat) -> list[dict[str, Any]]:
        # Azure opens every stream with the prompt's filter results, before any id or model.
        return [{"choices": [], "created": 0, "id": "", "model": "", "object": "",
                 "prompt_filter_results": [{"prompt_index": 0,
                                            "content_filter_results": PROMPT_SAFE}]}]

    def annotate_chunk(self, chunk: dict[str, Any], delta: Mapping[str, Any],
                       finish: str | None) -> None:
        chunk.pop("service_tier", None)
        if finish == "content_filter":
            results: dict[str, Any] = FLAGGED
        elif delta.get("content"):
            results = SAFE
        else:
            results = {}
        chunk["choices"][0]["content_filter_results"] = results
