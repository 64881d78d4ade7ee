"""``azure-openai``: OpenAI models deployed on Azure OpenAI (OpenAI's wire format).

Requests go to
``{base_url}/openai/deployments/{deployment}/chat/completions?api-version={api_version}``
where ``base_url`` is the resource endpoint (``https://<resource>.openai.azure.com``).
The deployment's ``model`` is the underlying OpenAI model (``gpt-4o``): it prices the
calls; the Azure deployment name may differ and is set by ``options.deployment``.

Authentication, first match wins:
- ``options.bearer_token_env``: the name of an environment variable holding a Microsoft
  Entra ID access token, read on every call (so a refreshed token is picked up) and sent
  as ``Authorization: Bearer``;
- the API key (``api_key`` / ``api_key_env``), sent as the ``api-key`` header.

Options (``AzureOptions``):
- ``deployment`` (str, default ``model``): the Azure deployment name.
- ``api_version`` (str, default ``2024-10-21``).
- ``bearer_token_env`` (str): see above.
- ``stream_usage`` (bool, default true): ask for usage in streams with
  ``stream_options.include_usage``; turn off for API versions older than 2024-09-01.

Azure's content filter refusals (``code: content_filter``) map to ``ContentFiltered``;
``finish_reason: content_filter`` passes through to the client as OpenAI defines it.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import quote

from tako.core.errors import ConfigError, TakoError, UpstreamError, upstream_error_for
from tako.core.protocols import EmbeddingRequest, Embeddings
from tako.core.specs import DeploymentSpec
from tako.core.types import ChatRequest, ChatResponse, Delta
from tako.providers import embedding_wire, openai_wire
from tako.providers.base import (
    HttpProvider,
    StreamOutcome,
    decode_body,
    retry_after_seconds,
)
from tako.providers.registry import AdapterOptions, register

DEFAULT_API_VERSION = "2024-10-21"
# Vendor error codes that say more than the status does.
TELLING_CODES = ("content_filter", "context_length_exceeded")


def deployment_url(base_url: str, deployment: str, api_version: str,
                   operation: str = "chat/completions") -> str:
    base = base_url.rstrip("/")
    if base.endswith("/openai"):
        base = base[: -len("/openai")]
    return (f"{base}/openai/deployments/{quote(deployment, safe='')}/{operation}"
            f"?api-version={quote(api_version, safe='')}")


def azure_error(provider_id: str, status: int, body: Any,
                retry_after: float | None = None) -> TakoError:
    """An Azure error (an answer or a stream event), mapped with its ``error.code`` when
    that says more than the status (``content_filter``)."""
    err = body.get("error") if isinstance(body, dict) else None
    code = str(err.get("code") or "") if isinstance(err, dict) else ""
    return upstream_error_for(provider_id, status, body, retry_after=retry_after,
                              code=code if code in TELLING_CODES else None)


class AzureOptions(AdapterOptions):
    deployment: str | None = None
    api_version: str | None = None
    bearer_token_env: str | None = None
    stream_usage: bool = True


class AzureOpenAI(HttpProvider):
    def __init__(self, spec: DeploymentSpec) -> None:
        super().__init__(spec)
        if not spec.base_url:
            raise ConfigError.at("base_url", "azure-openai needs a base_url "
                                 "(https://<resource>.openai.azure.com)")
        options = AzureOptions.model_validate(spec.options)
        self.url = deployment_url(spec.base_url, options.deployment or spec.model,
                                  options.api_version or DEFAULT_API_VERSION)
        self.embeddings_url = deployment_url(spec.base_url, options.deployment or spec.model,
                                             options.api_version or DEFAULT_API_VERSION,
                                             "embeddings")
        self.bearer_token_env = options.bearer_token_env
        self.api_key = spec.secret()
        self.stream_usage = options.stream_usage

    def auth_headers(self) -> dict[str, str]:
        if self.bearer_token_env:
            token = os.environ.get(self.bearer_token_env)
            if token:
                return {"authorization": f"Bearer {token}"}
            if not self.api_key:
                raise UpstreamError(
                    f"provider {self.id}: environment variable {self.bearer_token_env} "
                    "holds no Entra ID token",
                    details={"provider": self.id}, code="upstream_auth_error",
                )
        return {"api-key": self.api_key} if self.api_key else {}

    def body(self, req: ChatRequest, *, stream: bool) -> dict[str, Any]:
        body = openai_wire.request_body(req, self.model, stream=stream)
        if stream and not self.stream_usage:
            body.pop("stream_options", None)
        return body

    def _error(self, status: int, headers: Mapping[str, str], raw: bytes) -> TakoError:
        return azure_error(self.id, status, decode_body(raw), retry_after_seconds(headers))

    async def chat(self, req: ChatRequest) -> ChatResponse:
        answer = await self.send_json(self.url, self.body(req, stream=False),
                                      self.auth_headers(), on_error=self._error)
        return openai_wire.parse_response(answer, self.id, self.cost)

    async def deltas(self, req: ChatRequest, outcome: StreamOutcome) -> AsyncIterator[Delta]:
        async with self.open_stream(self.url, self.body(req, stream=True), self.auth_headers(),
                                    on_error=self._error) as chunks:
            async for delta in openai_wire.deltas(chunks, self.id, self.cost, outcome,
                                                  azure_error):
                yield delta

    async def embed(self, req: EmbeddingRequest) -> Embeddings:
        """``POST .../deployments/{deployment}/embeddings``: OpenAI's embeddings format."""
        body = embedding_wire.openai_body(req, self.model)
        answer = await self.send_json(self.embeddings_url, body, self.auth_headers(),
                                      on_error=self._error)
        return embedding_wire.parse_openai(req, answer, self.id, self.cost)



TELEMETRY_SYSTEM = "az.ai.openai"  # gen_ai.system
# the embedded default serves this vendor when these are all set
EMBEDDED_ENV = ("AZURE_OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT")


def embedded_deployments(environ: Mapping[str, str]) -> list[dict[str, Any]]:
    """azure-gpt-4o when AZURE_OPENAI_API_KEY and AZURE_OPENAI_ENDPOINT are set
    (AZURE_OPENAI_DEPLOYMENT and AZURE_OPENAI_API_VERSION refine it)."""
    if not all(environ.get(key) for key in EMBEDDED_ENV):
        return []
    return [{"name": "azure-gpt-4o", "provider": "azure-openai",
             "model": environ.get("AZURE_OPENAI_DEPLOYMENT", "gpt-4o"),
             "base_url": environ["AZURE_OPENAI_ENDPOINT"],
             "api_key_env": "AZURE_OPENAI_API_KEY",
             "options": {"api_version": environ.get("AZURE_OPENAI_API_VERSION",
                                                    "2024-10-21")}}]

@register("azure-openai", AzureOptions)
def _azure(spec: DeploymentSpec) -> AzureOpenAI:
    return AzureOpenAI(spec)
