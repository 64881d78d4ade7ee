"""Circuit breakers per deployment on the shared backend, with the failure mode applied
when the backend is unreachable."""

from __future__ import annotations

import time

from tako.core.errors import Unavailable
from tako.runtime.backend import Backend, BackendUnreachable
from tako.runtime.events import RuntimeEvents
from tako.runtime.outage import OutageLog
from tako.runtime.settings import RuntimeSettings


class Breakers:
    def __init__(self, backend: Backend, settings: RuntimeSettings, events: RuntimeEvents,
                 outage: OutageLog) -> None:
        self.backend = backend
        self.settings = settings.breaker
        self.probe_ttl_s = max(settings.retry.total_timeout_s, settings.breaker.open_s)
        self.events = events
        self.outage = outage
        self.fail_open = settings.failure_mode == "fail_open"
        self.cache_s = 0.0 if backend.in_process else settings.breaker.closed_cache_s
        self._closed_until: dict[str, float] = {}

    def _unreachable(self, exc: BackendUnreachable) -> Unavailable:
        self.events.rejected("unavailable")
        return Unavailable(
            "Redis, where the gateway keeps circuit breaker state, is unreachable or failing, "
            "so upstream calls are refused (runtime.failure_mode is fail_closed)",
            details={"cause": str(exc)})

    async def acquire(self, deployment: str) -> str:
        """``closed``, ``probe`` or ``open`` (skip this deployment)."""
        if self.cache_s:
            until = self._closed_until.get(deployment)
            if until is not None and time.monotonic() < until:
                return "closed"
        try:
            state = await self.backend.breaker_acquire(deployment, self.settings,
                                                       self.probe_ttl_s)
        except BackendUnreachable as exc:
            if not self.fail_open:
                raise self._unreachable(exc) from exc
            self.outage.warn("treating circuit breakers as closed", str(exc))
            return "closed"
        if state == "probe":
            self.events.breaker_state(deployment, "half_open")
        elif state == "closed" and self.cache_s:
            self._closed_until[deployment] = time.monotonic() + self.cache_s
        return state

    async def record(self, deployment: str, ok: bool, probe: bool) -> str | None:
        if ok and not probe and self.settings.failure_ratio is None:
            return None  # successes only matter to probes and to failure ratios
        try:
            changed = await self.backend.breaker_record(deployment, self.settings, ok, probe)
        except BackendUnreachable as exc:
            self.outage.warn("could not record a circuit breaker outcome", str(exc))
            return None
        if not ok:  # ask the shared state again next time: it may have opened elsewhere
            self._closed_until.pop(deployment, None)
        if changed:
            self.events.breaker_state(deployment, changed)
        return changed

    async def abandon_probe(self, deployment: str) -> None:
        try:
            await self.backend.breaker_abandon_probe(deployment, self.settings)
        except BackendUnreachable as exc:
            self.outage.warn("could not free a circuit breaker probe", str(exc))
