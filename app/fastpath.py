"""A pure ASGI shortcut for the hot route.

``POST /v1/chat/completions`` (and each other ingress given) is dispatched straight to its
endpoint, skipping the framework's routing and middleware layers (they cost more than the
endpoint's own work on a fast upstream) in every configuration, tracing on or off; every
other path goes through FastAPI. Errors render exactly as the framework's handlers do, in
the route's own error shape when it has one (``renderers``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from tako.app.errors import error_response
from tako.core.errors import InternalError, InvalidRequest, TakoError

log = logging.getLogger("tako.app")

Endpoint = Callable[[Request], Awaitable[Response]]
ErrorRenderer = Callable[[TakoError], Response]


def require_json(request: Request) -> None:
    """The body must be declared JSON, as OpenAI requires (400 otherwise)."""
    declared = request.headers.get("content-type", "")
    if declared.partition(";")[0].strip().lower() != "application/json":
        raise InvalidRequest(f"unsupported content type {declared[:100]!r}: this endpoint "
                             f"accepts only 'application/json' bodies",
                             param="content-type", code="unsupported_content_type")


class FastPath:
    def __init__(self, app: ASGIApp, routes: dict[str, Endpoint],
                 renderers: dict[str, ErrorRenderer] | None = None) -> None:
        self.app = app
        self.routes = routes
        self.renderers = renderers or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            endpoint = self.routes.get(scope["path"])
            if endpoint is not None:
                render = self.renderers.get(scope["path"], error_response)
                try:
                    request = Request(scope, receive)
                    require_json(request)
                    response = await endpoint(request)
                except TakoError as exc:
                    response = render(exc)
                except ClientDisconnect:  # left mid-body: a 499 in the record, no answer
                    return
                except Exception:
                    log.exception("unhandled error on POST %s", scope["path"])
                    response = render(
                        InternalError("the gateway failed to handle the request"))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
