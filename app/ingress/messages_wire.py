"""Anthropic's Messages API at the edge: the request body as it arrives, its translation
into a ChatRequest, and Anthropic's error shape.

The request models accept what Anthropic's API accepts for client-defined tools and
content blocks (text, image from base64 or a URL, ``tool_use``, ``tool_result``,
``thinking`` and ``redacted_thinking``), and refuse unknown top-level fields as the API
does. Fields tako has no counterpart for travel to the upstream as ChatRequest extras the
Anthropic adapter passes through (``top_k``, ``thinking``, ``service_tier``); content
extras (``cache_control``) stay on the parts and messages they were on, earlier thinking
blocks ride on their assistant message as ``thinking_blocks`` and a tool result's
``is_error`` on its tool message. All of them only when every deployment that may answer
is Anthropic's (``strip_native`` takes them out otherwise: OpenAI-compatible vendors are
sent unknown fields as they come, and refuse them).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictBool
from starlette.responses import Response

from tako.app.errors import clipped
from tako.core.errors import InvalidRequest, TakoError

# ---------------------------------------------------------------- errors


# tako's status -> Anthropic's error type (its SDK picks the exception from the status)
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",  # the SDK's error types have no request_too_large
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def error_type(status: int) -> str:
    if status in ERROR_TYPES:
        return ERROR_TYPES[status]
    return "api_error" if status >= 500 else "invalid_request_error"


def error_body(error: TakoError) -> dict[str, Any]:
    """``{"type": "error", "error": {"type", "message"}}``; the request id when known."""
    body: dict[str, Any] = {"type": "error", "error": {
        "type": error_type(error.status), "message": clipped(error.message)}}
    request_id = error.headers.get("x-request-id")
    if request_id:
        body["request_id"] = request_id
    return body


def anthropic_error_response(error: TakoError) -> Response:
    return Response(orjson.dumps(error_body(error)), status_code=error.status,
                    media_type="application/json", headers=error.response_headers())


# ---------------------------------------------------------------- request models


class _Block(BaseModel):
    """Content blocks carry ``cache_control`` and, in newer API versions, more fields."""

    model_config = ConfigDict(extra="allow")


class TextBlock(_Block):
    type: Literal["text"]
    text: str


class Base64Source(BaseModel):
    type: Literal["base64"]
    media_type: str
    data: str


class UrlSource(BaseModel):
    type: Literal["url"]
    url: str


class ImageBlock(_Block):
    type: Literal["image"]
    source: Annotated[Base64Source | UrlSource, Field(discriminator="type")]


class ToolUseBlock(_Block):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]


class ToolResultBlock(_Block):
    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[Annotated[TextBlock | ImageBlock, Field(discriminator="type")]] = ""
    is_error: bool | None = None


class ThinkingBlock(_Block):
    type: Literal["thinking"]
    thinking: str
    signature: str


class RedactedThinkingBlock(_Block):
    type: Literal["redacted_thinking"]
    data: str


Block = Annotated[TextBlock | ImageBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock
                  | RedactedThinkingBlock, Field(discriminator="type")]


class InputMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant"]
    content: str | list[Block]


class ToolDef(BaseModel):
    model_config = ConfigDict(extra="allow")  # cache_control

    name: str
    description: str | None = None
    input_schema: dict[str, Any]
    type: Literal["custom"] | None = None


class ToolChoice(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class Metadata(BaseModel):
    user_id: str | None = None


class MessagesRequest(BaseModel):
    """Anthropic's ``POST /v1/messages`` body (``max_tokens`` optional only for
    ``count_tokens``, which the caller checks)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(max_length=256)
    messages: list[InputMessage]
    max_tokens: int | None = Field(default=None, ge=1)
    system: str | list[TextBlock] | None = None
    stop_sequences: list[str] | None = None
    stream: StrictBool | None = None
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    tools: list[ToolDef] | None = None
    tool_choice: ToolChoice | None = None
    metadata: Metadata | None = None
    thinking: dict[str, Any] | None = None
    service_tier: str | None = None


# ---------------------------------------------------------------- translation


def _extras(block: BaseModel) -> dict[str, Any]:
    return dict(block.model_extra or {})


def _text_part(block: TextBlock) -> dict[str, Any]:
    return {"type": "text", "text": block.text, **_extras(block)}


def _image_part(block: ImageBlock) -> dict[str, Any]:
    source = block.source
    if isinstance(source, Base64Source):
        url = f"data:{source.media_type};base64,{source.data}"
    else:
        url = source.url
    return {"type": "image_url", "image_url": {"url": url}, **_extras(block)}


def _parts(blocks: list[Any]) -> list[dict[str, Any]]:
    return [_text_part(b) if isinstance(b, TextBlock) else _image_part(b) for b in blocks]


def _tool_message(block: ToolResultBlock) -> dict[str, Any]:
    content: str | list[dict[str, Any]] = (
        block.content if isinstance(block.content, str) else _parts(block.content))
    message: dict[str, Any] = {"role": "tool", "tool_call_id": block.tool_use_id,
                               "content": content}
    if block.is_error:
        message["is_error"] = True
    return message


def _user_messages(blocks: list[Any]) -> list[dict[str, Any]]:
    """A user turn: its tool results as tool messages (first, as Anthropic orders them),
    the rest as one user message."""
    out = [_tool_message(b) for b in blocks if isinstance(b, ToolResultBlock)]
    rest = [b for b in blocks if not isinstance(b, ToolResultBlock)]
    for block in rest:
        if not isinstance(block, TextBlock | ImageBlock):
            raise InvalidRequest(f"a user message cannot hold a '{block.type}' block",
                                 param="messages")
    if rest or not out:
        out.append({"role": "user", "content": _plain(_parts(rest)) or _parts(rest)})
    return out


def _plain(parts: list[dict[str, Any]]) -> str | None:
    """The text of a single text part with nothing else on it (every API takes a string
    there), else None."""
    if len(parts) == 1 and parts[0].keys() == {"type", "text"} and parts[0]["type"] == "text":
        return str(parts[0]["text"])
    return None


def _assistant_message(blocks: list[Any]) -> dict[str, Any]:
    texts = [_text_part(b) for b in blocks if isinstance(b, TextBlock)]
    calls = [{"id": b.id, "type": "function",
              "function": {"name": b.name, "arguments": orjson.dumps(b.input).decode()}}
             for b in blocks if isinstance(b, ToolUseBlock)]
    thinking = [b.model_dump() for b in blocks
                if isinstance(b, ThinkingBlock | RedactedThinkingBlock)]
    if any(isinstance(b, ImageBlock | ToolResultBlock) for b in blocks):
        raise InvalidRequest("an assistant message holds only text, tool_use and thinking "
                             "blocks", param="messages")
    message: dict[str, Any] = {"role": "assistant", "content": _plain(texts) or texts or None}
    if calls:
        message["tool_calls"] = calls
    if thinking:
        message["thinking_blocks"] = thinking
    return message


def _messages(req: MessagesRequest) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if isinstance(req.system, str) and req.system:
        out.append({"role": "system", "content": req.system})
    elif req.system:
        out.append({"role": "system", "content": [_text_part(b) for b in req.system]})
    for message in req.messages:
        if isinstance(message.content, str):
            out.append({"role": message.role, "content": message.content})
        elif message.role == "user":
            out.extend(_user_messages(message.content))
        else:
            out.append(_assistant_message(message.content))
    return out


def _tool(tool: ToolDef) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name, "parameters": tool.input_schema,
                                **_extras(tool)}
    if tool.description is not None:
        function["description"] = tool.description
    return {"type": "function", "function": function}


def _tool_choice(choice: ToolChoice, body: dict[str, Any]) -> None:
    if choice.type == "tool":
        if not choice.name:
            raise InvalidRequest("tool_choice of type 'tool' needs a name",
                                 param="tool_choice.name")
        body["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
    else:
        body["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[choice.type]
    if choice.disable_parallel_tool_use:
        body["parallel_tool_calls"] = False


PASSED_ON = ("top_k", "thinking", "service_tier")
PART_FIELDS = frozenset({"type", "text", "image_url"})


def strip_native(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` (from ``chat_body``) without the Anthropic-only fields."""
    for name in PASSED_ON:
        body.pop(name, None)
    for message in body["messages"]:
        message.pop("thinking_blocks", None)
        message.pop("is_error", None)
        if isinstance(message.get("content"), list):
            message["content"] = [{k: v for k, v in part.items() if k in PART_FIELDS}
                                  for part in message["content"]]
    for tool in body.get("tools") or ():
        tool["function"].pop("cache_control", None)
    return body


def chat_body(req: MessagesRequest) -> dict[str, Any]:
    """The ChatRequest body (OpenAI's names) for an Anthropic request."""
    if not req.messages:
        raise InvalidRequest("messages: at least one message is required", param="messages")
    body: dict[str, Any] = {"model": req.model, "messages": _messages(req),
                            "stream": bool(req.stream)}
    for name in ("max_tokens", "temperature", "top_p"):
        if getattr(req, name) is not None:
            body[name] = getattr(req, name)
    if req.stop_sequences:
        body["stop"] = req.stop_sequences
    if req.tools:
        body["tools"] = [_tool(t) for t in req.tools]
    if req.tool_choice is not None:
        _tool_choice(req.tool_choice, body)
    if req.metadata is not None and req.metadata.user_id:
        body["user"] = req.metadata.user_id
    for name in PASSED_ON:
        if getattr(req, name) is not None:
            body[name] = getattr(req, name)
    return body
