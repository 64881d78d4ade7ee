"""Provider kinds by name: config says ``provider: anthropic`` and gets that adapter.

Each adapter registers the model of the ``options`` it accepts (an ``AdapterOptions``
subclass next to the code that reads them); a deployment's options are validated by it
before the adapter is built, so an option the adapter does not know, or one of the wrong
type, is a ConfigError problem at ``deployments[i].options.<name>``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)

from tako.core.errors import ConfigError, join_path
from tako.core.protocols import LlmProvider
from tako.core.specs import DeploymentSpec

Factory = Callable[[DeploymentSpec], LlmProvider]


class AdapterOptions(BaseModel):
    """Base of the adapters' options models: every option not declared is refused."""

    model_config = ConfigDict(extra="forbid")


def either(description: str) -> WrapValidator:
    """For a union type: one problem saying what is expected, instead of one per member."""

    def validate(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError:
            raise ValueError(f"must be {description}") from None

    return WrapValidator(validate)


@dataclass(frozen=True, slots=True)
class Kind:
    factory: Factory
    options: type[AdapterOptions]


_KINDS: dict[str, Kind] = {}

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


def register(kind: str, options: type[AdapterOptions]) -> Callable[[Factory], Factory]:
    def deco(factory: Factory) -> Factory:
        _KINDS[kind] = Kind(factory, options)
        return factory

    return deco


def kinds() -> list[str]:
    return sorted(set(_MODULES) | set(_KINDS))


def _kind(name: str) -> Kind | None:
    if name not in _KINDS and name in _MODULES:
        importlib.import_module(_MODULES[name])
    return _KINDS.get(name)


def build(spec: DeploymentSpec, path: str = "") -> LlmProvider:
    """The adapter for ``spec``; ConfigError names each problem below ``path``
    (``deployments[0]``): an unknown provider kind, options the adapter does not accept."""
    kind = _kind(spec.provider)
    if kind is None:
        raise ConfigError.at(join_path(path, "provider"),
                             f"unknown provider kind {spec.provider!r}; known: "
                             f"{', '.join(kinds())}")
    try:
        kind.options.model_validate(spec.options)
    except ValidationError as error:
        accepted = ", ".join(kind.options.model_fields) or "none"
        raise ConfigError.from_validation(
            error, join_path(path, "options"),
            unknown=f"unknown option of provider {spec.provider!r}; accepted: {accepted}",
        ) from None
    try:
        return kind.factory(spec)
    except ConfigError as error:
        raise error.under(path) from None


def build_provider(spec: DeploymentSpec | Mapping[str, Any]) -> LlmProvider:
    """A provider from a deployment spec or its config mapping (``name``, ``provider``,
    ``model``, ``options``...), with no budget, retry or breaker around it."""
    if not isinstance(spec, DeploymentSpec):
        try:
            spec = DeploymentSpec.model_validate(dict(spec))
        except ValidationError as error:
            raise ConfigError.from_validation(error) from None
    return build(spec)
