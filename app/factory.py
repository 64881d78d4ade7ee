"""The FastAPI application factory."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from app import errors
from app.auth import AuthMiddleware, StaticKeyResolver
from app.config import DEMO_KEY, Settings, load_settings
from app.gateway import Gateway
from app.health import healthz, readyz
from app.routes_chat import chat_completions
from app.routes_models import get_model, list_models
from core.errors import TakoError
from core.protocols import AuthResolver
from runtime import Runtime

log = logging.getLogger("tako.app")


def create_app(settings: Settings | None = None, *,
               resolver: AuthResolver | None = None) -> FastAPI:
    settings = settings or load_settings()
    gateway = Gateway.from_settings(settings)
    runtime = Runtime.from_settings(settings.runtime)
    static_keys = StaticKeyResolver(settings.auth.keys)
    if settings.embedded_default:
        log.warning("running the embedded default: the demo key %r is accepted; "
                    "give a config file for anything but local use", DEMO_KEY[:8] + "...")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await gateway.aclose()
            await runtime.aclose()

    app = FastAPI(title="tako", version="0.1.0", lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url=None)
    app.state.settings = settings
    app.state.gateway = gateway
    app.state.runtime = runtime
    app.state.started_at = int(time.time())
    readiness: dict[str, Callable[[], Awaitable[bool]]] = {"runtime": runtime.ready}
    app.state.readiness = readiness

    app.add_exception_handler(TakoError, errors.handle_tako_error)
    app.add_exception_handler(RequestValidationError, errors.handle_request_validation)
    app.add_exception_handler(HTTPException, errors.handle_http_exception)
    app.add_exception_handler(Exception, errors.handle_unexpected)

    app.add_route("/v1/chat/completions", chat_completions, methods=["POST"])
    app.add_route("/v1/models", list_models, methods=["GET"])
    app.add_route("/v1/models/{model_id:path}", get_model, methods=["GET"])
    app.add_route("/healthz", healthz, methods=["GET"])
    app.add_route("/readyz", readyz, methods=["GET"])

    app.add_middleware(AuthMiddleware, resolver=resolver or static_keys,
                       enabled=settings.auth.enabled)
    return app


def app_from_env() -> Any:
    """Entry point for ``uvicorn --factory app.factory:app_from_env`` (used by workers)."""
    return create_app()
