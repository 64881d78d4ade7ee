"""``anthropic``: Claude through Anthropic's Messages API (``POST {base_url}/v1/messages``).

tako speaks OpenAI to its clients; this adapter translates both ways:

- system and developer messages go into the request's top-level ``system``;
- assistant ``tool_calls`` become ``tool_use`` blocks, ``tool`` messages become
  ``tool_result`` blocks, and consecutive turns of the same role (several tool results,
  or tool results followed by user text) are merged into one turn as Anthropic requires;
- images: data URLs become ``base64`` sources, http(s) URLs become ``url`` sources;
- ``tool_choice`` auto/none/required/function maps to auto/none/any/tool, and
  ``parallel_tool_calls: false`` to ``disable_parallel_tool_use``;
- ``temperature`` is capped at 1.0 (Anthropic's range is 0..1, OpenAI's 0..2);
- ``stop`` becomes ``stop_sequences``, ``user`` becomes ``metadata.user_id``; ``seed`` has
  no Anthropic counterpart and is dropped;
- ``response_format``: ``json_schema`` is sent as Anthropic structured output
  (``output_config.format``); ``json_object`` (no schema) adds a system instruction to
  answer with a single JSON object only, since Anthropic has no schema-less JSON mode. With
  option ``json_schema_mode: prompt`` a JSON schema is also asked for by instruction, for
  models without structured-output support;
- Anthropic request fields a client sends as extras (``top_k``, ``thinking``,
  ``metadata``, ``service_tier``) are passed through, and so are the Anthropic-only
  fields a message carries: ``cache_control`` on text parts (system text included, which
  is then sent as blocks) and on tools, an assistant message's earlier ``thinking_blocks``
  (sent first in its turn, unchanged) and a tool message's ``is_error``.

Responses: text blocks are joined, ``tool_use`` ids are kept as tool call ids, stop reasons
map to OpenAI finish reasons, thinking blocks of a non-streamed answer are kept as the
extension field ``thinking_blocks`` (streamed, their events go on as ``Delta.native``,
which only the Messages ingress renders), and usage counts
cache reads and cache writes as prompt tokens (OpenAI's convention), cache reads as cached
tokens. Cache writes are priced at the plain input rate.

Options (``AnthropicOptions``):
- ``default_max_tokens`` (int, 4096): Anthropic requires ``max_tokens``; used when the
  request sets neither ``max_tokens`` nor ``max_completion_tokens``.
- ``anthropic_version`` (str, ``2023-06-01``): the ``anthropic-version`` header.
- ``anthropic_beta`` (str or list of str): sent as the ``anthropic-beta`` header.
- ``json_schema_mode`` (``native`` | ``prompt``, default ``native``): see above.

The API key (``api_key`` / ``api_key_env``) is sent as ``x-api-key``. ``count_tokens``
asks Anthropic's count endpoint for the input tokens of a request.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Mapping
from typing import Annotated, Any, Literal

import orjson
from pydantic import Field

from tako.core.errors import InvalidRequest, TakoError, UpstreamTransient, upstream_error_for
from tako.core.specs import DeploymentSpec
from tako.core.types import (
    ChatRequest,
    ChatResponse,
    ContentPart,
    Delta,
    FunctionCall,
    Message,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from tako.providers.base import (
    HttpProvider,
    StreamOutcome,
    iter_sse,
    new_id,
    now,
    parse_data_url,
)
from tako.providers.registry import AdapterOptions, either, register

ANTHROPIC_BASE_URL = "https://api.anthropic.com"
DEFAULT_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
PASSTHROUGH_EXTRAS = ("top_k", "thinking", "metadata", "service_tier")
KEPT_FIELDS = ("cache_control",)  # on text parts, system parts and tools
THINKING_BLOCKS = ("thinking", "redacted_thinking")
# what Anthropic's count_tokens endpoint takes of a Messages request
COUNTED_FIELDS = ("model", "messages", "system", "tools", "tool_choice", "thinking",
                  "output_config")
JSON_OBJECT_INSTRUCTION = (
    "Respond with a single valid JSON object only: no prose, no code fences."
)

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# Anthropic's error ``type`` -> the HTTP status it is documented with; used for errors
# that arrive inside a stream, where there is no status line to read.
ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


def finish_reason(stop_reason: str | None) -> str:
    return FINISH_REASONS.get(stop_reason or "end_turn", "stop")


# ---------------------------------------------------------------- request translation


def image_block(url: str) -> dict[str, Any]:
    if url.startswith("data:"):
        mime, data = parse_data_url(url)
        return {
            "type": "image",
            "source": {
                "type": "base64",
                "media_type": mime,
                "data": base64.b64encode(data).decode("ascii"),
            },
        }
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise InvalidRequest("image_url must be a data URL or an http(s) URL", param="messages")


def content_blocks(content: str | list[ContentPart] | None) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for part in content:
        if part.type == "text":
            if part.text:
                blocks.append(_kept({"type": "text", "text": part.text}, part))
        elif part.type == "image_url" and part.image_url is not None:
            blocks.append(image_block(part.image_url.url))
        elif part.type == "input_audio":
            raise InvalidRequest("anthropic models do not accept audio input", param="messages")
        else:
            # Anthropic-native blocks (document, ...) sent by a client that knows them.
            blocks.append(part.model_dump(exclude_none=True))
    return blocks


def _kept(block: dict[str, Any], source: Any) -> dict[str, Any]:
    """``block`` with the Anthropic-only fields (``cache_control``) ``source`` carries as
    extras, passed through unchanged."""
    extra = source.model_extra or {}
    for name in KEPT_FIELDS:
        if name in extra:
            block[name] = extra[name]
    return block


def tool_use_block(call: ToolCall) -> dict[str, Any]:
    try:
        arguments = orjson.loads(call.function.arguments) if call.function.arguments else {}
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(
            f"tool call {call.id} has arguments that are not JSON", param="messages"
        ) from exc
    if not isinstance(arguments, dict):
        raise InvalidRequest(
            f"tool call {call.id} arguments must be a JSON object", param="messages"
        )
    return {"type": "tool_use", "id": call.id, "name": call.function.name, "input": arguments}


def turn_for(message: Message) -> tuple[str, list[dict[str, Any]]]:
    """One OpenAI message as an Anthropic (role, content blocks) pair."""
    if message.role == "assistant":
        # earlier thinking blocks (signed) go back first, unchanged
        blocks = list((message.model_extra or {}).get("thinking_blocks") or ())
        blocks += content_blocks(message.content)
        blocks.extend(tool_use_block(c) for c in message.tool_calls or ())
        return "assistant", blocks
    if message.role == "tool":
        if not message.tool_call_id:
            raise InvalidRequest("a tool message needs tool_call_id", param="messages")
        result: dict[str, Any] = {"type": "tool_result", "tool_use_id": message.tool_call_id}
        inner = content_blocks(message.content)
        if inner:
            result["content"] = inner
        if (message.model_extra or {}).get("is_error"):
            result["is_error"] = True
        return "user", [result]
    if message.role == "function":
        return "user", [{"type": "text", "text": f"{message.name or 'function'}: "
                         f"{message.text()}"}]
    return "user", content_blocks(message.content)


def translate_messages(messages: list[Message]) -> tuple[str, list[dict[str, Any]]]:
    """(system text, Anthropic messages) with same-role neighbours merged."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message.role in ("system", "developer"):
            if message.text():
                system.append(message.text())
            continue
        role, blocks = turn_for(message)
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            previous = turns[-1]["content"]
            if role == "user" and blocks[0]["type"] == "tool_result":
                # tool results must open the user turn that answers the tool calls
                cut = next(
                    (i for i, b in enumerate(previous) if b["type"] != "tool_result"),
                    len(previous),
                )
                previous[cut:cut] = blocks
            else:
                previous.extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return "\n\n".join(system), turns


def tool_choice_for(choice: str | dict[str, Any] | None,
                    parallel: bool | None) -> dict[str, Any] | None:
    mapped: dict[str, Any] | None
    if choice is None:
        mapped = None
    elif choice == "auto":
        mapped = {"type": "auto"}
    elif choice == "none":
        return {"type": "none"}
    elif choice == "required":
        mapped = {"type": "any"}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        mapped = {"type": "tool", "name": choice["function"].get("name")}
    else:
        raise InvalidRequest(f"unsupported tool_choice {choice!r}", param="tool_choice")
    if parallel is False:
        mapped = mapped or {"type": "auto"}
        mapped["disable_parallel_tool_use"] = True
    return mapped


def request_body(req: ChatRequest, model: str, options: dict[str, Any], *,
                 stream: bool) -> dict[str, Any]:
    system, messages = translate_messages(req.messages)
    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": req.output_limit()
        or int(options.get("default_max_tokens", DEFAULT_MAX_TOKENS)),
    }
    instructions = [system] if system else []
    instructions += _response_format(req, options, body)
    cached = cached_system(req.messages)
    if cached:
        body["system"] = [*cached, *({"type": "text", "text": text}
                                     for text in instructions[1:])]
    elif instructions:
        body["system"] = "\n\n".join(instructions)
    if req.temperature is not None:
        body["temperature"] = min(req.temperature, 1.0)
    if req.top_p is not None:
        body["top_p"] = req.top_p
    if req.stop_list():
        body["stop_sequences"] = req.stop_list()
    if req.tools:
        body["tools"] = [tool_def(t.function.model_dump(exclude_none=True)) for t in req.tools]
        choice = tool_choice_for(req.tool_choice, req.parallel_tool_calls)
        if choice is not None:
            body["tool_choice"] = choice
    extras = req.extras()
    for name in PASSTHROUGH_EXTRAS:
        if name in extras:
            body[name] = extras[name]
    if req.user and "metadata" not in body:
        body["metadata"] = {"user_id": req.user}
    if stream:
        body["stream"] = True
    return body


def cached_system(messages: list[Message]) -> list[dict[str, Any]]:
    """The system text as blocks when a part of it carries ``cache_control`` (a client
    marking a cache breakpoint), else nothing (it goes as one string)."""
    parts = [p for m in messages if m.role in ("system", "developer")
             and isinstance(m.content, list) for p in m.content]
    if not any("cache_control" in (p.model_extra or {}) for p in parts):
        return []
    return content_blocks(
        [p for m in messages if m.role in ("system", "developer")
         for p in (m.content if isinstance(m.content, list)
                   else [ContentPart(type="text", text=m.content or "")])])


def _response_format(req: ChatRequest, options: dict[str, Any],
                     body: dict[str, Any]) -> list[str]:
    """The system instructions ``response_format`` needs; a JSON schema asked for natively
    goes into ``body`` as ``output_config``."""
    fmt = req.response_format or {}
    if fmt.get("type") == "json_object":
        return [JSON_OBJECT_INSTRUCTION]
    if fmt.get("type") != "json_schema":
        return []
    schema = (fmt.get("json_schema") or {}).get("schema") or {"type": "object"}
    if options.get("json_schema_mode", "native") == "prompt":
        return ["Respond with a single valid JSON value matching this JSON schema, and "
                "nothing else: " + orjson.dumps(schema).decode()]
    body["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
    return []


def tool_def(function: dict[str, Any]) -> dict[str, Any]:
    tool: dict[str, Any] = {
        "name": function["name"],
        "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
    }
    if function.get("description"):
        tool["description"] = function["description"]
    if function.get("strict"):
        tool["strict"] = True
    for name in KEPT_FIELDS:
        if name in function:
            tool[name] = function[name]
    return tool


# --------------------------------------------------------------- response translation


def usage_from(raw: dict[str, Any] | None, provider: HttpProvider) -> Usage:
    raw = raw or {}
    cache_read = int(raw.get("cache_read_input_tokens") or 0)
    cache_write = int(raw.get("cache_creation_input_tokens") or 0)
    prompt = int(raw.get("input_tokens") or 0) + cache_read + cache_write
    completion = int(raw.get("output_tokens") or 0)
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        cached_tokens=cache_read,
        cost_usd=provider.cost(prompt, completion, cache_read),
    )


def parse_message(body: dict[str, Any], provider: HttpProvider) -> ChatResponse:
    blocks = body.get("content")
    if not isinstance(blocks, list):
        raise UpstreamTransient(
            f"provider {provider.id} answered without content",
            details={"provider": provider.id, "body": body},
        )
    texts = [b.get("text") or "" for b in blocks if b.get("type") == "text"]
    calls = [
        ToolCall(
            id=b.get("id") or new_id("toolu_"),
            function=FunctionCall(
                name=b["name"], arguments=orjson.dumps(b.get("input") or {}).decode()
            ),
        )
        for b in blocks
        if b.get("type") == "tool_use"
    ]
    thinking = [b for b in blocks if b.get("type") in ("thinking", "redacted_thinking")]
    return ChatResponse(
        id=body.get("id") or new_id(),
        model=body.get("model") or provider.model,
        created=now(),
        content="".join(texts) if texts or not calls else None,
        tool_calls=calls or None,
        finish_reason=finish_reason(body.get("stop_reason")),
        usage=usage_from(body.get("usage"), provider),
        provider_id=provider.id,
        extra={"thinking_blocks": thinking} if thinking else {},
    )


def stream_error(provider_id: str, body: dict[str, Any]) -> TakoError:
    err = body.get("error")
    kind = str(err.get("type") or "api_error") if isinstance(err, dict) else "api_error"
    return upstream_error_for(provider_id, ERROR_STATUS.get(kind, 500), body, code=kind)


class StreamState:
    """Anthropic stream events folded into OpenAI-style deltas; the stop reason and usage
    go to ``outcome``."""

    def __init__(self, provider: HttpProvider, outcome: StreamOutcome) -> None:
        self.provider = provider
        self.outcome = outcome
        self.raw_usage: dict[str, Any] = {}
        self.tool_index: dict[int, int] = {}  # content block index -> tool call index
        self.tool_has_args: dict[int, bool] = {}
        self.done = False

    def _add_usage(self, raw: dict[str, Any]) -> None:
        self.raw_usage.update({k: v for k, v in raw.items() if v is not None})
        self.outcome.usage = usage_from(self.raw_usage, self.provider)

    def feed(self, event: dict[str, Any]) -> Delta | None:
        kind = event.get("type")
        if kind == "message_start":
            self._add_usage((event.get("message") or {}).get("usage") or {})
        elif kind == "content_block_start":
            return self._block_start(int(event.get("index", 0)), event.get("content_block") or {})
        elif kind == "content_block_delta":
            return self._block_delta(int(event.get("index", 0)), event.get("delta") or {})
        elif kind == "content_block_stop":
            block = int(event.get("index", 0))
            if block in self.tool_index and not self.tool_has_args[block]:
                self.tool_has_args[block] = True
                return Delta(tool_calls=[ToolCallDelta(self.tool_index[block], arguments="{}")])
        elif kind == "message_delta":
            stop_reason = (event.get("delta") or {}).get("stop_reason")
            if stop_reason:
                self.outcome.finish_reason = finish_reason(stop_reason)
            self._add_usage(event.get("usage") or {})
        elif kind == "message_stop":
            self.done = True
        elif kind == "error":
            raise stream_error(self.provider.id, event)
        return None

    def _block_start(self, block: int, content: dict[str, Any]) -> Delta | None:
        if content.get("type") == "text":
            return Delta(content=content["text"]) if content.get("text") else None
        if content.get("type") in THINKING_BLOCKS:
            # no OpenAI counterpart: passed on as it came, for a Messages client
            return Delta(native={"type": "content_block_start", "content_block": content})
        if content.get("type") != "tool_use":
            return None  # server-tool blocks are not part of the OpenAI reply
        index = len(self.tool_index)
        self.tool_index[block] = index
        initial = content.get("input") or None
        self.tool_has_args[block] = initial is not None
        arguments = orjson.dumps(initial).decode() if initial is not None else ""
        return Delta(tool_calls=[ToolCallDelta(index, id=content.get("id"),
                                               name=content.get("name"), arguments=arguments)])

    def _block_delta(self, block: int, delta: dict[str, Any]) -> Delta | None:
        if delta.get("type") == "text_delta":
            return Delta(content=delta.get("text") or "")
        if delta.get("type") in ("thinking_delta", "signature_delta"):
            return Delta(native={"type": "content_block_delta", "delta": delta})
        if delta.get("type") == "input_json_delta" and block in self.tool_index:
            fragment = delta.get("partial_json") or ""
            if not fragment:
                return None
            self.tool_has_args[block] = True
            return Delta(tool_calls=[ToolCallDelta(self.tool_index[block], arguments=fragment)])
        return None


class AnthropicOptions(AdapterOptions):
    default_max_tokens: int = Field(default=DEFAULT_MAX_TOKENS, ge=1)
    anthropic_version: str = DEFAULT_VERSION
    anthropic_beta: Annotated[str | list[str] | None,
                              either("a string or a list of strings")] = None
    json_schema_mode: Literal["native", "prompt"] = "native"


class AnthropicProvider(HttpProvider):
    def __init__(self, spec: DeploymentSpec) -> None:
        super().__init__(spec)
        base = (spec.base_url or ANTHROPIC_BASE_URL).rstrip("/")
        self.url = base + ("/messages" if base.endswith("/v1") else "/v1/messages")
        self.options = dict(spec.options)
        self.headers = {"anthropic-version": str(spec.options.get("anthropic_version",
                                                                  DEFAULT_VERSION))}
        beta = spec.options.get("anthropic_beta")
        if beta:
            self.headers["anthropic-beta"] = beta if isinstance(beta, str) else ",".join(beta)
        key = spec.secret()
        if key:
            self.headers["x-api-key"] = key

    async def chat(self, req: ChatRequest) -> ChatResponse:
        body = request_body(req, self.model, self.options, stream=False)
        answer = await self.send_json(self.url, body, self.headers)
        return parse_message(answer, self)

    async def count_tokens(self, req: ChatRequest) -> int:
        """Anthropic's own count of the request's input tokens
        (``POST /v1/messages/count_tokens``)."""
        body = request_body(req, self.model, self.options, stream=False)
        counted = {k: v for k, v in body.items() if k in COUNTED_FIELDS}
        answer = await self.send_json(self.url + "/count_tokens", counted, self.headers)
        tokens = answer.get("input_tokens") if isinstance(answer, dict) else None
        if not isinstance(tokens, int):
            raise UpstreamTransient(f"provider {self.id} answered count_tokens without "
                                    f"input_tokens", details={"provider": self.id})
        return tokens

    async def deltas(self, req: ChatRequest, outcome: StreamOutcome) -> AsyncIterator[Delta]:
        body = request_body(req, self.model, self.options, stream=True)
        state = StreamState(self, outcome)
        async with self.open_stream(self.url, body, self.headers) as chunks:
            async for _event, data in iter_sse(chunks):
                delta = state.feed(orjson.loads(data))
                if delta is not None:
                    yield delta
                if state.done:
                    break
        if not state.done:
            raise UpstreamTransient(f"provider {self.id} stream ended before message_stop",
                                    details={"provider": self.id})



TELEMETRY_SYSTEM = "anthropic"  # gen_ai.system
# the embedded default serves this vendor when these are all set
EMBEDDED_ENV = ("ANTHROPIC_API_KEY",)


def embedded_deployments(environ: Mapping[str, str]) -> list[dict[str, Any]]:
    """claude-sonnet when ANTHROPIC_API_KEY is set."""
    if not all(environ.get(key) for key in EMBEDDED_ENV):
        return []
    return [{"name": "claude-sonnet", "provider": "anthropic", "model": "claude-sonnet-4-5",
             "api_key_env": "ANTHROPIC_API_KEY"}]

@register("anthropic", AnthropicOptions)
def _anthropic(spec: DeploymentSpec) -> AnthropicProvider:
    return AnthropicProvider(spec)
