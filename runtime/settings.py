"""Runtime configuration: embedded in the gateway's YAML config under ``runtime:``.

Budgets and rate limits listed here apply to every principal. A principal may carry its
own lists in ``metadata["budgets"]`` / ``metadata["rate_limits"]`` (same shapes); an entry
there replaces the configured one with the same scope (and period, for budgets) and adds
to the rest.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator


class BudgetLimit(BaseModel):
    """Spend allowed per ``scope`` in each ``period`` (UTC day, UTC calendar month, or one
    request), in USD and/or tokens."""

    scope: Literal["key", "user", "tenant"]
    period: Literal["request", "day", "month"]
    usd: float | None = Field(default=None, ge=0)
    tokens: int | None = Field(default=None, ge=0)


class RateLimit(BaseModel):
    """Requests and/or tokens per minute. ``model`` scope counts per model within a tenant."""

    scope: Literal["key", "user", "tenant", "model"]
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)


class BreakerSettings(BaseModel):
    """A deployment's circuit opens after ``failure_threshold`` failures within
    ``window_s`` (or, when ``failure_ratio`` is set, once at least ``min_calls`` calls in
    the window failed at that ratio), stays open ``open_s``, then admits one probe.

    On Redis a replica that found a circuit closed trusts that for ``closed_cache_s``
    before asking again, so a healthy request costs no breaker round trip; a circuit
    opened by another replica is therefore seen at most that much later (0: ask on every
    call). The single half-open probe is exact either way."""

    failure_threshold: int = Field(default=5, ge=1)
    failure_ratio: float | None = Field(default=None, gt=0, le=1)
    min_calls: int = Field(default=10, ge=1)
    window_s: float = Field(default=30, gt=0)
    open_s: float = Field(default=30, gt=0)
    closed_cache_s: float = Field(default=0.25, ge=0)


class RetrySettings(BaseModel):
    """Attempts per deployment (first try included), full-jitter backoff, and a deadline
    for the whole fallback cascade of one call."""

    max_attempts: int = Field(default=3, ge=1)
    base_delay_s: float = Field(default=0.2, ge=0)
    max_delay_s: float = Field(default=5, ge=0)
    total_timeout_s: float = Field(default=60, gt=0)


class RuntimeSettings(BaseModel):
    backend: Literal["memory", "redis"] = "memory"
    redis_url: str | None = None
    failure_mode: Literal["fail_closed", "fail_open"] = "fail_closed"
    key_prefix: str = "tako"
    budgets: list[BudgetLimit] = Field(default_factory=list)
    rate_limits: list[RateLimit] = Field(default_factory=list)
    track_spend: bool = True  # count USD per key, user and tenant even without a budget
    breaker: BreakerSettings = Field(default_factory=BreakerSettings)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    redis_timeout_s: float = Field(default=0.5, gt=0)
    redis_max_connections: int = Field(default=64, ge=1)
    redis_pool_timeout_s: float = Field(default=2.0, gt=0)

    @model_validator(mode="after")
    def _redis_needs_url(self) -> RuntimeSettings:
        if self.backend == "redis" and not self.redis_url:
            raise ValueError("runtime.backend is redis but runtime.redis_url is not set")
        return self
