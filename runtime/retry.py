"""Which failures are worth another try, and how long to wait: full jitter (a uniform
delay up to an exponentially growing cap), never shorter than the upstream's retry-after."""

from __future__ import annotations

import random

from tako.core.errors import InvalidRequest, TakoError, UpstreamRateLimited
from tako.runtime.settings import RetrySettings


def is_transient(error: TakoError) -> bool:
    return error.retryable


def may_fall_back(error: TakoError) -> bool:
    """Another deployment may succeed where this one failed; a bad request never does."""
    return not isinstance(error, InvalidRequest)


def says_unhealthy(error: TakoError) -> bool:
    """A failure that counts against the deployment's circuit: a 5xx, a timeout (504) or
    a connection error (502). A 4xx says the deployment is up, a 429 included; a vendor
    error is judged by the vendor's own status (a 404 passed on as a 502 is still a 404)."""
    details = error.details or {}
    vendor_status = details.get("status")
    status = vendor_status if isinstance(vendor_status, int) else error.status
    return status >= 500


def is_rate_limited(error: TakoError) -> bool:
    """The vendor answered 429: its deployment cools down instead of failing."""
    return isinstance(error, UpstreamRateLimited)


def backoff_s(attempt: int, settings: RetrySettings, retry_after: float | None,
              rng: random.Random) -> float:
    """Delay before retry number ``attempt`` (1 for the first retry)."""
    cap = min(settings.max_delay_s, settings.base_delay_s * (2 ** (attempt - 1)))
    delay = rng.uniform(0.0, cap)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay
