"""In-process backend: one replica, exact. Every operation runs without awaiting, so
concurrent asyncio tasks see each one as atomic."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from tako.runtime import gcra
from tako.runtime.backend import AdmitResult, CounterDelta, RateState, TpmDelta
from tako.runtime.periods import DAY_TTL_S, MONTH_TTL_S, day_id, month_id
from tako.runtime.plan import BudgetItem, RateItem
from tako.runtime.settings import BreakerSettings

PRUNE_EVERY_S = 60.0


@dataclass(slots=True)
class _Breaker:
    open_until: float = 0.0
    window_start: float = 0.0
    calls: int = 0
    fails: int = 0
    probe_until: float = 0.0
    cool_until: float = 0.0


class MemoryBackend:
    in_process = True

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._tat: dict[str, float] = {}
        self._counters: dict[str, int] = {}
        self._expires: dict[str, float] = {}
        self._breakers: dict[str, _Breaker] = {}
        self._next_prune = 0.0

    def _prune(self, now_s: float) -> None:
        """Forget what Redis would have expired: full buckets and past periods."""
        if now_s < self._next_prune:
            return
        self._next_prune = now_s + PRUNE_EVERY_S
        now_ms = now_s * 1000.0
        for key in [k for k, tat in self._tat.items() if tat <= now_ms]:
            del self._tat[key]
        for key in [k for k, at in self._expires.items() if at <= now_s]:
            del self._expires[key]
            self._counters.pop(key, None)

    def _add(self, key: str, delta: int, ttl_s: int, now_s: float) -> None:
        self._counters[key] = max(0, self._counters.get(key, 0) + delta)
        self._expires.setdefault(key, now_s + ttl_s)

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    async def ping(self) -> bool:
        return True

    async def admit(self, rates: list[tuple[RateItem, int]],
                    budgets: list[tuple[BudgetItem, int]]) -> AdmitResult:
        now_s = self.clock()
        self._prune(now_s)
        now_ms = now_s * 1000.0
        periods = {"day": day_id(now_s), "month": month_id(now_s)}
        result = AdmitResult(period_ids=periods)
        new_tats: list[float] = []
        for i, (item, cost) in enumerate(rates):
            ok, tat, retry_ms = gcra.step(self._tat.get(item.key), now_ms, item.limit, cost)
            if not ok:
                result.denied, result.index, result.retry_after_ms = "rate", i, retry_ms
                return result
            new_tats.append(tat)
        for i, (budget, amount) in enumerate(budgets):
            spent = self._counters.get(budget.base + str(periods[budget.period]), 0)
            if spent + amount > budget.limit or (amount == 0 and spent >= budget.limit):
                result.denied, result.index, result.spent = "budget", i, spent
                return result
        for (item, _), tat in zip(rates, new_tats, strict=True):
            self._tat[item.key] = tat
            result.rates.append(RateState(gcra.remaining(tat, now_ms, item.limit), tat - now_ms))
        for budget, amount in budgets:
            ttl = DAY_TTL_S if budget.period == "day" else MONTH_TTL_S
            self._add(budget.base + str(periods[budget.period]), amount, ttl, now_s)
        return result

    async def reconcile(self, counters: list[CounterDelta], tpm: list[TpmDelta]) -> None:
        now_s = self.clock()
        for c in counters:
            self._add(c.key, c.delta, c.ttl_s, now_s)
        now_ms = now_s * 1000.0
        for t in tpm:
            tat = gcra.adjust(self._tat.get(t.key), now_ms, t.limit, t.tokens)
            if tat is not None:
                self._tat[t.key] = tat

    async def spend(self, base: str, period: str) -> int:
        now_s = self.clock()
        pid = day_id(now_s) if period == "day" else month_id(now_s)
        return self._counters.get(base + str(pid), 0)

    async def breaker_acquire(self, deployment: str, settings: BreakerSettings,
                              probe_ttl_s: float, successes: int = 0) -> tuple[str, float]:
        b = self._breakers.setdefault(deployment, _Breaker()) if successes else \
            self._breakers.get(deployment)
        if b is None:
            return "closed", 0.0
        now = self.clock()
        if b.open_until == 0.0:
            self._count(b, settings, now, successes, 0)
            if now < b.cool_until:
                return "cool", (b.cool_until - now) * 1000
            return "closed", 0.0
        if now < b.open_until:
            return "open", (b.open_until - now) * 1000
        if now < b.probe_until:
            return "open", 0.0
        b.probe_until = now + probe_ttl_s
        return "probe", 0.0

    async def breaker_abandon_probe(self, deployment: str, settings: BreakerSettings) -> None:
        b = self._breakers.get(deployment)
        if b is not None:
            b.probe_until = 0.0

    async def breaker_cool(self, deployment: str, settings: BreakerSettings,
                           seconds: float) -> None:
        b = self._breakers.setdefault(deployment, _Breaker())
        b.cool_until = max(b.cool_until, self.clock() + seconds)

    async def breaker_record(self, deployment: str, settings: BreakerSettings, ok: bool,
                             probe: bool, successes: int = 0) -> str | None:
        b = self._breakers.setdefault(deployment, _Breaker())
        now = self.clock()
        if probe:
            return _end_probe(b, settings, ok, now)
        if b.open_until:
            return None
        self._count(b, settings, now, successes + 1, 0 if ok else 1)
        if not ok and _trips(b.calls, b.fails, settings):
            b.open_until = now + settings.open_s
            b.calls = b.fails = 0
            return "open"
        return None

    @staticmethod
    def _count(b: _Breaker, settings: BreakerSettings, now: float, calls: int,
               fails: int) -> None:
        if now - b.window_start >= settings.window_s:
            b.window_start, b.calls, b.fails = now, 0, 0
        b.calls += calls
        b.fails += fails


def _end_probe(b: _Breaker, settings: BreakerSettings, ok: bool, now: float) -> str:
    b.probe_until = 0.0
    b.calls = b.fails = 0
    b.window_start = now
    if ok:
        b.open_until = 0.0
        return "closed"
    b.open_until = now + settings.open_s
    return "open"


def _trips(calls: int, fails: int, settings: BreakerSettings) -> bool:
    if settings.failure_ratio is not None:
        return calls >= settings.min_calls and fails >= settings.failure_ratio * calls
    assert settings.failure_threshold is not None
    return fails >= settings.failure_threshold
