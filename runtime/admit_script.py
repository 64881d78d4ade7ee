"""admit.lua: rate limits and budget reservations in one EVALSHA."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from tako.runtime.backend import AdmitResult, RateState
from tako.runtime.lua import LuaScript
from tako.runtime.periods import DAY_TTL_S, MONTH_TTL_S
from tako.runtime.plan import BudgetItem, RateItem

SCRIPT = LuaScript("admit")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def admit(client: Redis, rates: list[tuple[RateItem, int]],
                budgets: list[tuple[BudgetItem, int]]) -> AdmitResult:
    keys = [r.key for r, _ in rates] + [b.base for b, _ in budgets]
    args: list[Any] = [len(rates)]
    for item, cost in rates:
        args += [item.limit, cost]
    for budget, amount in budgets:
        ttl = DAY_TTL_S if budget.period == "day" else MONTH_TTL_S
        args += [budget.period, budget.limit, amount, ttl]
    reply = await SCRIPT.run(client, keys, args)
    status, index, detail = int(reply[0]), int(reply[1]), _text(reply[2])
    result = AdmitResult(period_ids={"day": int(reply[3]), "month": int(reply[4])})
    if status == 1:
        result.denied, result.index, result.retry_after_ms = "rate", index, float(detail)
    elif status == 2:
        result.denied, result.index, result.spent = "budget", index, int(float(detail))
    else:
        tail = reply[5:]
        result.rates = [RateState(int(tail[i]), float(_text(tail[i + 1])))
                        for i in range(0, len(tail), 2)]
    return result
