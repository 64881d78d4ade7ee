"""tako runtime: budgets, rate limits, circuit breakers, retry and fallback, with the
same semantics in memory (one process) and on Redis (every replica).

One request::

    admission = await runtime.admit(principal, req.model, est_tokens, est_usd)
    try:                                                   # RateLimited / QuotaExceeded /
        provider = runtime.alias_provider(admission, alias, deployments)   # Unavailable above
        ... orchestrator calls provider.chat() / provider.stream() ...
        response headers: admission.headers (x-ratelimit-*), overhead from
        admission.upstream_seconds, the answering deployment from provider.answered_by
    finally:
        await runtime.release(admission)  # no-op once an upstream call took the reservation

Decisions an operator may want to know:

- Rate limits are GCRA over one minute: a burst of ``rpm`` requests is allowed at once,
  then one request per ``60/rpm`` seconds. ``tpm`` is charged the admission's token
  estimate and corrected to the tokens actually used when each call settles. The
  ``x-ratelimit-*`` headers report the tightest limit of each kind; ``reset`` is the
  time until that bucket is full again.
- Budgets hold the estimate of each upstream call before it starts and replace it with
  the actual cost after (an upstream call that fails is not billed; a non-streamed call
  cancelled keeps its reservation; a stream closed before its end is charged what it
  streamed, never more than its reservation). The upstream is sent the output cap that
  was reserved for when the client set none, and a stream past it is cut ("length").
  Periods are UTC days and calendar months on the Redis server's clock. USD is counted
  in integer nano-dollars so concurrent reservations add up exactly.
- A principal's ``metadata["rate_limits"]`` / ``metadata["budgets"]`` entries replace
  configured entries of the same scope (and period) and add to the others.
- Circuit breakers count one outcome per client call (retries included) and only
  failures that say the deployment is unhealthy (5xx, timeouts, connection errors; never a
  4xx); they open on a failure rate over a minimum of calls. A 429 cools the deployment
  down on every replica for its ``Retry-After``. While open or cooling, the deployment is
  skipped; after ``open_s`` exactly one probe call is let through across all replicas. A replica
  trusts a closed circuit for ``breaker.closed_cache_s`` (0.25 s), so a healthy plain
  request costs two Redis round trips (admit, reconcile).
- Redis unreachable: ``fail_closed`` answers 503 naming Redis; ``fail_open`` admits
  without limits, reports the spend through ``RuntimeEvents.unaccounted_spend`` and warns
  on ``tako.runtime`` (at most every 5 s). Connections and scripts recover on their own.
- On Redis Cluster every admission script touches one slot (the tenant's hash tag); the
  budget counters' period suffix is added inside the script, within that slot.
"""

from tako.runtime.admission import Admission
from tako.runtime.alias_provider import AliasProvider
from tako.runtime.events import NoEvents, RuntimeEvents
from tako.runtime.runtime import Runtime
from tako.runtime.settings import (
    BreakerSettings,
    BudgetLimit,
    RateLimit,
    RetrySettings,
    RuntimeSettings,
)

__all__ = [
    "Admission",
    "BreakerSettings",
    "BudgetLimit",
    "AliasProvider",
    "NoEvents",
    "RateLimit",
    "RetrySettings",
    "Runtime",
    "RuntimeEvents",
    "RuntimeSettings",
]
