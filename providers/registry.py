"""Provider kinds by name: config says ``provider: anthropic`` and gets that adapter."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from core.errors import InvalidRequest
from core.protocols import LlmProvider
from core.specs import DeploymentSpec

Factory = Callable[[DeploymentSpec], LlmProvider]

_FACTORIES: dict[str, Factory] = {}

# kind -> module that registers it; imported on first use so unused vendors cost nothing.
_MODULES: dict[str, str] = {
    "echo": "providers.echo",
    "openai": "providers.openai",
    "http-generic": "providers.openai",
    "azure-openai": "providers.azure",
    "anthropic": "providers.anthropic",
    "bedrock": "providers.bedrock",
    "vertex": "providers.vertex",
    "mistral": "providers.mistral",
    "ollama": "providers.ollama",
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
