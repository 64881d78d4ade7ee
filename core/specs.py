"""Declarative specs handed from config to the packages that build things from them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class Price(BaseModel):
    """USD per million tokens."""

    input: float = 0.0
    output: float = 0.0
    cached_input: float | None = None

    def cost(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> float:
        cached = min(cached_tokens, prompt_tokens)
        cached_rate = self.input if self.cached_input is None else self.cached_input
        return (
            (prompt_tokens - cached) * self.input
            + cached * cached_rate
            + completion_tokens * self.output
        ) / 1_000_000


STRUCTURED_OUTPUT_PROVIDERS = frozenset(
    {"openai", "azure-openai", "vertex", "mistral", "ollama", "http-generic"})
"""Provider kinds whose APIs take ``response_format`` with a JSON schema."""


class DeploymentSpec(BaseModel):
    """One upstream model: which adapter, which vendor model, where and how to reach it.

    ``options`` holds vendor-specific settings (api_version, region, project, location,
    default_max_tokens, ...); each adapter declares the ones it accepts in its options
    model (``EchoOptions``, ``AnthropicOptions``, ...), and any other is a config error.

    ``structured_outputs``: whether orchestrators ask this deployment for their control
    messages (plans, router choices, scores, verdicts) with a JSON-schema
    ``response_format``; unset, on for the kinds in ``STRUCTURED_OUTPUT_PROVIDERS``.
    ``fold_system_prompt``: the model drops system messages (Gemma's chat format), so
    orchestrators fold their role prompts into the first user turn.
    ``embeddings``: whether the model serves ``/v1/embeddings``; unset, guessed from its
    name (``text-embedding-3-small``, ``mistral-embed``, ``amazon.titan-embed-text-v2:0``).
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    provider: str
    model: str
    base_url: str | None = None
    api_key: SecretStr | None = None
    api_key_env: str | None = None
    timeout_s: float = 60.0
    connect_timeout_s: float = 5.0
    max_connections: int = 256
    headers: dict[str, str] = Field(default_factory=dict)
    price: Price | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    structured_outputs: bool | None = None
    fold_system_prompt: bool = False
    embeddings: bool | None = None

    def capabilities(self) -> list[str]:
        """What the model serves: ``chat``, ``embeddings`` or both."""
        named = "embed" in self.model.lower()
        serves = named if self.embeddings is None else self.embeddings
        return (["chat"] if not named else []) + (["embeddings"] if serves else [])

    def takes_structured_outputs(self) -> bool:
        if self.structured_outputs is not None:
            return self.structured_outputs
        return self.provider in STRUCTURED_OUTPUT_PROVIDERS

    def secret(self, environ: dict[str, str] | None = None) -> str | None:
        """The API key: inline value first, else the named environment variable."""
        if self.api_key is not None:
            return self.api_key.get_secret_value()
        if self.api_key_env:
            import os

            return (environ or os.environ).get(self.api_key_env)
        return None


class ProfileSpec(BaseModel):
    """A named orchestrator profile: ``model: <name>`` runs orchestrator ``kind`` with
    ``params`` (workers, roles, router, verifier, limits), parsed by the kind's params
    model (``SingleParams``, ``ConductorParams``, ...)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    kind: str
    description: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
