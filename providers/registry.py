"""Provider kinds by name: config says ``provider: anthropic`` and gets that adapter."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from tako.core.errors import InvalidRequest
from tako.core.protocols import LlmProvider
from tako.core.specs import DeploymentSpec

Factory = Callable[[DeploymentSpec], LlmProvider]

_FACTORIES: dict[str, Factory] = {}

# kind -> module that registers it; imported on first use so unused vendors cost nothing.
_MODULES: dict[str, str] = {
    "echo": "tako.providers.echo",
    "openai": "tako.providers.openai",
    "http-generic": "tako.providers.openai",
    "azure-openai": "tako.providers.azure",
    "anthropic": "tako.providers.anthropic",
    "bedrock": "tako.providers.bedrock",
    "vertex": "tako.providers.vertex",
    "mistral": "tako.providers.mistral",
    "ollama": "tako.providers.ollama",
}


def register(kind: str) -> Callable[[Factory], Factory]:
    def deco(factory: Factory) -> Factory:
        _FACTORIES[kind] = factory
        return factory

    return deco


def kinds() -> list[str]:
    return sorted(set(_MODULES) | set(_FACTORIES))


def build(spec: DeploymentSpec) -> LlmProvider:
    factory = _FACTORIES.get(spec.provider)
    if factory is None and spec.provider in _MODULES:
        importlib.import_module(_MODULES[spec.provider])
        factory = _FACTORIES.get(spec.provider)
    if factory is None:
        raise InvalidRequest(
            f"deployment {spec.name!r}: unknown provider kind {spec.provider!r}; "
            f"known: {', '.join(kinds())}"
        )
    return factory(spec)


def build_provider(spec: DeploymentSpec | Mapping[str, Any]) -> LlmProvider:
    """A provider from a deployment spec or its config mapping (``name``, ``provider``,
    ``model``, ``options``...), with no budget, retry or breaker around it."""
    if not isinstance(spec, DeploymentSpec):
        spec = DeploymentSpec.model_validate(dict(spec))
    return build(spec)
