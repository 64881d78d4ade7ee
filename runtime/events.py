"""Hooks the runtime calls so the service can count what happens (metrics, logs)."""

from __future__ import annotations

from typing import Protocol


class RuntimeEvents(Protocol):
    def rejected(self, kind: str) -> None:
        """A request was refused: ``rate_limit``, ``budget`` or ``unavailable``."""

    def unaccounted_spend(self, usd: float) -> None:
        """Spend that could not be recorded because the state store was unreachable."""

    def breaker_state(self, deployment: str, state: str) -> None:
        """A deployment's circuit changed: ``closed``, ``open`` or ``half_open``."""

    def retried(self, deployment: str) -> None:
        """A call to ``deployment`` is being tried again after a transient failure."""


class NoEvents:
    def rejected(self, kind: str) -> None:
        return None

    def unaccounted_spend(self, usd: float) -> None:
        return None

    def breaker_state(self, deployment: str, state: str) -> None:
        return None

    def retried(self, deployment: str) -> None:
        return None
