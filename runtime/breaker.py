"""Circuit breakers and 429 cool-downs per deployment on the shared backend, with the
failure mode applied when the backend is unreachable.

A replica keeps three things locally: until when it trusts a closed circuit
(``closed_cache_s``), until when a circuit stays open or a deployment cools down (exact:
nothing can close a circuit before its probe is due), and the successes it saw since it
last reported them, sent along with the next breaker call instead of one call each."""

from __future__ import annotations

import math
import time

from tako.core.errors import Unavailable
from tako.runtime.backend import Backend, BackendUnreachable
from tako.runtime.events import RuntimeEvents
from tako.runtime.outage import OutageLog
from tako.runtime.settings import RuntimeSettings

SKIPPED = ("open", "cool")


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
        self._skipped_until: dict[str, tuple[str, float]] = {}
        self._unreported: dict[str, int] = {}

    def _unreachable(self, exc: BackendUnreachable) -> Unavailable:
        self.events.rejected("unavailable")
        return Unavailable(
            "Redis, where the gateway keeps circuit breaker state, is unreachable or failing, "
            "so upstream calls are refused (runtime.failure_mode is fail_closed)",
            details={"cause": str(exc)})

    def _cached(self, deployment: str, now: float) -> str | None:
        skipped = self._skipped_until.get(deployment)
        if skipped is not None and now < skipped[1]:
            return skipped[0]
        until = self._closed_until.get(deployment)
        if until is not None and now < until:
            return "closed"
        return None

    async def acquire(self, deployment: str) -> str:
        """``closed``, ``probe``, ``open`` or ``cool`` (skip this deployment)."""
        now = time.monotonic()
        cached = self._cached(deployment, now)
        if cached is not None:
            return cached
        successes = self._unreported.pop(deployment, 0)
        try:
            state, wait_ms = await self.backend.breaker_acquire(
                deployment, self.settings, self.probe_ttl_s, successes)
        except BackendUnreachable as exc:
            if not self.fail_open:
                raise self._unreachable(exc) from exc
            self.outage.warn("treating circuit breakers as closed", str(exc))
            return "closed"
        if state == "probe":
            self.events.breaker_state(deployment, "half_open")
        elif state == "closed" and self.cache_s:
            self._closed_until[deployment] = now + self.cache_s
        elif state in SKIPPED:
            self._skipped_until[deployment] = (state, now + wait_ms / 1000)
        return state

    def wait_s(self, deployment: str) -> float:
        """Seconds until a skipped deployment may be called again (at least 1: a client
        told to retry after 0 seconds would come straight back)."""
        skipped = self._skipped_until.get(deployment)
        left = skipped[1] - time.monotonic() if skipped is not None else 0.0
        return float(max(1, math.ceil(left)))

    async def record(self, deployment: str, ok: bool, probe: bool) -> str | None:
        """One client call's outcome on ``deployment`` (its retries included)."""
        if ok and not probe:
            self._unreported[deployment] = self._unreported.get(deployment, 0) + 1
            return None
        successes = self._unreported.pop(deployment, 0)
        try:
            changed = await self.backend.breaker_record(deployment, self.settings, ok, probe,
                                                        successes)
        except BackendUnreachable as exc:
            self.outage.warn("could not record a circuit breaker outcome", str(exc))
            return None
        self._closed_until.pop(deployment, None)  # it may have opened elsewhere too
        self._skipped_until.pop(deployment, None)
        if changed:
            self.events.breaker_state(deployment, changed)
        return changed

    async def failed_after_success(self, deployment: str) -> str | None:
        """A stream counted a success when it opened, then failed mid-way: the call's one
        outcome becomes the failure (unless its success was reported already)."""
        if self._unreported.get(deployment, 0) > 0:
            self._unreported[deployment] -= 1
        return await self.record(deployment, False, False)

    async def cool_down(self, deployment: str, retry_after_s: float | None) -> None:
        """The vendor answered 429: skip the deployment on every replica for its
        ``Retry-After`` (bounded by the settings)."""
        if not self.settings.cool_down_on_429:
            return
        seconds = retry_after_s if retry_after_s and retry_after_s > 0 else \
            self.settings.rate_limit_cooldown_s
        seconds = min(seconds, self.settings.max_cooldown_s)
        try:
            await self.backend.breaker_cool(deployment, self.settings, seconds)
        except BackendUnreachable as exc:
            self.outage.warn("could not share a rate-limit cool-down", str(exc))
        self._closed_until.pop(deployment, None)
        self._skipped_until[deployment] = ("cool", time.monotonic() + seconds)

    async def abandon_probe(self, deployment: str) -> None:
        try:
            await self.backend.breaker_abandon_probe(deployment, self.settings)
        except BackendUnreachable as exc:
            self.outage.warn("could not free a circuit breaker probe", str(exc))
