"""Orchestrator kinds by name; a profile (``core.specs.ProfileSpec``) builds one.

A kind registers its params model with its factory: a profile's params are parsed by that
model first (unknown params, wrong types and unknown names are ConfigError problems at
their paths), and the factory builds the orchestrator from the parsed params.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, ValidationError, ValidationInfo

from tako.core.errors import ConfigError
from tako.core.plugins import Plugins
from tako.core.protocols import Orchestrator
from tako.core.specs import ProfileSpec
from tako.orchestrators.params import (
    KnownNames,
    Params,
    invalid,
    parse_params,
    validate,
    validate_under,
)

F = TypeVar("F", bound=Callable[..., Any])
Factory = Callable[[Any], Orchestrator]


@dataclass(frozen=True, slots=True)
class Kind:
    params: type[Params]
    factory: Factory


ORCHESTRATORS: Plugins[Kind] = Plugins("tako.orchestrators")


def register(kind: str, params: type[Params]) -> Callable[[F], F]:
    """Registers ``factory(params) -> Orchestrator`` (a class or a function) for ``kind``;
    it is given ``params`` models."""

    def deco(factory: F) -> F:
        ORCHESTRATORS.register(kind, Kind(params, factory))
        return factory

    return deco


def kinds() -> list[str]:
    return ORCHESTRATORS.kinds()


def _kind(name: str) -> Kind | None:
    return ORCHESTRATORS.get(name)


@dataclass(frozen=True, slots=True)
class Profile:
    """A kind with its parsed params; ``build`` makes the orchestrator."""

    kind: str
    params: Params

    def build(self) -> Orchestrator:
        kind = _kind(self.kind)
        assert kind is not None
        return kind.factory(self.params)  # type: ignore[no-any-return]


class _Shape(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str
    params: dict[str, Any] = Field(default_factory=dict)


def _profile(value: Any, info: ValidationInfo) -> Profile:
    if isinstance(value, Profile):
        return value
    if not isinstance(value, dict):
        raise ValueError("a profile is a mapping {kind, params}")
    shape = validate_under(_Shape, value, info)
    kind = _kind(shape.kind)
    if kind is None:
        raise invalid(f"unknown orchestrator kind {shape.kind!r}; known: {', '.join(kinds())}",
                      shape.kind, "kind")
    params = parse_params(kind.params, shape.params, info, f"{shape.kind} param", "params")
    return Profile(shape.kind, params)


NestedProfile = Annotated[Profile, PlainValidator(_profile)]
"""A profile inside params (``{kind, params}``), parsed recursively."""


def parse(spec: ProfileSpec, names: KnownNames | None = None, path: str = "") -> Profile:
    """The profile with its params parsed; ConfigError lists every problem, at ``path``
    (``profiles[2]``) followed by ``kind`` or ``params...``. With ``names`` the aliases
    and tools it names must be known."""
    data = {"kind": spec.kind, "params": spec.params}
    context = names.context() if names is not None else None
    try:
        return validate(NestedProfile, data, context)  # type: ignore[no-any-return]
    except ValidationError as error:
        raise ConfigError.from_validation(error, path) from None


def build(spec: ProfileSpec, names: KnownNames | None = None, path: str = "") -> Orchestrator:
    return parse(spec, names, path).build()
