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
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

from tako.core.errors import ConfigError, TakoError, UpstreamError, upstream_error_for
from tako.core.specs import DeploymentSpec
from tako.core.types import ChatChunk, ChatRequest, ChatResponse, ChunkError, Delta
from tako.providers import openai_wire
from tako.providers.base import HttpProvider, open_stream
from tako.providers.registry import AdapterOptions, register

DEFAULT_API_VERSION = "2024-10-21"
# Vendor error codes that say more than the status does.
TELLING_CODES = ("content_filter", "context_length_exceeded")


def deployment_url(base_url: str, deployment: str, api_version: str) -> str:
    base = base_url.rstrip("/")
    if base.endswith("/openai"):
        base = base[: -len("/openai")]
    return (f"{base}/openai/deployments/{quote(deployment, safe='')}/chat/completions"
            f"?api-version={quote(api_version, safe='')}")


def refine(error: TakoError) -> TakoError:
    """Re-map an upstream error using Azure's ``error.code`` (e.g. ``content_filter``)."""
    details = error.details or {}
    body = details.get("body")
    err = body.get("error") if isinstance(body, dict) else None
    code = str(err.get("code") or "") if isinstance(err, dict) else ""
    if code not in TELLING_CODES or "status" not in details:
        return error
    return upstream_error_for(str(details.get("provider")), int(details["status"]), body,
                              retry_after=error.retry_after, code=code)


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

    async def chat(self, req: ChatRequest) -> ChatResponse:
        try:
            answer = await self.post_json(self.url, self.body(req, stream=False),
                                          self.auth_headers())
        except TakoError as exc:
            refined = refine(exc)
            if refined is exc:
                raise
            raise refined from exc
        return openai_wire.parse_response(answer, self.id, self.cost)

    async def stream(self, req: ChatRequest) -> AsyncIterator[ChatChunk]:
        body = self.body(req, stream=True)
        started = False
        try:
            async with open_stream(self.client, self.id, self.url, body,
                                   self.auth_headers()) as response:
                async for item in openai_wire.stream_chunks(response, self.id, self.cost):
                    if isinstance(item, Delta):
                        if not (item.content or item.tool_calls):
                            continue  # role-only and empty deltas: the role rides on the next
                        if not started:
                            item.role, started = "assistant", True
                    elif isinstance(item, ChunkError):
                        if not started:
                            raise item.error
                        item = ChunkError(refine(item.error))
                    yield item
        except TakoError as exc:
            refined = refine(exc)
            if refined is exc:
                raise
            raise refined from exc


@register("azure-openai", AzureOptions)
def _azure(spec: DeploymentSpec) -> AzureOpenAI:
    return AzureOpenAI(spec)
