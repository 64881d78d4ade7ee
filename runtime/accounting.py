"""Admission, reservation and reconciliation against a backend, with the failure mode
applied when the backend is unreachable."""

from __future__ import annotations

from tako.core.errors import QuotaExceeded, RateLimited, Unavailable
from tako.core.types import Principal
from tako.runtime.admission import Admission, Reservation, duration
from tako.runtime.backend import AdmitResult, Backend, BackendUnreachable, CounterDelta, TpmDelta
from tako.runtime.events import RuntimeEvents
from tako.runtime.outage import OutageLog
from tako.runtime.periods import DAY_TTL_S, MONTH_TTL_S
from tako.runtime.plan import (
    NANO_PER_USD,
    UNLIMITED_NANO,
    BudgetItem,
    Plan,
    PlanCache,
    RateItem,
    to_nano,
)
from tako.runtime.settings import RuntimeSettings

_UNIT_NAMES = {"rpm": "requests", "tpm": "tokens"}
_ADJECTIVE = {"day": "daily", "month": "monthly"}


def _headers(rates: list[RateItem], result: AdmitResult) -> dict[str, str]:
    headers: dict[str, str] = {}
    tightest: dict[str, tuple[int, RateItem, float]] = {}
    for item, state in zip(rates, result.rates, strict=True):
        best = tightest.get(item.unit)
        if best is None or state.remaining < best[0]:
            tightest[item.unit] = (state.remaining, item, state.reset_ms)
    for unit, (remaining, item, reset_ms) in tightest.items():
        name = _UNIT_NAMES[unit]
        headers[f"x-ratelimit-limit-{name}"] = str(item.limit)
        headers[f"x-ratelimit-remaining-{name}"] = str(remaining)
        headers[f"x-ratelimit-reset-{name}"] = duration(reset_ms)
    return headers


def _usd(nano: int) -> str:
    usd = nano / NANO_PER_USD
    return f"${usd:,.2f}" if usd >= 1e5 else f"${usd:.6g}"


def _budget_error(item: BudgetItem, spent: int, amount: int) -> QuotaExceeded:
    if item.limit == UNLIMITED_NANO and item.unit == "usd":  # a counter without a budget
        return QuotaExceeded(
            f"this request would reserve {_usd(amount)} ({item.scope} {item.scope_id!r} has "
            f"{_usd(spent)} counted this {item.period}), more than the gateway counts per "
            f"{item.scope} and {item.period} without a budget "
            f"(${UNLIMITED_NANO // NANO_PER_USD:,}); "
            f"ask for fewer tokens (max_tokens)",
            details={"scope": item.scope, "period": item.period, "unit": "usd",
                     "limit": "spend_counter"})
    if item.unit == "usd":
        what = f"{_usd(item.limit)} ({_usd(spent)} spent, {_usd(amount)} needed)"
    else:
        what = f"{item.limit} tokens ({spent} used, {amount} needed)"
    return QuotaExceeded(
        f"budget exhausted: {item.scope} {item.scope_id!r} has a {_ADJECTIVE[item.period]} "
        f"budget of "
        f"{what}",
        details={"scope": item.scope, "period": item.period, "unit": item.unit},
    )


class Accountant:
    def __init__(self, backend: Backend, settings: RuntimeSettings,
                 events: RuntimeEvents, outage: OutageLog) -> None:
        self.backend = backend
        self.settings = settings
        self.events = events
        self.outage = outage
        self.fail_open = settings.failure_mode == "fail_open"
        self.plans = PlanCache(settings)

    def _unreachable(self, exc: BackendUnreachable, what: str) -> Unavailable:
        self.events.rejected("unavailable")
        return Unavailable(
            f"Redis, where the gateway keeps rate limits and budgets, is unreachable or "
            f"failing, so requests are refused (runtime.failure_mode is fail_closed); this "
            f"happened while {what}",
            details={"cause": str(exc)},
        )

    def _check_request_budget(self, admission: Admission | None, plan: Plan, usd: float,
                              tokens: int) -> None:
        held_usd = admission.request_usd if admission else 0.0
        held_tokens = admission.request_tokens if admission else 0
        if plan.request_usd is not None and held_usd + usd > plan.request_usd + 1e-12:
            self.events.rejected("budget")
            raise QuotaExceeded(
                f"budget exhausted: this request may spend ${plan.request_usd:.6g} "
                f"(${held_usd:.6g} used, ${usd:.6g} more needed)",
                details={"scope": "request", "period": "request", "unit": "usd"})
        if plan.request_tokens is not None and held_tokens + tokens > plan.request_tokens:
            self.events.rejected("budget")
            raise QuotaExceeded(
                f"budget exhausted: this request may use {plan.request_tokens} tokens "
                f"({held_tokens} used, {tokens} more needed)",
                details={"scope": "request", "period": "request", "unit": "tok"})

    async def _hold(self, plan: Plan, rates: list[tuple[RateItem, int]], usd: float,
                    tokens: int, tpm_tokens: int) -> tuple[AdmitResult | None, Reservation]:
        nano = to_nano(usd)
        budgets = [(b, nano if b.unit == "usd" else tokens) for b in plan.budgets]
        if not rates and not budgets:
            return None, Reservation(nano, tokens, [], tpm_tokens)
        result = await self.backend.admit(rates, budgets)
        if result.denied == "rate":
            item = rates[result.index][0]
            self.events.rejected("rate_limit")
            retry_s = result.retry_after_ms / 1000
            name = _UNIT_NAMES[item.unit]
            raise RateLimited(
                f"rate limit exceeded: {item.scope} {item.scope_id!r} may send {item.limit} "
                f"{name} per minute; retry in {retry_s:.3g}s",
                retry_after=retry_s,
                headers={f"x-ratelimit-limit-{name}": str(item.limit),
                         f"x-ratelimit-remaining-{name}": "0",
                         f"x-ratelimit-reset-{name}": duration(result.retry_after_ms)})
        if result.denied == "budget":
            budget, amount = budgets[result.index]
            self.events.rejected("budget")
            raise _budget_error(budget, result.spent, amount)
        counters = [(b.base + str(result.period_ids[b.period]), b.unit,
                     DAY_TTL_S if b.period == "day" else MONTH_TTL_S) for b in plan.budgets]
        return result, Reservation(nano, tokens, counters, tpm_tokens)

    async def admit(self, principal: Principal, model: str, est_tokens: int,
                    est_usd: float) -> Admission:
        plan = self.plans.get(principal, model)
        self._check_request_budget(None, plan, est_usd, est_tokens)
        rates = [(r, 1 if r.unit == "rpm" else est_tokens) for r in plan.rates]
        admission = Admission(principal, model, est_tokens, est_usd, plan)
        try:
            result, reservation = await self._hold(plan, rates, est_usd, est_tokens,
                                                   est_tokens)
        except BackendUnreachable as exc:
            if not self.fail_open:
                raise self._unreachable(exc, "admitting a request") from exc
            self.outage.warn("admitting requests without rate limits or budgets "
                             "(runtime.failure_mode is fail_open)", str(exc))
            admission.unaccounted = True
            reservation = Reservation(to_nano(est_usd), est_tokens, [], 0, unaccounted=True)
        else:
            if result is not None:
                admission.headers = _headers([r for r, _ in rates], result)
        admission.first = reservation
        admission.request_usd = est_usd
        admission.request_tokens = est_tokens
        return admission

    async def reserve(self, admission: Admission, est_tokens: int,
                      est_usd: float) -> Reservation:
        """Budget for one more upstream call of an admitted request."""
        self._check_request_budget(admission, admission.plan, est_usd, est_tokens)
        # held before awaiting, so concurrent calls of one request see each other
        admission.request_usd += est_usd
        admission.request_tokens += est_tokens
        try:
            _, reservation = await self._hold(admission.plan, [], est_usd, est_tokens, 0)
        except BackendUnreachable as exc:
            if not self.fail_open:
                self._unhold(admission, est_usd, est_tokens)
                raise self._unreachable(exc, "reserving budget for an upstream call") from exc
            self.outage.warn("calling upstream without a budget reservation "
                             "(runtime.failure_mode is fail_open)", str(exc))
            reservation = Reservation(to_nano(est_usd), est_tokens, [], 0, unaccounted=True)
        except BaseException:
            self._unhold(admission, est_usd, est_tokens)
            raise
        return reservation

    @staticmethod
    def _unhold(admission: Admission, usd: float, tokens: int) -> None:
        admission.request_usd -= usd
        admission.request_tokens -= tokens

    async def settle(self, admission: Admission, reservation: Reservation, usd: float,
                     tokens: int) -> None:
        """Replace the reservation with the actual cost (idempotent)."""
        if reservation.settled:
            return
        reservation.settled = True
        nano = to_nano(usd)
        admission.cost_usd += usd
        admission.request_usd += usd - reservation.usd_nano / NANO_PER_USD
        admission.request_tokens += tokens - reservation.tokens
        if reservation.unaccounted:
            if usd > 0:
                self.events.unaccounted_spend(usd)
            return
        counters = []
        for key, unit, ttl in reservation.counters:
            delta = nano - reservation.usd_nano if unit == "usd" else tokens - reservation.tokens
            if delta:
                counters.append(CounterDelta(key, delta, ttl))
        tpm = [TpmDelta(r.key, r.limit, tokens - reservation.tpm_tokens)
               for r in admission.plan.rates
               if r.unit == "tpm" and tokens != reservation.tpm_tokens]
        if not counters and not tpm:
            return
        try:
            await self.backend.reconcile(counters, tpm)
        except BackendUnreachable as exc:
            lost = max(0.0, (nano - reservation.usd_nano) / NANO_PER_USD)
            self.outage.warn(f"could not record spend; ${lost:.6g} beyond the reservation is "
                             "unaccounted", str(exc))
            if lost > 0:
                self.events.unaccounted_spend(lost)
