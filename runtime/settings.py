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
    """When a deployment's circuit opens, and how 429s cool it down.

    Outcomes are counted per client call to a deployment (its retries are one outcome), and
    only failures that say the deployment is unhealthy count: 5xx answers, timeouts and
    connection errors, never a 4xx. The circuit opens once at least ``min_calls`` calls
    within ``window_s`` failed at ``failure_ratio`` or more (resilience4j's rule; with the
    defaults, 5 failures of 10 calls), stays open ``open_s``, then admits one probe across
    all replicas. A config naming only ``failure_threshold`` keeps the older rule: that many
    failures within the window open it.

    A 429 does not count as a failure: it cools the deployment down for the vendor's
    ``Retry-After`` (``rate_limit_cooldown_s`` when it sent none, at most
    ``max_cooldown_s``), shared by every replica; a cooling deployment is skipped
    (``cool_down_on_429: false``: every call reaches the vendor).

    On Redis a replica that found a circuit closed trusts that for ``closed_cache_s``
    before asking again, so a healthy request costs no breaker round trip; a circuit
    opened by another replica is therefore seen at most that much later (0: ask on every
    call). The single half-open probe is exact either way."""

    failure_ratio: float | None = Field(default=0.5, gt=0, le=1)
    min_calls: int = Field(default=10, ge=1)
    failure_threshold: int | None = Field(default=None, ge=1)
    window_s: float = Field(default=30, gt=0)
    open_s: float = Field(default=30, gt=0)
    closed_cache_s: float = Field(default=0.25, ge=0)
    cool_down_on_429: bool = True
    rate_limit_cooldown_s: float = Field(default=1.0, gt=0)
    max_cooldown_s: float = Field(default=60.0, gt=0)

    @model_validator(mode="after")
    def _threshold_alone_counts_failures(self) -> BreakerSettings:
        if self.failure_threshold is not None and "failure_ratio" not in self.model_fields_set:
            self.failure_ratio = None
        if self.failure_ratio is None and self.failure_threshold is None:
            raise ValueError("runtime.breaker needs failure_ratio or failure_threshold")
        return self


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
