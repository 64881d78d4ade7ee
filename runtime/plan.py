"""Which counters one admission touches: rate limits and budgets for a principal and model,
with the principal's own overrides merged over the configured ones."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tako.core.types import Principal
from tako.runtime import keys
from tako.runtime.settings import BudgetLimit, RateLimit, RuntimeSettings

NANO_PER_USD = 1_000_000_000
# A counter kept only to report spend: a limit no budget reaches (2**53 nano-USD, exact
# as a Lua number).
UNLIMITED_NANO = 2**53


def to_nano(usd: float) -> int:
    return max(0, round(usd * NANO_PER_USD))


@dataclass(slots=True)
class RateItem:
    key: str
    unit: str  # rpm | tpm
    limit: int
    scope: str
    scope_id: str


@dataclass(slots=True)
class BudgetItem:
    base: str  # the counter is base + period id
    period: str  # day | month
    unit: str  # usd (nano-USD) | tok
    limit: int
    scope: str
    scope_id: str


@dataclass(slots=True)
class Plan:
    rates: list[RateItem] = field(default_factory=list)
    budgets: list[BudgetItem] = field(default_factory=list)
    request_usd: float | None = None
    request_tokens: int | None = None


def _scope_id(principal: Principal, scope: str, model: str) -> str:
    if scope == "key":
        return principal.key_id
    if scope == "user":
        return principal.user_id
    if scope == "tenant":
        return principal.tenant_id
    return model


def _overrides(principal: Principal, name: str, model: type[Any]) -> list[Any]:
    raw = principal.metadata.get(name) if principal.metadata else None
    if not raw:
        return []
    return [r if isinstance(r, model) else model.model_validate(r) for r in raw]


def merged_rate_limits(settings: RuntimeSettings, principal: Principal) -> list[RateLimit]:
    own = _overrides(principal, "rate_limits", RateLimit)
    if not own:
        return settings.rate_limits
    replaced = {r.scope for r in own}
    return [r for r in settings.rate_limits if r.scope not in replaced] + own


def merged_budgets(settings: RuntimeSettings, principal: Principal) -> list[BudgetLimit]:
    own = _overrides(principal, "budgets", BudgetLimit)
    if not own:
        return settings.budgets
    replaced = {(b.scope, b.period) for b in own}
    return [b for b in settings.budgets if (b.scope, b.period) not in replaced] + own


def _min(values: Iterable[Any]) -> Any:
    present = [v for v in values if v is not None]
    return min(present) if present else None


class PlanCache:
    """Plans per (principal, model, overrides); bounded, cleared when full."""

    def __init__(self, settings: RuntimeSettings, size: int = 4096) -> None:
        self.settings = settings
        self.size = size
        self._plans: dict[tuple[Any, ...], Plan] = {}

    def get(self, principal: Principal, model: str) -> Plan:
        meta = principal.metadata
        overrides = (repr(meta.get("rate_limits")), repr(meta.get("budgets"))) if meta else None
        key = (principal.tenant_id, principal.user_id, principal.key_id, model, overrides)
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) >= self.size:
                self._plans.clear()
            plan = self._plans[key] = build_plan(self.settings, principal, model)
        return plan


def build_plan(settings: RuntimeSettings, principal: Principal, model: str) -> Plan:
    prefix = settings.key_prefix
    tenant = principal.tenant_id
    plan = Plan()
    for limit in merged_rate_limits(settings, principal):
        scope_id = _scope_id(principal, limit.scope, model)
        for unit, value in (("rpm", limit.rpm), ("tpm", limit.tpm)):
            if value is not None:
                plan.rates.append(RateItem(keys.rate_key(prefix, tenant, limit.scope, scope_id,
                                                         unit), unit, value, limit.scope,
                                           scope_id))
    request_limits = []
    for budget in merged_budgets(settings, principal):
        if budget.period == "request":
            request_limits.append(budget)
            continue
        scope_id = _scope_id(principal, budget.scope, model)
        if budget.usd is not None:
            plan.budgets.append(BudgetItem(
                keys.budget_base(prefix, tenant, budget.scope, scope_id, "usd"), budget.period,
                "usd", to_nano(budget.usd), budget.scope, scope_id))
        if budget.tokens is not None:
            plan.budgets.append(BudgetItem(
                keys.budget_base(prefix, tenant, budget.scope, scope_id, "tok"), budget.period,
                "tok", budget.tokens, budget.scope, scope_id))
    if settings.track_spend:
        limited = {(b.scope, b.period) for b in plan.budgets if b.unit == "usd"}
        for scope in ("key", "user", "tenant"):
            scope_id = _scope_id(principal, scope, model)
            for period in ("day", "month"):
                if (scope, period) not in limited:
                    plan.budgets.append(BudgetItem(
                        keys.budget_base(prefix, tenant, scope, scope_id, "usd"), period,
                        "usd", UNLIMITED_NANO, scope, scope_id))
    plan.request_usd = _min(b.usd for b in request_limits)
    plan.request_tokens = _min(b.tokens for b in request_limits)
    return plan
