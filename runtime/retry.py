"""Which failures are worth another try, and how long to wait: full jitter (a uniform
delay up to an exponentially growing cap), never shorter than the upstream's retry-after."""

from __future__ import annotations

import random

from tako.core.errors import InvalidRequest, TakoError, UpstreamError
from tako.runtime.settings import RetrySettings


def is_transient(error: TakoError) -> bool:
    return error.retryable


def may_fall_back(error: TakoError) -> bool:
    """Another deployment may succeed where this one failed; a bad request never does."""
    return not isinstance(error, InvalidRequest)


def counts_against_breaker(error: TakoError) -> bool:
    return error.retryable or (isinstance(error, UpstreamError)
                               and not isinstance(error, InvalidRequest))


def backoff_s(attempt: int, settings: RetrySettings, retry_after: float | None,
              rng: random.Random) -> float:
    """Delay before retry number ``attempt`` (1 for the first retry)."""
    cap = min(settings.max_delay_s, settings.base_delay_s * (2 ** (attempt - 1)))
    delay = rng.uniform(0.0, cap)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay
