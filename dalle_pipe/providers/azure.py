"""The azure provider: Azure OpenAI deployments through the official SDK's ``openai.AzureOpenAI``.

It is the openai provider (same one-attempt calls, same error classification and
key scrubbing) with another client:

- Endpoint: the ``endpoint`` argument (``--base-url``), else ``AZURE_OPENAI_ENDPOINT``,
  e.g. ``https://my-resource.openai.azure.com``. Key: ``AZURE_OPENAI_API_KEY``, sent in
  the ``api-key`` header. Neither ever comes from a file a pull request can change.
- Deployment and API version come from the recipe (``provider: {name: azure,
  deployment: ..., api_version: ...}``): they are not secrets. The API version defaults
  to ``OPENAI_API_VERSION``, else DEFAULT_API_VERSION.
- Requests go to ``{endpoint}/openai/deployments/{deployment}/images/generations``
  (and ``/images/edits``) with ``?api-version=...``.
- The Images API only: Azure deployments serve no variations, and the Responses route is
  not offered here (``validate`` refuses ``api: responses`` with azure).
"""

from __future__ import annotations

import os
from typing import Protocol

from ..errors import UsageError
from .base import BadRequest, ImageRequest, ImageResponse
from .endpoint import check_endpoint
from .openai import OpenAIProvider, http_client

DEFAULT_API_VERSION = "2025-04-01-preview"


class AzureSettings(Protocol):
    """What the provider reads of the recipe's provider setting (plain values: ports take no recipe)."""

    @property
    def deployment(self) -> str | None: ...

    @property
    def api_version(self) -> str | None: ...


class AzureProvider(OpenAIProvider):
    """Azure OpenAI: one deployment of an image model."""

    name = "azure"

    def __init__(
        self, config: AzureSettings, *, endpoint: str | None = None, api_key: str | None = None
    ) -> None:
        key = (api_key or os.environ.get("AZURE_OPENAI_API_KEY") or "").strip()
        if not key:
            raise UsageError(
                "no API key: AZURE_OPENAI_API_KEY is not set",
                hint="export AZURE_OPENAI_API_KEY=..., or use --offline to render locally",
            )
        url = (endpoint or os.environ.get("AZURE_OPENAI_ENDPOINT") or "").strip()
        if not url:
            raise UsageError(
                "no Azure endpoint: AZURE_OPENAI_ENDPOINT is not set",
                hint="export AZURE_OPENAI_ENDPOINT=https://<resource>.openai.azure.com, or pass --base-url",
            )
        check_endpoint(url, source="--base-url" if endpoint else "AZURE_OPENAI_ENDPOINT")
        deployment = (config.deployment or "").strip()
        if not deployment:
            raise UsageError(
                "provider azure needs a deployment",
                hint="write provider: {name: azure, deployment: <your image model's deployment>}",
            )
        self.deployment = deployment
        self.api_version = config.api_version or os.environ.get("OPENAI_API_VERSION") or DEFAULT_API_VERSION
        self._setup(
            key,
            lambda oa, k: oa.AzureOpenAI(
                azure_endpoint=url,
                azure_deployment=deployment,
                api_version=self.api_version,
                api_key=k,
                max_retries=0,
                http_client=http_client(oa),
            ),
        )

    def send(self, request: ImageRequest) -> ImageResponse:
        if request.api == "responses":
            raise BadRequest(
                "the Responses route is not available with provider azure; use api: images",
                code="unsupported",
            )
        if request.kind == "variation":
            raise BadRequest("Azure OpenAI deployments serve no variations; use an edit", code="unsupported")
        return super().send(request)
