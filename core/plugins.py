"""Kinds by name, found through package entry points: one mechanism for tako's own vendor
adapters and orchestrators and for third-party packages alike.

A package declares, in its metadata, entry points of a group (``tako.providers``,
``tako.orchestrators``) whose name is the kind and whose value is the module that
registers it. The module is imported the first time its kind is asked for, so unused kinds
cost nothing. The installed packages' metadata is read once, on first use.
"""

from __future__ import annotations

import importlib
from functools import cached_property
from importlib.metadata import entry_points
from types import ModuleType
from typing import Generic, TypeVar

T = TypeVar("T")


class Plugins(Generic[T]):
    def __init__(self, group: str) -> None:
        self.group = group
        self._registered: dict[str, T] = {}

    @cached_property
    def _modules(self) -> dict[str, str]:
        """kind -> module, from every installed package's entry points of the group."""
        return {point.name: point.value for point in entry_points(group=self.group)}

    def register(self, kind: str, entry: T) -> None:
        self._registered[kind] = entry

    def get(self, kind: str) -> T | None:
        if kind not in self._registered and kind in self._modules:
            importlib.import_module(self._modules[kind])
        return self._registered.get(kind)

    def kinds(self) -> list[str]:
        return sorted(set(self._modules) | set(self._registered))

    def modules(self) -> list[ModuleType]:
        """Every plugin module of the group, imported, each once, in kind order."""
        names = dict.fromkeys(self._modules[kind] for kind in sorted(self._modules))
        return [importlib.import_module(name) for name in names]
