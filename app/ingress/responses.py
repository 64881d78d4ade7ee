"""``POST /v1/responses``: OpenAI's Responses API (``tests/data/openai-openapi.yaml``:
CreateResponse, Response) as a translation onto the one request path.

The request becomes a ChatRequest: ``instructions`` a system message, input items messages
(``response_items``), function tools and ``tool_choice`` their Chat Completions shapes,
``max_output_tokens`` the output limit, ``text.format`` the ``response_format`` and
``reasoning.effort`` the ``reasoning_effort`` extra (vendors that have it receive it). With
``store`` (the default) the answer is kept (``response_store``) and ``previous_response_id``
continues the conversation it ended; the caller's tenant scopes both. Streaming is
``responses_stream``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from tako.app.auth import PRINCIPAL
from tako.app.errors import error_response, validation_error
from tako.app.ingress.base import Parsed
from tako.app.ingress.chat import json_object, tako_options
from tako.app.ingress.response_items import (
    as_items,
    call_item,
    finished,
    message_item,
    new_id,
    resource,
    to_messages,
)
from tako.app.ingress.response_store import ResponseStore, build_response_store
from tako.app.ingress.responses_stream import ResponseEventRenderer
from tako.app.pipeline import ingress_endpoint
from tako.app.services import Services
from tako.core.errors import InvalidRequest, NotFound, TakoError
from tako.core.protocols import RunContext
from tako.core.types import ChatRequest, ChatResponse, Principal

log = logging.getLogger("tako.app.responses")
UNSUPPORTED = ("background", "conversation", "prompt")
Route = tuple[str, Callable[[Request], Awaitable[Response]], list[str]]  # path, endpoint, methods


class CreateResponse(BaseModel):
    """The fields of CreateResponse tako acts on; the rest are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(max_length=256)
    input: str | list[Any] | None = None
    instructions: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    text: dict[str, Any] | None = None
    reasoning: dict[str, Any] | None = None
    metadata: dict[str, str] | None = Field(default=None, max_length=16)
    store: StrictBool | None = True
    stream: StrictBool | None = False
    previous_response_id: str | None = None
    user: str | None = None


@dataclass(slots=True)
class ResponseState:
    """One Responses call: what the answer is rendered from and what gets stored."""

    body: CreateResponse
    items: list[dict[str, Any]]
    id: str = field(default_factory=lambda: new_id("resp"))
    created_at: int = field(default_factory=lambda: int(time.time()))
    history: list[dict[str, Any]] = field(default_factory=list)
    final: dict[str, Any] | None = None

    def skeleton(self, model: str) -> dict[str, Any]:
        """The Response object before any output: status ``in_progress``."""
        b = self.body
        return {
            "id": self.id, "object": "response", "created_at": self.created_at,
            "status": "in_progress", "completed_at": None, "error": None,
            "incomplete_details": None, "instructions": b.instructions,
            "max_output_tokens": b.max_output_tokens, "model": model, "output": [],
            "parallel_tool_calls": b.parallel_tool_calls is not False,
            "previous_response_id": b.previous_response_id,
            "reasoning": {"effort": (b.reasoning or {}).get("effort"), "summary": None},
            "store": b.store is not False,
            "temperature": 1.0 if b.temperature is None else b.temperature,
            "text": {"format": (b.text or {}).get("format") or {"type": "text"}},
            "tool_choice": b.tool_choice if b.tool_choice is not None else "auto",
            "tools": [_tool_echo(t) for t in b.tools or ()],
            "top_p": 1.0 if b.top_p is None else b.top_p, "truncation": "disabled",
            "metadata": b.metadata or {},
            **({"user": b.user} if b.user is not None else {}),
        }


def _tool_echo(tool: dict[str, Any]) -> dict[str, Any]:
    return {"type": "function", "name": tool.get("name"),
            "description": tool.get("description"), "parameters": tool.get("parameters"),
            "strict": bool(tool.get("strict"))}


# ---- request translation ----


def _tool(index: int, tool: dict[str, Any]) -> dict[str, Any]:
    if tool.get("type") != "function":
        raise InvalidRequest(f"tools[{index}]: tako serves function tools only, not "
                             f"{str(tool.get('type'))[:40]!r}", param=f"tools[{index}].type",
                             code="unsupported_value")
    function = {k: tool[k] for k in ("name", "description", "parameters", "strict")
                if tool.get(k) is not None}
    return {"type": "function", "function": function}


def _tool_choice(choice: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
    if not isinstance(choice, dict):
        return choice
    if choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}
    if choice.get("type") == "allowed_tools":
        tools = [{"type": "function", "function": {"name": t.get("name")}}
                 for t in choice.get("tools") or () if isinstance(t, dict)]
        return {"type": "allowed_tools",
                "allowed_tools": {"mode": choice.get("mode", "auto"), "tools": tools}}
    raise InvalidRequest("tool_choice must be none, auto, required or name a function tool",
                         param="tool_choice", code="unsupported_value")


def _response_format(text: dict[str, Any] | None) -> dict[str, Any] | None:
    fmt = (text or {}).get("format")
    if not isinstance(fmt, dict) or fmt.get("type") in (None, "text"):
        return None
    if fmt.get("type") == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description")
                  if fmt.get(k) is not None}
        return {"type": "json_schema", "json_schema": schema}
    if fmt.get("type") == "json_object":
        return {"type": "json_object"}
    raise InvalidRequest("text.format.type must be text, json_schema or json_object",
                         param="text.format.type", code="unsupported_value")


def _sampling(body: CreateResponse) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "temperature": body.temperature, "top_p": body.top_p,
        "max_tokens": body.max_output_tokens, "parallel_tool_calls": body.parallel_tool_calls,
        "user": body.user, "response_format": _response_format(body.text),
    }
    effort = (body.reasoning or {}).get("effort")
    if effort:
        fields["reasoning_effort"] = effort
    return {k: v for k, v in fields.items() if v is not None}


def chat_request(state: ResponseState) -> ChatRequest:
    """The ChatRequest a Responses call runs."""
    body = state.body
    messages = to_messages([*state.history, *state.items])
    if body.instructions:
        messages.insert(0, {"role": "system", "content": body.instructions})
    if not messages:
        raise InvalidRequest("input is required", param="input", code="missing_required_parameter")
    data: dict[str, Any] = {"model": body.model, "messages": messages,
                            "stream": bool(body.stream), **_sampling(body)}
    if body.tools:
        data["tools"] = [_tool(i, t) for i, t in enumerate(body.tools)]
    if body.tool_choice is not None:
        data["tool_choice"] = _tool_choice(body.tool_choice)
    try:
        return ChatRequest.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from exc


def _check_metadata(metadata: dict[str, str] | None) -> None:
    for key, value in (metadata or {}).items():
        if len(key) > 64 or len(value) > 512:
            raise InvalidRequest("metadata keys are at most 64 characters and values at most "
                                 "512", param="metadata", code="invalid_value")


def parse_create(data: dict[str, Any]) -> CreateResponse:
    for name in UNSUPPORTED:
        if data.get(name):
            raise InvalidRequest(f"'{name}' is not supported by this gateway", param=name,
                                 code="unsupported_parameter")
    try:
        body = CreateResponse.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from exc
    _check_metadata(body.metadata)
    return body


# ---- the ingress ----


class ResponsesIngress:
    api = "responses"

    def __init__(self, store: ResponseStore) -> None:
        self.store = store

    def parse(self, body: bytes) -> Parsed:
        data = json_object(body)
        options = tako_options(data)
        create = parse_create(data)
        state = ResponseState(create, [resource(i) for i in as_items(create.input)])
        if create.previous_response_id is None:
            request = chat_request(state)
        else:  # the stored conversation is read once the caller is known
            request = ChatRequest(model=create.model, messages=[{"role": "user", "content": ""}])
        parsed = Parsed(request, options, state)
        if create.previous_response_id is not None:
            parsed.prepare = lambda principal: self._continue(parsed, principal)
        if create.store is not False:
            parsed.finish = lambda principal: self._keep(state, principal)
        return parsed

    async def _continue(self, parsed: Parsed, principal: Principal) -> None:
        state: ResponseState = parsed.original
        previous_id = state.body.previous_response_id or ""
        record = await self.store.get(principal.tenant_id, previous_id)
        if record is None:
            raise NotFound(f"Previous response with id '{previous_id[:80]}' not found.",
                           param="previous_response_id")
        state.history = [*record["history"], *record["items"], *record["response"]["output"]]
        parsed.request = chat_request(state)

    async def _keep(self, state: ResponseState, principal: Principal) -> None:
        if state.final is None:
            return
        record = {"response": state.final, "items": state.items, "history": state.history}
        try:
            await self.store.put(principal.tenant_id, state.id, record)
        except TakoError:
            log.warning("response %s could not be stored", state.id, exc_info=True)

    def render(self, parsed: Parsed, response: ChatResponse, ctx: RunContext) -> bytes:
        state: ResponseState = parsed.original
        output = [message_item(response.content)] if response.content else []
        output += [call_item(c.id, c.function.name, c.function.arguments)
                   for c in response.tool_calls or ()]
        body = finished({**state.skeleton(parsed.request.model), "output": output},
                        response.finish_reason, response.usage)
        state.final = body
        if ctx.trace is not None:
            return orjson.dumps({**body, "tako_trace": ctx.trace})
        return orjson.dumps(body)

    def frames(self, parsed: Parsed) -> ResponseEventRenderer:
        state: ResponseState = parsed.original
        return ResponseEventRenderer(state.skeleton(parsed.request.model), state)

    def error_response(self, error: TakoError) -> Response:
        return error_response(error)


# ---- stored responses: GET, DELETE, input items ----


def _not_found(response_id: str) -> NotFound:
    return NotFound(f"No response found with id '{response_id[:80]}'.", param="response_id")


def stored_endpoints(store: ResponseStore) -> list[Route]:
    """(path, endpoint, methods) for the stored-response routes; the caller's tenant scopes
    every lookup, so another tenant's id is not found."""

    async def lookup(request: Request) -> tuple[str, str, dict[str, Any]]:
        tenant = request.scope[PRINCIPAL].tenant_id
        response_id = request.path_params["response_id"]
        record = await store.get(tenant, response_id)
        if record is None:
            raise _not_found(response_id)
        return tenant, response_id, record

    async def retrieve(request: Request) -> Response:
        _, _, record = await lookup(request)
        return Response(orjson.dumps(record["response"]), media_type="application/json")

    async def delete(request: Request) -> Response:
        tenant, response_id, _ = await lookup(request)
        if not await store.delete(tenant, response_id):
            raise _not_found(response_id)
        return Response(orjson.dumps({"id": response_id, "object": "response",
                                      "deleted": True}), media_type="application/json")

    async def input_items(request: Request) -> Response:
        _, _, record = await lookup(request)
        return Response(orjson.dumps(item_page(record["items"], request.query_params)),
                        media_type="application/json")

    base = "/v1/responses/{response_id}"
    return [(base, retrieve, ["GET"]), (base, delete, ["DELETE"]),
            (base + "/input_items", input_items, ["GET"])]


def item_page(items: list[dict[str, Any]], query: Any) -> dict[str, Any]:
    """A ResponseItemList page: ``order`` (desc by default), ``after`` an item id, ``limit``
    1..100 (20 by default)."""
    ordered = list(reversed(items)) if query.get("order", "desc") == "desc" else list(items)
    after = query.get("after")
    if after:
        ids = [i.get("id") for i in ordered]
        ordered = ordered[ids.index(after) + 1:] if after in ids else []
    raw_limit = query.get("limit", "20")
    limit = min(100, max(1, int(raw_limit))) if raw_limit.isdigit() else 20
    page = ordered[:limit]
    return {"object": "list", "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": len(ordered) > limit}


def responses_routes(services: Services) -> list[Route]:
    """``POST /v1/responses`` on the one request path, and the stored-response routes, over
    the store the runtime backend calls for."""
    store = build_response_store(services.settings.runtime)
    create = ingress_endpoint(ResponsesIngress(store), services)
    return [("/v1/responses", create, ["POST"]), *stored_endpoints(store)]
