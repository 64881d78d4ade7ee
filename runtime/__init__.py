"""tako runtime: budgets, rate limits, circuit breakers, retry and fallback, with the
same semantics in memory (one process) and on Redis (every replica)."""

from runtime.admission import Admission
from runtime.events import NoEvents, RuntimeEvents
from runtime.guard import GuardedProvider
from runtime.memory import MemoryStateStore
from runtime.settings import (
    BreakerSettings,
    BudgetLimit,
    RateLimit,
    RetrySettings,
    RuntimeSettings,
)
from runtime.stack import Runtime, estimate_request

__all__ = [
    "Admission",
    "BreakerSettings",
    "BudgetLimit",
    "GuardedProvider",
    "MemoryStateStore",
    "NoEvents",
    "RateLimit",
    "RetrySettings",
    "Runtime",
    "RuntimeEvents",
    "RuntimeSettings",
    "estimate_request",
]
