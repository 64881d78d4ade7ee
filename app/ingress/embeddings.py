"""``POST /v1/embeddings``: OpenAI's embeddings API over a deployment or an alias.

Embeddings are not chat, so they do not run an orchestrator; they take the same request
path otherwise, inside one ``Call``: read, parse, authorise, policy (each input screened
as a user message), admission (rate limits and the budget reservation), the alias's
runtime stack (fallback, breaker, retry, then reconciliation at the call's cost), render.
Vendors are asked for floats; ``encoding_format: base64`` is encoded here (little-endian
float32, as OpenAI sends it). A profile name is a 400: a profile orchestrates chat turns,
and no embedding model stands behind it.
"""

from __future__ import annotations

import asyncio
import base64
import struct
import time
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from tako.app.auth import PRINCIPAL
from tako.app.call import Call, ClientLeft
from tako.app.errors import error_response, validation_error
from tako.app.fastpath import Endpoint
from tako.app.ingress.chat import json_object, tako_options
from tako.app.pipeline import read_body
from tako.app.policy_gate import PolicyGate
from tako.app.services import Services
from tako.app.telemetry import use_span
from tako.core.errors import InvalidRequest, ModelNotFound, RequestTimeout, TakoError
from tako.core.protocols import EmbeddingRequest, Embeddings, RunContext
from tako.core.types import ChatRequest, Message, Principal
from tako.providers.embedding_wire import estimate_tokens

API = "embeddings"
MAX_INPUTS = 2048  # OpenAI's limit on the number of inputs in one request
SERVED_BY = ("deployment", "alias")


class EmbeddingsBody(BaseModel):
    """OpenAI's ``CreateEmbeddingRequest``, texts only (token arrays are refused)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=256)
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None

    def texts(self) -> list[str]:
        texts = [self.input] if isinstance(self.input, str) else list(self.input)
        if not texts:
            raise InvalidRequest("'input' must not be an empty list", param="input",
                                 code="invalid_value")
        if len(texts) > MAX_INPUTS:
            raise InvalidRequest(f"'input' has {len(texts)} items, more than the limit of "
                                 f"{MAX_INPUTS}", param="input", code="invalid_value")
        if any(not text for text in texts):
            raise InvalidRequest("'input' must not contain an empty string", param="input",
                                 code="invalid_value")
        return texts


def parse(body: bytes) -> EmbeddingsBody:
    data = json_object(body)
    tako_options(data)  # no opt-in options apply here; a malformed one is still a 400
    raw = data.get("input")
    if isinstance(raw, list) and any(not isinstance(item, str) for item in raw):
        raise InvalidRequest("'input' must be a string or a list of strings; token arrays "
                             "are not accepted by this gateway", param="input",
                             code="invalid_value")
    try:
        return EmbeddingsBody.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from exc


def encoded(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "float":
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def render(body: EmbeddingsBody, result: Embeddings) -> bytes:
    usage = result.usage
    usage_body: dict[str, Any] = {"prompt_tokens": usage.prompt_tokens,
                                  "total_tokens": usage.total_tokens,
                                  "cost_usd": usage.cost_usd}
    if usage.estimated:
        usage_body["estimated"] = True
    return orjson.dumps({
        "object": "list",
        "data": [{"object": "embedding", "index": i,
                  "embedding": encoded(vector, body.encoding_format)}
                 for i, vector in enumerate(result.vectors)],
        "model": body.model,
        "usage": usage_body,
    })


async def screened(gate: PolicyGate, principal: Principal, body: EmbeddingsBody,
                   texts: list[str]) -> tuple[str, list[str]]:
    """The model and texts after the pre-chat policy and PII guard, each input seen as a
    user message (a redaction replaces the text, a denial raises, a forced model
    applies). With neither a policy nor a request PII guard there is nothing to ask."""
    if not (gate.active or gate.request_pii.enabled):
        return body.model, texts
    request = ChatRequest(model=body.model,
                          messages=[Message(role="user", content=t) for t in texts])
    checked = await gate.before_chat(principal, request)
    if checked is request:
        return body.model, texts
    out = [m.content if isinstance(m.content, str) else None for m in checked.messages]
    if len(out) != len(texts) or any(text is None for text in out):
        raise InvalidRequest("the policy changed the inputs into something that is not "
                             "one text per input", param="input")
    return checked.model, [text for text in out if text is not None]


def embeddings_endpoint(services: Services) -> Endpoint:
    """``POST /v1/embeddings`` over ``services``; errors in OpenAI's shape."""
    server = services.settings.server

    async def endpoint(request: Request) -> Response:
        try:
            async with Call(services.runtime, services.tracer, request) as call:
                call.record.principal = request.scope[PRINCIPAL]
                call.record.api = API
                raw = await read_body(request, server.max_body_bytes)
                async with call.watching_client(request.receive):
                    try:
                        async with asyncio.timeout(server.request_timeout_s):
                            return await _run(request, call, parse(raw), services)
                    except TimeoutError:
                        raise RequestTimeout(
                            f"the request did not finish within the gateway's limit of "
                            f"{server.request_timeout_s:g}s (server.request_timeout_s)"
                        ) from None
        except ClientLeft:
            return Response(status_code=499)  # nobody reads it
        except TakoError as error:
            return error_response(error)

    return endpoint


async def _run(request: Request, call: Call, body: EmbeddingsBody,
               services: Services) -> Response:
    gw, record = services.gateway, call.record
    principal: Principal = request.scope[PRINCIPAL]
    texts = body.texts()
    if not principal.may_use(body.model):
        raise ModelNotFound(f"The model '{body.model}' does not exist or you do not have "
                            f"access to it.", param="model")
    gw.target(body.model)  # an unknown model is a 404 before any policy work
    model, texts = await screened(services.policy, principal, body, texts)
    target = gw.target(model)
    if target.kind not in SERVED_BY:
        raise InvalidRequest(f"'{model}' is a profile; embeddings are served by deployments "
                             "and aliases only", param="model", code="model_not_supported")
    record.model, record.kind, record.stream = target.name, target.kind, False
    tokens = estimate_tokens(texts)
    admission = await call.admit(principal, model, tokens,
                                 gw.estimate_cost_usd(target, tokens, 0))
    providers, weights = gw.upstreams(model)
    alias = call.runtime.alias_provider(admission, model, providers, weights)
    ctx = call.ctx = RunContext(principal=principal, request_id=record.request_id,
                                provider=lambda name: alias, tools=gw.tools)
    with use_span(call.start_run(API, principal)):
        result = await alias.embed(EmbeddingRequest(model, texts, body.dimensions,
                                                    body.user))
    ctx.usage.add(result.usage)
    ctx.answered_by = alias.answered_by
    record.upstream_s = admission.upstream_seconds
    overhead = max(0.0, time.perf_counter() - record.started - record.upstream_s)
    headers = {"x-request-id": record.request_id, **admission.headers,
               "x-tako-overhead-ms": f"{overhead * 1000:.3f}"}
    if alias.answered_by:
        headers["x-tako-deployment"] = record.deployment = alias.answered_by
    return Response(render(body, result), media_type="application/json", headers=headers)
