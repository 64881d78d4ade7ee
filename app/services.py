"""Everything a request may use, built once at start-up and handed to the routes.

Tracing is decided here: with a tracer, deployments, tools and the policy gate are built
already wrapped in their spans; without one, nothing is wrapped. The request path is the
same either way.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Tracer

from tako.app.config import Settings
from tako.app.gateway import Gateway
from tako.app.identity import Identity, build_identity
from tako.app.metrics import RuntimeMetrics
from tako.app.policy_gate import PolicyGate
from tako.app.telemetry import build_tracer_provider
from tako.runtime import Runtime

ReadinessCheck = tuple[Callable[[], Awaitable[bool]], bool]  # (probe, required)


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    gateway: Gateway
    runtime: Runtime
    identity: Identity
    policy: PolicyGate
    tracer_provider: TracerProvider | None
    tracer: Tracer | None
    started_at: int

    def readiness(self) -> dict[str, ReadinessCheck]:
        """Backends whose outage stops this replica from serving make it unready, so the
        load balancer drains it; in a fail_open mode it keeps serving and only reports
        them."""
        runtime = self.settings.runtime
        checks: dict[str, ReadinessCheck] = {
            "redis" if runtime.backend == "redis" else "runtime":
                (self.runtime.ready, runtime.failure_mode == "fail_closed"),
        }
        if self.settings.policy.mode == "opa":
            checks["opa"] = (self.policy.ready, self.settings.policy.fail_mode == "fail_closed")
        return checks

    async def start(self) -> None:
        await self.runtime.start()
        await self.identity.start()

    async def aclose(self) -> None:
        await self.gateway.aclose()
        await self.policy.aclose()
        await self.identity.aclose()
        await self.runtime.aclose()
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()


def tracing_provider(settings: Settings,
                     given: TracerProvider | None = None) -> TracerProvider | None:
    """The tracer provider when tracing is on: the one given, else OTLP export to
    ``telemetry.otlp_endpoint``. None when tracing is off or has nowhere to go."""
    telemetry = settings.telemetry
    if not telemetry.tracing:
        return None
    if given is not None:
        return given
    if not telemetry.otlp_endpoint:
        return None
    return build_tracer_provider(telemetry.service_name, telemetry.otlp_endpoint,
                                 telemetry.sample_ratio)


def build_services(settings: Settings,
                   tracer_provider: TracerProvider | None = None) -> Services:
    """Raises ConfigError (from the gateway) for a config with mistakes."""
    provider = tracing_provider(settings, tracer_provider)
    tracer = provider.get_tracer("tako") if provider is not None else None
    gateway = Gateway.from_settings(settings, tracer)
    return Services(
        settings=settings,
        gateway=gateway,
        runtime=Runtime.from_settings(settings.runtime, events=RuntimeMetrics()),
        identity=build_identity(settings.auth, redis_url=settings.runtime.redis_url,
                                key_prefix=f"{settings.runtime.key_prefix}:{{keys}}"),
        policy=PolicyGate(settings.policy, tracer,
                          max_messages=settings.server.max_messages),
        tracer_provider=provider,
        tracer=tracer,
        started_at=int(time.time()),
    )
