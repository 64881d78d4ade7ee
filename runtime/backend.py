"""What a state backend (memory or Redis) does; the stack above is shared by both."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from tako.runtime.plan import BudgetItem, RateItem
from tako.runtime.settings import BreakerSettings


class BackendUnreachable(Exception):
    """The shared state store did not answer (connection refused, timeout)."""


@dataclass(slots=True)
class RateState:
    remaining: int
    reset_ms: float


@dataclass(slots=True)
class AdmitResult:
    """``denied`` is ``None``, ``"rate"`` or ``"budget"``; ``index`` points into the
    rate or budget list given; ``retry_after_ms`` is set for rate denials and ``spent``
    for budget denials. ``period_ids`` maps ``day``/``month`` to the ids counted in."""

    denied: str | None = None
    index: int = -1
    retry_after_ms: float = 0.0
    spent: int = 0
    period_ids: dict[str, int] = field(default_factory=dict)
    rates: list[RateState] = field(default_factory=list)


@dataclass(slots=True)
class TpmDelta:
    key: str
    limit: int
    tokens: int


@dataclass(slots=True)
class CounterDelta:
    key: str
    delta: int
    ttl_s: int


class Backend(Protocol):
    #: operations complete without yielding to the event loop (nothing to cancel)
    in_process: bool

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...

    async def ping(self) -> bool: ...

    async def admit(self, rates: list[tuple[RateItem, int]],
                    budgets: list[tuple[BudgetItem, int]]) -> AdmitResult:
        """All checks first, then all writes, atomically: a denial changes nothing."""
        ...

    async def reconcile(self, counters: list[CounterDelta], tpm: list[TpmDelta]) -> None: ...

    async def spend(self, base: str, period: str) -> int: ...

    async def breaker_acquire(self, deployment: str, settings: BreakerSettings,
                              probe_ttl_s: float, successes: int = 0) -> tuple[str, float]:
        """``(state, ms)``: ``closed`` (go), ``probe`` (go: the one half-open trial),
        ``open`` (skip; ms until the probe is due, 0 while one is in flight) or ``cool``
        (skip: rate limited by its vendor; ms until the cool-down ends). ``successes``
        reports the calls this replica saw succeed since it last reported."""
        ...

    async def breaker_record(self, deployment: str, settings: BreakerSettings, ok: bool,
                             probe: bool, successes: int = 0) -> str | None:
        """Record an outcome (and ``successes`` not reported yet); returns the new state
        when this outcome changed it."""
        ...

    async def breaker_cool(self, deployment: str, settings: BreakerSettings,
                           seconds: float) -> None:
        """Skip the deployment on every replica for ``seconds`` (its vendor answered 429)."""
        ...

    async def breaker_abandon_probe(self, deployment: str, settings: BreakerSettings) -> None:
        """Free the probe slot of a probe that ended without an outcome."""
        ...
