"""``openai`` (api.openai.com) and ``http-generic`` (any OpenAI-compatible server:
vLLM, llama.cpp server, LM Studio). Options (``OpenAIOptions``): ``organization``,
``project``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from tako.core.errors import ConfigError
from tako.core.protocols import EmbeddingRequest, Embeddings
from tako.core.specs import DeploymentSpec
from tako.core.types import ChatRequest, ChatResponse, Delta
from tako.providers import embedding_wire, openai_wire
from tako.providers.base import HttpProvider, StreamOutcome
from tako.providers.registry import AdapterOptions, register

OPENAI_BASE_URL = "https://api.openai.com/v1"


class OpenAIOptions(AdapterOptions):
    organization: str | None = None
    project: str | None = None


class OpenAICompatible(HttpProvider):
    def __init__(self, spec: DeploymentSpec, default_base_url: str | None) -> None:
        super().__init__(spec)
        base = (spec.base_url or default_base_url or "").rstrip("/")
        if not base:
            raise ConfigError.at("base_url", f"provider {spec.provider!r} needs a base_url")
        self.url = base + "/chat/completions"
        self.embeddings_url = base + "/embeddings"
        self.headers: dict[str, str] = {}
        key = spec.secret()
        if key:
            self.headers["authorization"] = f"Bearer {key}"
        if spec.options.get("organization"):
            self.headers["openai-organization"] = str(spec.options["organization"])
        if spec.options.get("project"):
            self.headers["openai-project"] = str(spec.options["project"])

    async def chat(self, req: ChatRequest) -> ChatResponse:
        body = openai_wire.request_body(req, self.model, stream=False)
        answer = await self.send_json(self.url, body, self.headers)
        return openai_wire.parse_response(answer, self.id, self.cost)

    async def deltas(self, req: ChatRequest, outcome: StreamOutcome) -> AsyncIterator[Delta]:
        body = openai_wire.request_body(req, self.model, stream=True)
        async with self.open_stream(self.url, body, self.headers) as chunks:
            async for delta in openai_wire.deltas(chunks, self.id, self.cost, outcome):
                yield delta

    async def embed(self, req: EmbeddingRequest) -> Embeddings:
        answer = await self.send_json(self.embeddings_url,
                                      embedding_wire.openai_body(req, self.model), self.headers)
        return embedding_wire.parse_openai(req, answer, self.id, self.cost)



TELEMETRY_SYSTEM = "openai"  # gen_ai.system
# the embedded default serves this vendor when these are all set
EMBEDDED_ENV = ("OPENAI_API_KEY",)


def embedded_deployments(environ: Mapping[str, str]) -> list[dict[str, Any]]:
    """gpt-4o and gpt-4o-mini when OPENAI_API_KEY is set."""
    if not all(environ.get(key) for key in EMBEDDED_ENV):
        return []
    return [{"name": name, "provider": "openai", "model": name,
             "api_key_env": "OPENAI_API_KEY"} for name in ("gpt-4o", "gpt-4o-mini")]

@register("openai", OpenAIOptions)
def _openai(spec: DeploymentSpec) -> OpenAICompatible:
    return OpenAICompatible(spec, OPENAI_BASE_URL)


@register("http-generic", OpenAIOptions)
def _generic(spec: DeploymentSpec) -> OpenAICompatible:
    return OpenAICompatible(spec, None)
