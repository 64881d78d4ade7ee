"""``POST /v1/chat/completions``: OpenAI's Chat Completions, tako's native shape."""

from __future__ import annotations

import random
import time
from typing import Any

import orjson
from pydantic import ValidationError
from starlette.responses import Response

from tako.app.errors import error_response, validation_error
from tako.app.ingress.base import Parsed
from tako.app.sse import ChunkRenderer
from tako.core.errors import InvalidRequest, TakoError
from tako.core.protocols import RunContext
from tako.core.types import ChatRequest, ChatResponse


def json_object(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 saying why not."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"could not parse the JSON body: {exc}",
                             code="invalid_json") from exc
    if not isinstance(data, dict):
        raise InvalidRequest("the JSON body must be an object", code="invalid_json")
    return data


def tako_options(data: dict[str, Any]) -> dict[str, Any]:
    """The ``tako`` opt-in options a request carries (taken out of it)."""
    options = data.pop("tako", None) or {}
    if not isinstance(options, dict):
        raise InvalidRequest("'tako' must be an object", param="tako")
    return options


class ChatIngress:
    api = "chat"

    def parse(self, body: bytes) -> Parsed:
        data = json_object(body)
        options = tako_options(data)
        try:
            return Parsed(ChatRequest.model_validate(data), options)
        except ValidationError as exc:
            raise validation_error(exc) from exc

    def render(self, parsed: Parsed, response: ChatResponse, ctx: RunContext) -> bytes:
        body = response.to_openai(parsed.request.model)
        if ctx.trace is not None:
            body["tako_trace"] = ctx.trace
        return orjson.dumps(body)

    def frames(self, parsed: Parsed) -> ChunkRenderer:
        req = parsed.request
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        return ChunkRenderer(f"chatcmpl-{random.getrandbits(96):024x}", int(time.time()),
                             req.model, include_usage)

    def error_response(self, error: TakoError) -> Response:
        return error_response(error)
