"""Azure OpenAI: OpenAI's Chat Completions behind a resource URL, a deployment and an api-version.

Two routes, chosen by `endpoint.route`:

    "deployments"  {root}/openai/deployments/{deployment}/chat/completions?api-version=V
    "v1"           {root}/openai/v1/chat/completions, with body `model` = the deployment

(`"default"` picks v1 when the base URL already ends in `/openai/v1`.) Auth is
`api-key: <key>` (`endpoint.auth` "api-key", the default) or `Authorization: Bearer <Entra
token>` ("bearer"). The model the user names is the deployment's name; its price comes from
the model `endpoint.deployments` maps it to. Azure annotates replies with content-filter
results, opens streams with an empty-choices chunk and gives every error a string `code`.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

import httpx

from .._config import AZURE_DEFAULT_API_VERSION
from .._types import ParsedReply, Request
from ..errors import BadRequestError, ConfigurationError, ContentFilterError, VendorError
from ._base import Endpoint, model_hint, parse_should_retry, request_id_of
from .openai import OpenAIAdapter

ROUTES = ("deployments", "v1")
# Before this api-version Azure knew neither max_completion_tokens nor stream_options.
FIRST_MODERN_VERSION = "2024-09-01"


def filtered_categories(results: Any) -> list[str]:
    """The categories a content-filter result says were filtered."""
    if not isinstance(results, dict):
        return []
    return sorted(name for name, r in results.items()
                  if isinstance(r, dict) and r.get("filtered") is True)


def content_filter_of(data: dict[str, Any], choice: dict[str, Any]) -> dict[str, Any]:
    """Azure's prompt and completion annotations, plus which categories tripped."""
    listed = data.get("prompt_filter_results")
    prompt = [p.get("content_filter_results") for p in listed if isinstance(p, dict)] \
        if isinstance(listed, list) else []
    completion = choice.get("content_filter_results")
    if not prompt and completion is None:
        return {}
    tripped = set(filtered_categories(completion))
    for p in prompt:
        tripped.update(filtered_categories(p))
    return {"prompt": prompt[0] if len(prompt) == 1 else prompt, "completion": completion,
            "filtered": sorted(tripped)}


class AzureAdapter(OpenAIAdapter):
    request_id_headers = ("apim-request-id", "x-request-id")
    kind: ClassVar[str] = "azure"
    key_variables = ("AZURE_OPENAI_API_KEY",)
    price_provider = "openai"
    vendor_label = "azure"

    # -- where and how --------------------------------------------------------------------

    @staticmethod
    def route(endpoint: Endpoint) -> str:
        if endpoint.route in ROUTES:
            return endpoint.route
        if endpoint.route == "default":
            return "v1" if endpoint.base_url.rstrip("/").endswith("/openai/v1") else "deployments"
        raise ConfigurationError(f"Azure endpoint {endpoint.name!r} has route {endpoint.route!r}; "
                                 f"use 'deployments' or 'v1'")

    @staticmethod
    def root(endpoint: Endpoint) -> str:
        """The resource URL, whether the base URL was given with /openai or /openai/v1 or not."""
        base = endpoint.base_url.rstrip("/")
        for suffix in ("/openai/v1", "/openai"):
            if base.endswith(suffix):
                return base[: -len(suffix)]
        return base

    @staticmethod
    def api_version(endpoint: Endpoint) -> str:
        return endpoint.api_version or AZURE_DEFAULT_API_VERSION

    def auth_headers(self, endpoint: Endpoint) -> dict[str, str]:
        if endpoint.key is None:
            return {}
        if endpoint.auth == "bearer":
            return {"Authorization": f"Bearer {endpoint.key.reveal()}"}
        if endpoint.auth in ("api-key", "default"):
            return {"api-key": endpoint.key.reveal()}
        raise ConfigurationError(f"Azure endpoint {endpoint.name!r} has auth {endpoint.auth!r}; "
                                 f"use 'api-key' (a resource key) or 'bearer' (an Entra token)")

    def chat_url(self, model: str, endpoint: Endpoint) -> str:
        root = self.root(endpoint)
        if self.route(endpoint) == "v1":
            return f"{root}/openai/v1/chat/completions"
        version = quote(self.api_version(endpoint), safe="")
        return f"{root}/openai/deployments/{quote(model, safe='')}/chat/completions?api-version={version}"

    def body(self, request: Request, model: str, endpoint: Endpoint, *, stream: bool) -> dict[str, Any]:
        body = super().body(request, model, endpoint, stream=stream)
        if self.route(endpoint) == "deployments" and \
                self.api_version(endpoint)[:10] < FIRST_MODERN_VERSION:
            if "max_completion_tokens" in body:
                body["max_tokens"] = body.pop("max_completion_tokens")
            body.pop("stream_options", None)  # usage is then estimated
        return body

    def pricing_model(self, model: str, endpoint: Endpoint) -> str:
        return endpoint.deployments.get(model, model)

    def catalogue_model(self, model: str, endpoint: Endpoint) -> str:
        return endpoint.deployments.get(model, model)  # a deployment serves this model

    # -- replies --------------------------------------------------------------------------

    def parse_reply(self, response: httpx.Response, endpoint: Endpoint) -> ParsedReply:
        parsed = super().parse_reply(response, endpoint)
        return replace(parsed, request_id=request_id_of(response, "apim-request-id", "x-request-id"))

    def reply_extra(self, data: dict[str, Any], choice: dict[str, Any]) -> dict[str, Any]:
        extra = super().reply_extra(data, choice)
        annotations = content_filter_of(data, choice)
        if annotations:
            extra["content_filter"] = annotations
        return extra

    # -- errors ---------------------------------------------------------------------------

    def map_error(self, response: httpx.Response, endpoint: Endpoint) -> VendorError:
        err = super().map_error(response, endpoint)
        err.request_id = request_id_of(response, "apim-request-id", "x-request-id")
        detail = _error_detail(response)
        raw_inner = detail.get("innererror")
        inner: dict[str, Any] = raw_inner if isinstance(raw_inner, dict) else {}
        message = str(detail.get("message") or response.reason_phrase or "error")
        if err.code == "DeploymentNotFound":
            deployment = _deployment_of(response)
            return self._again(BadRequestError, err, response, (
                f"no deployment {deployment!r} on {self.root(endpoint)}: check the deployment "
                f"name (the name you gave the deployment in Azure AI Foundry, not the model's "
                f"name). {message}{model_hint(response, endpoint)}"))
        if inner.get("code") == "ResponsibleAIPolicyViolation" or err.code == "content_filter":
            tripped = filtered_categories(inner.get("content_filter_result"))
            why = f" (filtered: {', '.join(tripped)})" if tripped else ""
            return self._again(ContentFilterError, err, response,
                               f"Azure's content filter refused the prompt{why}. {message}")
        return err

    @staticmethod
    def _again(cls: type[VendorError], err: VendorError, response: httpx.Response,
               message: str) -> VendorError:
        return cls(message, vendor=err.vendor, status=err.status, request_id=err.request_id,
                   retry_after=err.retry_after, body=response.content[:2000], code=err.code,
                   error_type=err.error_type, should_retry=parse_should_retry(response.headers))

    # -- models ---------------------------------------------------------------------------

    def list_models_request(self, endpoint: Endpoint) -> httpx.Request:
        root = self.root(endpoint)
        if self.route(endpoint) == "v1":
            url = f"{root}/openai/v1/models"
        else:
            url = f"{root}/openai/models?api-version={quote(self.api_version(endpoint), safe='')}"
        return httpx.Request("GET", url, headers=self.auth_headers(endpoint))


def _error_detail(response: httpx.Response) -> dict[str, Any]:
    try:
        data = json.loads(response.content)
    except (ValueError, RecursionError):
        return {}
    err = data.get("error") if isinstance(data, dict) else None
    return err if isinstance(err, dict) else {}


def _deployment_of(response: httpx.Response) -> str:
    """The deployment a failed request named: in the URL path, or (v1 route) the body."""
    try:
        request = response.request
    except RuntimeError:
        return "?"
    parts = urlsplit(str(request.url)).path.split("/")
    if "deployments" in parts and parts.index("deployments") + 1 < len(parts):
        return parts[parts.index("deployments") + 1]
    try:
        model = json.loads(request.content).get("model")
    except (ValueError, AttributeError, httpx.RequestNotRead, RecursionError):
        model = None
    return str(model) if model else "?"
