"""The application factory: FastAPI for the service, a pure ASGI front for the hot path.

The same chain serves every configuration: auth middleware, the hot-path shortcut for
``POST /v1/chat/completions``, then FastAPI for the rest. Tracing only changes what the
services were built with (see ``tako.app.services``).
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

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
from tako.app.health import healthz, readiness_endpoint
from tako.app.identity import ChainResolver
from tako.app.ingress.chat import ChatIngress
from tako.app.ingress.embeddings import embeddings_endpoint
from tako.app.ingress.messages import (
    COUNT_TOKENS_PATH,
    MESSAGES_PATH,
    count_tokens_endpoint,
    messages_endpoint,
)
from tako.app.ingress.messages_wire import anthropic_error_response
from tako.app.ingress.responses import Route, responses_routes
from tako.app.metrics import metrics_endpoint
from tako.app.observe import configure_access_log
from tako.app.pipeline import ingress_endpoint
from tako.app.routes_models import model_endpoints
from tako.app.services import Services, build_services
from tako.core.errors import TakoError
from tako.core.protocols import AuthResolver

if TYPE_CHECKING:
    from tako.tools.mcp import McpTools

log = logging.getLogger("tako.app")
CHAT_PATH = "/v1/chat/completions"


def create_app(settings: Settings | None = None, *, resolver: AuthResolver | None = None,
               tracer_provider: TracerProvider | None = None) -> ASGIApp:
    """The gateway as an ASGI app: auth, then the hot-path shortcut, then FastAPI.
    Raises ConfigError for a config with mistakes."""
    settings = settings or load_settings()
    services = build_services(settings, tracer_provider)
    chat = ingress_endpoint(ChatIngress(), services)
    responses = responses_routes(services)  # one store behind POST, GET and DELETE
    hot = {CHAT_PATH: chat, MESSAGES_PATH: messages_endpoint(services)}
    hot.update((path, endpoint) for path, endpoint, methods in responses if methods == ["POST"])
    front = FastPath(create_fastapi_app(services, chat, responses), hot,
                     renderers={MESSAGES_PATH: anthropic_error_response})
    if resolver is None:
        resolver = ChainResolver([StaticKeyResolver(settings.auth.keys),
                                  *services.identity.resolvers])
    return AuthMiddleware(front, resolver=resolver, enabled=settings.auth.enabled)


def create_fastapi_app(services: Services, chat: object,
                       responses: list[Route] | None = None) -> FastAPI:
    settings = services.settings
    # In-flight streams finish within server.graceful_shutdown_s on SIGTERM instead of
    # being cut when the signal arrives.
    AppStatus.disable_automatic_graceful_drain()
    configure_access_log(settings.server.access_log)
    if settings.embedded_default:
        log.warning("running the embedded default: the demo key %s... is accepted; "
                    "give a config file for anything but local use", DEMO_KEY[:8])

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await services.start()
        mcp_tools = await _connect_mcp_tools(services)
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
            await services.aclose()

    app = FastAPI(title="tako", version="0.1.0", lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url=None)
    app.add_exception_handler(TakoError, errors.handle_tako_error)
    app.add_exception_handler(RequestValidationError, errors.handle_request_validation)
    app.add_exception_handler(HTTPException, errors.handle_http_exception)
    app.add_exception_handler(Exception, errors.handle_unexpected)

    list_models, get_model = model_endpoints(services)
    app.add_route(CHAT_PATH, chat, methods=["POST"])  # type: ignore[arg-type]
    app.add_route(MESSAGES_PATH, messages_endpoint(services), methods=["POST"])
    app.add_route(COUNT_TOKENS_PATH, count_tokens_endpoint(services), methods=["POST"])
    for path, endpoint, methods in responses or responses_routes(services):
        app.add_route(path, endpoint, methods=methods)
    app.add_route("/v1/embeddings", embeddings_endpoint(services), methods=["POST"])
    app.add_route("/v1/models", list_models, methods=["GET"])
    app.add_route("/v1/models/{model_id:path}", get_model, methods=["GET"])
    app.add_route("/healthz", healthz, methods=["GET"])
    app.add_route("/readyz", readiness_endpoint(services.readiness()), methods=["GET"])
    app.include_router(admin_router(services.identity.store, admin_key_digest(settings.auth),
                                    services.runtime.spend))
    if settings.telemetry.metrics:
        app.add_route("/metrics", metrics_endpoint, methods=["GET"])
    return app


async def _connect_mcp_tools(services: Services) -> McpTools | None:
    """Opens the configured MCP servers' sessions and registers their tools by name."""
    settings, gateway = services.settings, services.gateway
    if not settings.tools.mcp_servers:
        return None
    from tako.tools.mcp import connect_mcp

    mcp_tools = await connect_mcp(settings.tools.mcp_servers)
    for tool in mcp_tools.tools:
        if gateway.tools.get(tool.name) is not None:
            log.warning("MCP tool %s shadows a tool of the same name", tool.name)
        gateway.add_tool(tool)
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


def app_from_env() -> ASGIApp:
    """Entry point for ``uvicorn --factory tako.app.factory:app_from_env`` (workers)."""
    return create_app()
