"""Prometheus metrics, correct with several uvicorn workers (multiprocess mode).

With ``PROMETHEUS_MULTIPROC_DIR`` set (``tako serve --workers N`` sets it), every worker
writes its samples there and ``/metrics`` aggregates them. Labels stay bounded: ``model``
takes only configured model names, ``deployment`` only configured deployments.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.requests import Request
from starlette.responses import Response

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)

REQUESTS = Counter("tako_requests",
                   "Requests by model, status, target kind and api (the ingress: chat, "
                   "responses, messages, embeddings)", ["model", "status", "kind", "api"])
DURATION = Histogram("tako_request_duration_seconds", "Chat request duration",
                     ["kind"], buckets=LATENCY_BUCKETS)
OVERHEAD = Histogram("tako_gateway_overhead_seconds",
                     "Gateway time minus upstream time per request", buckets=OVERHEAD_BUCKETS)
TTFT = Histogram("tako_time_to_first_token_seconds", "Time to the first streamed token",
                 ["model"], buckets=LATENCY_BUCKETS)
TOKENS = Counter("tako_tokens", "Tokens by model and direction (input/output)",
                 ["model", "direction"])
COST = Counter("tako_cost_usd", "Spend in USD by model", ["model"])
REJECTIONS = Counter("tako_rejections", "Rejected requests by reason", ["reason"])
BREAKER = Gauge("tako_breaker_state", "Circuit state: 0 closed, 1 half-open, 2 open",
                ["deployment"], multiprocess_mode="max")
IN_FLIGHT = Gauge("tako_in_flight_requests", "Requests being served",
                  multiprocess_mode="livesum")
UNACCOUNTED = Counter("tako_unaccounted_spend_usd",
                      "Spend admitted while the shared state was unreachable (fail_open)")
RETRIES = Counter("tako_upstream_retries", "Upstream retries by deployment", ["deployment"])

BREAKER_STATES = {"closed": 0, "half_open": 1, "half-open": 1, "open": 2}

# Rejections the app itself decides. Rate-limit, budget and unavailable rejections are
# counted by the runtime through RuntimeMetrics when it refuses; counting their errors here
# too would count each twice (and would count a vendor's own 429 as a gateway rejection).
REJECTION_REASONS = {
    "policy_denied": "policy",
    "authentication_error": "auth",
}


def rejection_reason(error_type: str) -> str | None:
    return REJECTION_REASONS.get(error_type)


class RuntimeMetrics:
    """The runtime's event hooks, recorded as Prometheus samples."""

    def rejected(self, kind: str) -> None:
        REJECTIONS.labels(kind).inc()

    def unaccounted_spend(self, usd: float) -> None:
        UNACCOUNTED.inc(usd)

    def breaker_state(self, deployment: str, state: str) -> None:
        BREAKER.labels(deployment).set(BREAKER_STATES.get(state, 0))

    def retried(self, deployment: str) -> None:
        RETRIES.labels(deployment).inc()


async def metrics_endpoint(request: Request) -> Response:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        payload = generate_latest(registry)
    else:
        from prometheus_client import REGISTRY

        payload = generate_latest(REGISTRY)
    return Response(payload, media_type=CONTENT_TYPE_LATEST)
