"""Orchestrator kinds by name; a profile (``core.specs.ProfileSpec``) builds one."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from tako.core.errors import InvalidRequest
from tako.core.protocols import Orchestrator
from tako.core.specs import ProfileSpec

Factory = Callable[[ProfileSpec], Orchestrator]

_FACTORIES: dict[str, Factory] = {}
_MODULES = {
    "single": "tako.orchestrators.single",
    "conductor": "tako.orchestrators.conductor",
    "trinity": "tako.orchestrators.trinity",
    "selfcaller": "tako.orchestrators.selfcaller",
    "abmcts": "tako.orchestrators.abmcts",
}


def register(kind: str) -> Callable[[Factory], Factory]:
    def deco(factory: Factory) -> Factory:
        _FACTORIES[kind] = factory
        return factory

    return deco


def kinds() -> list[str]:
    return sorted(set(_MODULES) | set(_FACTORIES))


def build(spec: ProfileSpec) -> Orchestrator:
    factory = _FACTORIES.get(spec.kind)
    if factory is None and spec.kind in _MODULES:
        importlib.import_module(_MODULES[spec.kind])
        factory = _FACTORIES.get(spec.kind)
    if factory is None:
        raise InvalidRequest(
            f"profile {spec.name!r}: unknown orchestrator kind {spec.kind!r}; "
            f"known: {', '.join(kinds())}"
        )
    return factory(spec)
