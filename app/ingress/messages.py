"""``POST /v1/messages`` and ``POST /v1/messages/count_tokens``: Anthropic's Messages API
over any deployment or profile.

The request is translated into a ChatRequest (``messages_wire``), run on the one request
path, and the answer rendered back: a ``message`` object, or the event stream
``message_start``, per block ``content_block_start`` / ``content_block_delta`` (text and
``input_json_delta``; thinking blocks of an Anthropic or Bedrock Claude deployment) /
``content_block_stop``, then ``message_delta`` with the stop reason and usage and
``message_stop``; a failure after the first byte is an ``error`` event.
Errors take Anthropic's shape with tako's status (its SDK picks the exception by status).
"""

from __future__ import annotations

import logging
import random
from typing import Any

import orjson
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from tako.app.auth import PRINCIPAL
from tako.app.errors import validation_error
from tako.app.gateway import Gateway
from tako.app.ingress.base import Parsed
from tako.app.ingress.chat import json_object, tako_options
from tako.app.ingress.messages_wire import (
    MessagesRequest,
    anthropic_error_response,
    chat_body,
    error_body,
    strip_native,
)
from tako.app.pipeline import ingress_endpoint, read_body
from tako.app.services import Services
from tako.core.errors import InvalidRequest, ModelNotFound, TakoError
from tako.core.protocols import RunContext
from tako.core.tokens import estimate_prompt_tokens
from tako.core.types import ChatRequest, ChatResponse, Delta, End, OrchEvent, ToolCall, Usage

log = logging.getLogger("tako.app")
MESSAGES_PATH = "/v1/messages"
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
                "function_call": "tool_use", "content_filter": "refusal"}


def stop_reason(finish_reason: str) -> str:
    return STOP_REASONS.get(finish_reason, "end_turn")


def message_id() -> str:
    return f"msg_{random.getrandbits(96):024x}"


def usage_body(usage: Usage) -> dict[str, Any]:
    """tako counts cache reads in the prompt (OpenAI's convention); Anthropic apart."""
    return {"input_tokens": max(0, usage.prompt_tokens - usage.cached_tokens),
            "output_tokens": usage.completion_tokens,
            "cache_read_input_tokens": usage.cached_tokens,
            "cache_creation_input_tokens": 0}


def tool_input(call: ToolCall) -> dict[str, Any]:
    try:
        value = orjson.loads(call.function.arguments or "{}")
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def content_of(response: ChatResponse) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = list(response.extra.get("thinking_blocks") or ())
    if response.content:
        blocks.append({"type": "text", "text": response.content})
    blocks += [{"type": "tool_use", "id": c.id, "name": c.function.name,
                "input": tool_input(c)} for c in response.tool_calls or ()]
    return blocks


def parse_request(body: bytes, *, counting: bool = False,
                  native: frozenset[str] = frozenset()
                  ) -> tuple[MessagesRequest, dict[str, Any], ChatRequest]:
    """The request, its ``tako`` options and the ChatRequest to run; Anthropic-only
    fields stay in it only for a model in ``native``."""
    data = json_object(body)
    options = tako_options(data)
    try:
        original = MessagesRequest.model_validate(data)
        if original.max_tokens is None and not counting:
            raise InvalidRequest("max_tokens: Field required", param="max_tokens")
        if counting:
            original.stream = None
        chat = chat_body(original)
        if original.model not in native:
            chat = strip_native(chat)
        return original, options, ChatRequest.model_validate(chat)
    except ValidationError as exc:
        raise validation_error(exc) from exc


def takes_anthropic_fields(provider: str, model: str) -> bool:
    """Anthropic's own API, or a Claude model on Bedrock (its adapter maps the fields)."""
    return provider == "anthropic" or (provider == "bedrock" and "anthropic.claude" in model)


def anthropic_models(gateway: Gateway) -> frozenset[str]:
    """Deployments and aliases every deployment of which takes Anthropic's own fields."""
    native = {spec.name for spec in gateway.settings.deployments
              if takes_anthropic_fields(spec.provider, spec.model)}
    return frozenset(name for name, (members, _) in gateway.aliases.items()
                     if members and all(m in native for m in members))


class MessagesIngress:
    api = "messages"

    def __init__(self, native: frozenset[str] = frozenset()) -> None:
        self.native = native  # models whose deployments take Anthropic-only fields

    def parse(self, body: bytes) -> Parsed:
        original, options, request = parse_request(body, native=self.native)
        return Parsed(request, options, original)

    def render(self, parsed: Parsed, response: ChatResponse, ctx: RunContext) -> bytes:
        body: dict[str, Any] = {
            "id": message_id(), "type": "message", "role": "assistant",
            "model": parsed.request.model, "content": content_of(response),
            "stop_reason": stop_reason(response.finish_reason), "stop_sequence": None,
            "usage": usage_body(response.usage)}
        if ctx.trace is not None:
            body["tako_trace"] = ctx.trace
        return orjson.dumps(body)

    def frames(self, parsed: Parsed) -> MessageEvents:
        return MessageEvents(parsed.request.model, estimate_prompt_tokens(parsed.request))

    def error_response(self, error: TakoError) -> Response:
        return anthropic_error_response(error)


def event(kind: str, payload: dict[str, Any]) -> bytes:
    return (b"event: " + kind.encode() + b"\ndata: "
            + orjson.dumps({"type": kind, **payload}) + b"\n\n")


class MessageEvents:
    """Stream items as Anthropic's message events. Text and each tool call are blocks in
    the order they arrive; a block is stopped when the next one starts."""

    def __init__(self, model: str, prompt_estimate: int) -> None:
        self.model = model
        self.prompt_estimate = prompt_estimate
        self.opened = False
        self.block = -1  # the open block's index
        self.block_kind: str | None = None
        self.tool_blocks: dict[int, int] = {}  # tool call index -> block index

    @property
    def started(self) -> bool:
        return self.opened

    def _start(self) -> bytes:
        if self.opened:
            return b""
        self.opened = True
        return event("message_start", {"message": {
            "id": message_id(), "type": "message", "role": "assistant", "model": self.model,
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": self.prompt_estimate, "output_tokens": 0}}})

    def _open(self, kind: str, block: dict[str, Any]) -> bytes:
        out = self._close()
        self.block += 1
        self.block_kind = kind
        return out + event("content_block_start", {"index": self.block,
                                                   "content_block": block})

    def _close(self) -> bytes:
        if self.block_kind is None:
            return b""
        self.block_kind = None
        return event("content_block_stop", {"index": self.block})

    def _text(self, text: str) -> bytes:
        out = b"" if self.block_kind == "text" else self._open("text", {"type": "text",
                                                                        "text": ""})
        return out + event("content_block_delta", {
            "index": self.block, "delta": {"type": "text_delta", "text": text}})

    def _tool(self, call: Any) -> bytes:
        out = b""
        if call.index not in self.tool_blocks:
            out = self._open("tool_use", {"type": "tool_use",
                                          "id": call.id or f"toolu_{random.getrandbits(96):024x}",
                                          "name": call.name or "", "input": {}})
            self.tool_blocks[call.index] = self.block
        if call.arguments:
            out += event("content_block_delta", {
                "index": self.tool_blocks[call.index],
                "delta": {"type": "input_json_delta", "partial_json": call.arguments}})
        return out

    def _native(self, native: dict[str, Any]) -> bytes:
        """An Anthropic block event with no tako counterpart (thinking), as it came."""
        if native.get("type") == "content_block_start":
            block = native.get("content_block") or {}
            return self._open(str(block.get("type")), block)
        if native.get("type") == "content_block_delta" and self.block_kind is not None:
            return event("content_block_delta", {"index": self.block,
                                                 "delta": native.get("delta") or {}})
        return b""

    def delta(self, delta: Delta) -> bytes:
        out = self._start()
        if delta.native:
            out += self._native(delta.native)
        if delta.content:
            out += self._text(delta.content)
        for call in delta.tool_calls or ():
            out += self._tool(call)
        return out

    def event(self, item: OrchEvent) -> bytes | None:
        """Orchestration events (opt-in) as ``tako_event`` events, which the SDK skips."""
        return self._start() + event("tako_event", {"kind": item.kind, **item.data})

    def error(self, error: TakoError) -> bytes:
        return self._start() + event("error", {"error": error_body(error)["error"]})

    def end(self, end: End) -> bytes:
        out = self._start() + self._close()
        return out + event("message_delta", {
            "delta": {"stop_reason": stop_reason(end.finish_reason), "stop_sequence": None},
            "usage": usage_body(end.usage)}) + event("message_stop", {})

    @staticmethod
    def done() -> bytes:
        return b""


def messages_endpoint(services: Services) -> Any:
    """``POST /v1/messages`` on the one request path; a body not declared JSON gets
    Anthropic's 400 before anything runs."""
    run = ingress_endpoint(MessagesIngress(anthropic_models(services.gateway)), services)

    async def endpoint(request: Request) -> Response:
        problem = json_problem(request)
        if problem is not None:
            return anthropic_error_response(problem)
        return await run(request)

    return endpoint


def json_problem(request: Request) -> InvalidRequest | None:
    declared = request.headers.get("content-type", "")
    if declared.partition(";")[0].strip().lower() == "application/json":
        return None
    return InvalidRequest(f"unsupported content type {declared[:100]!r}: send "
                          f"'application/json'", param="content-type")


async def vendor_count(gateway: Gateway, req: ChatRequest) -> int | None:
    """The vendor's own count for a deployment that has one (Anthropic's), else None; a
    vendor failure is None too (the estimate answers)."""
    if gateway.target(req.model).kind != "deployment":
        return None
    count = getattr(gateway.deployments.get(req.model), "count_tokens", None)
    if count is None:
        return None
    try:
        return int(await count(req))
    except TakoError as error:
        log.warning("count_tokens on %s failed, answering tako's estimate: %s", req.model,
                    error)
        return None


def count_tokens_endpoint(services: Services) -> Any:
    """``POST /v1/messages/count_tokens`` for a model the caller may use, after the request
    policy (a denial is a 403, PII is redacted): an Anthropic deployment's own count, else
    tako's conservative prompt estimate (``x-tako-token-count`` says which). No chat runs,
    nothing is charged."""
    native = anthropic_models(services.gateway)

    async def endpoint(request: Request) -> Response:
        try:
            problem = json_problem(request)
            if problem is not None:
                raise problem
            body = await read_body(request, services.settings.server.max_body_bytes)
            _, _, req = parse_request(body, counting=True, native=native)
            principal = request.scope[PRINCIPAL]
            services.gateway.target(req.model)
            if not principal.may_use(req.model):
                raise ModelNotFound(f"The model '{req.model}' does not exist or you do not "
                                    f"have access to it.", param="model")
            req = await services.policy.before_chat(principal, req)
            counted = await vendor_count(services.gateway, req)
        except TakoError as error:
            return anthropic_error_response(error)
        tokens = estimate_prompt_tokens(req) if counted is None else counted
        return Response(orjson.dumps({"input_tokens": tokens}), media_type="application/json",
                        headers={"x-tako-token-count":
                                 "estimate" if counted is None else "vendor"})

    return endpoint
