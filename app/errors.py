"""Render every failure as OpenAI's error body with the matching status."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from tako.core.errors import InternalError, InvalidRequest, TakoError

log = logging.getLogger("tako.app")


MAX_MESSAGE_CHARS = 1000  # error messages may echo client input: never all of it


def clipped(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def error_response(exc: TakoError, headers: dict[str, str] | None = None) -> Response:
    merged = exc.response_headers()
    if headers:
        merged = {**headers, **merged}
    body = exc.to_body()
    body["error"]["message"] = clipped(str(body["error"]["message"]))
    return Response(orjson.dumps(body), status_code=exc.status,
                    media_type="application/json", headers=merged)


def _is_union_branch(part: Any) -> bool:
    """pydantic names the member of a union it tried (``str``, ``list[ContentPart]``)."""
    return isinstance(part, str) and ("[" in part or part in ("str", "int", "bool", "dict"))


def validation_error(exc: ValidationError) -> InvalidRequest:
    """The most specific schema violation (the deepest), phrased for a client, with
    ``param`` pointing at it."""
    errors: list[dict[str, Any]] = [dict(e) for e in exc.errors()]
    first = max(errors, key=lambda e: len(e.get("loc", ())))
    loc = [str(p) for p in first.get("loc", ()) if not _is_union_branch(p)]
    param = ".".join(loc) if loc else None
    where = f" at {param}" if param else ""
    return InvalidRequest(f"invalid request{where}: {first.get('msg', 'invalid value')}",
                          param=param, code="invalid_value")


async def handle_tako_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TakoError)
    return error_response(exc)


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(InternalError("the gateway failed to handle the request"))


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    status = int(getattr(exc, "status_code", 500))
    detail = str(getattr(exc, "detail", "error"))
    if status == 404:
        err: TakoError = TakoError(f"no route for {request.method} {request.url.path}",
                                   status=404, code="not_found")
        err.type = "invalid_request_error"
    elif status == 405:
        err = InvalidRequest(f"method {request.method} not allowed on {request.url.path}",
                             status=405, code="method_not_allowed")
    else:
        err = TakoError(detail, status=status)
    return error_response(err)


async def handle_request_validation(request: Request, exc: Exception) -> Response:
    errors = getattr(exc, "errors", lambda: [])()
    first = errors[0] if errors else {}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = ".".join(loc) or None
    return error_response(InvalidRequest(f"invalid request: {first.get('msg', 'bad input')}",
                                         param=param))
