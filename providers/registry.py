"""Provider kinds by name: config says ``provider: anthropic`` and gets that adapter.

Each adapter registers the model of the ``options`` it accepts (an ``AdapterOptions``
subclass next to the code that reads them); a deployment's options are validated by it
before the adapter is built, so an option the adapter does not know, or one of the wrong
type, is a ConfigError problem at ``deployments[i].options.<name>``.
"""

from __future__ import annotations

import sys
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
from tako.core.plugins import Plugins
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
    system: str  # the vendor's name in telemetry (gen_ai.system)


PROVIDERS: Plugins[Kind] = Plugins("tako.providers")


def register(kind: str, options: type[AdapterOptions],
             system: str | None = None) -> Callable[[Factory], Factory]:
    """Registers an adapter for ``kind``; ``system`` defaults to the module's
    ``TELEMETRY_SYSTEM``, else the kind."""

    def deco(factory: Factory) -> Factory:
        module = sys.modules.get(factory.__module__)
        named = system or getattr(module, "TELEMETRY_SYSTEM", None) or kind
        PROVIDERS.register(kind, Kind(factory, options, named))
        return factory

    return deco


def kinds() -> list[str]:
    return PROVIDERS.kinds()


def telemetry_system(kind: str) -> str:
    found = PROVIDERS.get(kind)
    return found.system if found is not None else kind


def embedded_deployments(environ: Mapping[str, str]) -> list[dict[str, Any]]:
    """The deployments the embedded default serves: each vendor module's
    ``embedded_deployments(environ)``, which returns none unless its keys are set."""
    found: list[dict[str, Any]] = []
    for module in PROVIDERS.modules():
        offer = getattr(module, "embedded_deployments", None)
        if offer is not None:
            found += offer(environ)
    return found


def _kind(name: str) -> Kind | None:
    return PROVIDERS.get(name)


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
