"""The runtime the service builds once from its settings and uses on every request."""

from __future__ import annotations

import random

from tako.core.errors import InvalidRequest
from tako.core.protocols import LlmProvider
from tako.core.types import Principal
from tako.runtime import keys
from tako.runtime.accounting import Accountant
from tako.runtime.admission import Admission
from tako.runtime.alias_provider import AliasProvider
from tako.runtime.backend import Backend, BackendUnreachable
from tako.runtime.breaker import Breakers
from tako.runtime.events import NoEvents, RuntimeEvents
from tako.runtime.memory import MemoryBackend
from tako.runtime.outage import OutageLog
from tako.runtime.plan import NANO_PER_USD
from tako.runtime.settings import RuntimeSettings


class Runtime:
    def __init__(self, settings: RuntimeSettings, backend: Backend,
                 events: RuntimeEvents | None = None, rng: random.Random | None = None) -> None:
        self.settings = settings
        self.backend = backend
        self.events: RuntimeEvents = events or NoEvents()
        self.rng = rng or random.Random()
        outage = OutageLog()
        self.accountant = Accountant(backend, settings, self.events, outage)
        self.breakers = Breakers(backend, settings, self.events, outage)

    @classmethod
    def from_settings(cls, settings: RuntimeSettings,
                      events: RuntimeEvents | None = None) -> Runtime:
        if settings.backend == "redis":
            from tako.runtime.redis_backend import RedisBackend

            assert settings.redis_url is not None
            backend: Backend = RedisBackend(
                settings.redis_url, settings.key_prefix, settings.redis_timeout_s,
                settings.redis_max_connections, settings.redis_pool_timeout_s)
        else:
            backend = MemoryBackend()
        return cls(settings, backend, events)

    async def start(self) -> None:
        """Connect and load the scripts. An unreachable Redis does not stop the service
        from starting: requests then follow the failure mode and /readyz reports it."""
        try:
            await self.backend.start()
        except BackendUnreachable as exc:
            self.accountant.outage.warn("starting without it; scripts load on first use",
                                        str(exc))

    async def aclose(self) -> None:
        await self.backend.aclose()

    async def ready(self) -> bool:
        return await self.backend.ping()

    async def admit(self, principal: Principal, model: str, est_tokens: int,
                    est_cost_usd: float) -> Admission:
        """Rate limits and the first call's budget reservation, in one backend round trip.
        Raises RateLimited, QuotaExceeded, or Unavailable (backend down, fail_closed)."""
        return await self.accountant.admit(principal, model, est_tokens, est_cost_usd)

    def alias_provider(self, admission: Admission, alias: str, providers: list[LlmProvider],
              weights: list[float] | None = None) -> AliasProvider:
        return AliasProvider(admission, alias, providers, weights, self.accountant,
                               self.breakers, self.settings.retry, self.events, self.rng)

    async def release(self, admission: Admission) -> None:
        """Give back the admission's reservation of a request that called no upstream."""
        first = admission.take_first()
        if first is not None:
            await self.accountant.settle(admission, first, 0.0, 0)

    async def spend(self, scope: str, scope_id: str, period: str, tenant_id: str) -> float:
        """USD counted against ``scope``/``scope_id`` in the current UTC ``period``
        (reservations in flight included)."""
        if period not in ("day", "month"):
            raise InvalidRequest(f"spend is kept per day or month, not per {period!r}")
        base = keys.budget_base(self.settings.key_prefix, tenant_id, scope, scope_id, "usd")
        return await self.backend.spend(base, period) / NANO_PER_USD
