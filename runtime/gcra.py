"""GCRA over one minute: a burst of ``limit`` units is allowed at once, then one unit per
``60000 / limit`` ms. The theoretical arrival time (TAT) is the only state. admit.lua
implements the same arithmetic on the Redis server's clock."""

from __future__ import annotations

PERIOD_MS = 60_000.0
EPSILON_MS = 0.001


def step(tat: float | None, now_ms: float, limit: int, cost: int) -> tuple[bool, float, float]:
    """Returns (allowed, new TAT when allowed else the current one, retry-after ms)."""
    interval = PERIOD_MS / limit
    base = now_ms if tat is None or tat < now_ms else tat
    new_tat = base + min(cost, limit) * interval
    if new_tat - now_ms > PERIOD_MS + EPSILON_MS:
        return False, base, new_tat - now_ms - PERIOD_MS
    return True, new_tat, 0.0


def remaining(tat: float, now_ms: float, limit: int) -> int:
    interval = PERIOD_MS / limit
    used = max(0.0, tat - now_ms)
    return max(0, int((PERIOD_MS - used) / interval + 1e-6))


def adjust(tat: float | None, now_ms: float, limit: int, tokens: int) -> float | None:
    """Move a token bucket's TAT by ``tokens`` (negative: give back, never below now)."""
    if tat is None and tokens <= 0:
        return None
    base = now_ms if tat is None or tat < now_ms else tat
    return max(now_ms, base + tokens * (PERIOD_MS / limit))
