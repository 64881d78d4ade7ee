"""The application factory: FastAPI for the service, a pure ASGI front for the hot path."""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from opentelemetry.sdk.trace import TracerProvider
from sse_starlette.sse import AppStatus
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp

from tako.app import errors
from tako.app.admin import admin_key_digest, admin_router
from tako.app.auth import AuthMiddleware, StaticKeyResolver
from tako.app.config import DEMO_KEY, Settings, load_settings
from tako.app.fastpath import FastPath
from tako.app.gateway import Gateway
from tako.app.health import healthz, readyz
from tako.app.identity import ChainResolver, build_identity
from tako.app.metrics import RuntimeMetrics, metrics_endpoint
from tako.app.observe import configure_access_log
from tako.app.policy_gate import PolicyGate
from tako.app.routes_chat import chat_completions
from tako.app.routes_models import get_model, list_models
from tako.app.telemetry import TracedProvider, TracedTool, build_tracer_provider
from tako.core.errors import TakoError
from tako.core.protocols import AuthResolver
from tako.runtime import Runtime

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

    from tako.tools.mcp import McpTools

log = logging.getLogger("tako.app")


def create_app(settings: Settings | None = None, *, resolver: AuthResolver | None = None,
               tracer_provider: TracerProvider | None = None) -> ASGIApp:
    """The gateway as an ASGI app: auth, then the hot-path shortcut, then FastAPI.

    With tracing on, the hot route runs inside FastAPI so its instrumentation wraps it."""
    settings = settings or load_settings()
    tracing = settings.telemetry.tracing and (
        tracer_provider is not None or bool(settings.telemetry.otlp_endpoint))
    if tracing and tracer_provider is None:
        tracer_provider = build_tracer_provider(settings.telemetry.service_name,
                                                settings.telemetry.otlp_endpoint)
    app = create_fastapi_app(settings, tracer_provider if tracing else None)
    front: ASGIApp = app
    if not tracing:
        front = FastPath(app, app, {"/v1/chat/completions": chat_completions})
    if resolver is None:
        static_keys = StaticKeyResolver(settings.auth.keys)
        resolver = ChainResolver([static_keys, *app.state.identity.resolvers])
    return AuthMiddleware(front, resolver=resolver, enabled=settings.auth.enabled)


def create_fastapi_app(settings: Settings,
                       tracer_provider: TracerProvider | None = None) -> FastAPI:
    gateway = Gateway.from_settings(settings)
    # In-flight streams finish within server.graceful_shutdown_s on SIGTERM instead of
    # being cut when the signal arrives.
    AppStatus.disable_automatic_graceful_drain()
    runtime = Runtime.from_settings(settings.runtime, events=RuntimeMetrics())
    identity = build_identity(settings.auth, redis_url=settings.runtime.redis_url,
                              key_prefix=f"{settings.runtime.key_prefix}:{{keys}}")
    configure_access_log(settings.server.access_log)
    if settings.embedded_default:
        log.warning("running the embedded default: the demo key %s... is accepted; "
                    "give a config file for anything but local use", DEMO_KEY[:8])

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        await identity.start()
        mcp_tools = await _connect_mcp_tools(settings, gateway, app.state.tracer)
        # Long-lived objects built at start-up leave the collector's view, and young
        # collections run less often: per-request garbage is short-lived.
        gc.collect()
        gc.freeze()
        gc.set_threshold(20_000, 20, 20)
        try:
            yield
        finally:
            if mcp_tools is not None:
                await mcp_tools.aclose()
            await gateway.aclose()
            await app.state.policy.aclose()
            await identity.aclose()
            await runtime.aclose()
            if tracer_provider is not None:
                tracer_provider.shutdown()

    app = FastAPI(title="tako", version="0.1.0", lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url=None)
    app.state.settings = settings
    app.state.gateway = gateway
    app.state.runtime = runtime
    app.state.identity = identity
    app.state.started_at = int(time.time())
    app.state.tracer = None
    app.state.policy = PolicyGate(settings.policy)
    # Backends whose outage stops this replica from serving make it unready, so the load
    # balancer drains it; in a fail_open mode it keeps serving and only reports them.
    checks: dict[str, tuple[Callable[[], Awaitable[bool]], bool]] = {
        "redis" if settings.runtime.backend == "redis" else "runtime":
            (runtime.ready, settings.runtime.failure_mode == "fail_closed"),
    }
    if settings.policy.mode == "opa":
        checks["opa"] = (app.state.policy.ready, settings.policy.fail_mode == "fail_closed")
    app.state.readiness = checks
    if tracer_provider is not None:
        _instrument(app, gateway, tracer_provider)

    app.add_exception_handler(TakoError, errors.handle_tako_error)
    app.add_exception_handler(RequestValidationError, errors.handle_request_validation)
    app.add_exception_handler(HTTPException, errors.handle_http_exception)
    app.add_exception_handler(Exception, errors.handle_unexpected)

    app.add_route("/v1/chat/completions", chat_completions, methods=["POST"])
    app.add_route("/v1/models", list_models, methods=["GET"])
    app.add_route("/v1/models/{model_id:path}", get_model, methods=["GET"])
    app.add_route("/healthz", healthz, methods=["GET"])
    app.add_route("/readyz", readyz, methods=["GET"])
    app.include_router(admin_router(identity.store, admin_key_digest(settings.auth),
                                    runtime.spend))
    if settings.telemetry.metrics:
        app.add_route("/metrics", metrics_endpoint, methods=["GET"])
    return app


async def _connect_mcp_tools(settings: Settings, gateway: Gateway,
                             tracer: Tracer | None) -> McpTools | None:
    """Opens the configured MCP servers' sessions and registers their tools by name."""
    if not settings.tools.mcp_servers:
        return None
    from tako.tools.mcp import connect_mcp

    mcp_tools = await connect_mcp(settings.tools.mcp_servers)
    for tool in mcp_tools.tools:
        if gateway.tools.get(tool.name) is not None:
            log.warning("MCP tool %s shadows a tool of the same name", tool.name)
        gateway.tools.add(tool if tracer is None else TracedTool(tool, tracer))
    log.info("MCP tools ready: %s", ", ".join(mcp_tools.names()) or "none")
    served = set(mcp_tools.names())
    for server in settings.tools.mcp_servers:
        missing = [n for n in server.declared_tool_names() if n not in served]
        if missing:
            log.warning("MCP server %s does not serve the tools its config lists: %s",
                        server.name, ", ".join(missing))
    unserved = sorted(gateway.unverified_tools - served)
    if unserved:
        log.warning("profiles name tools that no server serves: %s", ", ".join(unserved))
    return mcp_tools


def _instrument(app: FastAPI, gateway: Gateway, tracer_provider: TracerProvider) -> None:
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    tracer = tracer_provider.get_tracer("tako")
    app.state.tracer = tracer
    app.state.policy.tracer = tracer
    kinds = {d.name: d.provider for d in gateway.settings.deployments}
    for name, provider in list(gateway.deployments.items()):
        client: Any = getattr(provider, "client", None)
        if client is not None:  # propagates traceparent to the vendor
            HTTPXClientInstrumentor.instrument_client(client, tracer_provider=tracer_provider)
            provider.direct_json = False  # type: ignore[attr-defined]
        gateway.deployments[name] = TracedProvider(provider, kinds[name], tracer)
    gateway.tools = type(gateway.tools)([TracedTool(gateway.tools.get(n), tracer)  # type: ignore[arg-type]
                                         for n in gateway.tools.names()])
    FastAPIInstrumentor.instrument_app(app, tracer_provider=tracer_provider,
                                       excluded_urls="healthz,readyz,metrics")


def app_from_env() -> Any:
    """Entry point for ``uvicorn --factory app.factory:app_from_env`` (used by workers)."""
    return create_app()
