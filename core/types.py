"""Request, response, stream and identity types shared by every package."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

from tako.core.errors import TakoError


class _Open(BaseModel):
    """OpenAI objects grow new fields; unknown ones are kept and passed on."""

    model_config = ConfigDict(extra="allow")


class ImageUrl(_Open):
    url: str
    detail: str | None = None


class ContentPart(_Open):
    """One part of a message: ``text``, ``image_url`` (http(s) or data URL) or ``input_audio``."""

    type: str
    text: str | None = None
    image_url: ImageUrl | None = None
    input_audio: dict[str, Any] | None = None


class FunctionCall(_Open):
    name: str
    arguments: str = ""


class ToolCall(_Open):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(_Open):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    def text(self) -> str:
        """The message's text parts joined; images and audio are skipped."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text or "" for p in self.content if p.type == "text")


class FunctionDef(_Open):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolSpec(_Open):
    type: Literal["function"] = "function"
    function: FunctionDef


class StreamOptions(_Open):
    include_usage: bool | None = None


class ChatRequest(_Open):
    """OpenAI's CreateChatCompletionRequest; unknown fields stay in ``model_extra``."""

    model: str
    messages: list[Message] = Field(min_length=1)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    n: int | None = Field(default=None, ge=1, le=1)
    tools: list[ToolSpec] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None
    user: str | None = None
    seed: int | None = None

    def output_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def extras(self) -> dict[str, Any]:
        """Fields the gateway does not know; providers pass them through."""
        return dict(self.model_extra or {})


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float = 0.0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, other: Usage) -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cached_tokens += other.cached_tokens
        self.reasoning_tokens += other.reasoning_tokens
        self.cost_usd += other.cost_usd

    def to_openai(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
            "completion_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
        }


class ChatResponse(BaseModel):
    """One assistant turn. ``to_openai`` renders a CreateChatCompletionResponse body."""

    id: str
    model: str
    created: int
    content: str | None = None
    tool_calls: list[ToolCall] | None = None
    finish_reason: str = "stop"
    usage: Usage = Field(default_factory=Usage)
    provider_id: str | None = None
    extra: dict[str, Any] = Field(default_factory=dict)

    def message(self) -> Message:
        return Message(role="assistant", content=self.content, tool_calls=self.tool_calls)

    def to_openai(self, model: str | None = None) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self.content, "refusal": None}
        if self.tool_calls:
            message["tool_calls"] = [
                {"id": c.id, "type": "function",
                 "function": {"name": c.function.name, "arguments": c.function.arguments}}
                for c in self.tool_calls
            ]
        body: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": model or self.model,
            "choices": [
                {"index": 0, "message": message, "finish_reason": self.finish_reason,
                 "logprobs": None}
            ],
            "usage": self.usage.to_openai(),
        }
        body.update(self.extra)
        return body


# ---- stream items: plain dataclasses, they are made per token ----


@dataclass(slots=True)
class ToolCallDelta:
    index: int
    id: str | None = None
    name: str | None = None
    arguments: str | None = None


@dataclass(slots=True)
class Delta:
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None
    role: str | None = None


@dataclass(slots=True)
class ChunkError:
    error: TakoError


@dataclass(slots=True)
class End:
    finish_reason: str = "stop"
    usage: Usage = field(default_factory=Usage)


ChatChunk = Union[Delta, ChunkError, End]


@dataclass(slots=True)
class OrchEvent:
    """An orchestration event. ``kind`` is one of step_start, tool_call_start, tool_result,
    verifier_score, recursion, final; ``data`` is JSON-serialisable."""

    kind: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Principal:
    tenant_id: str
    user_id: str
    key_id: str
    scopes: frozenset[str] = frozenset()
    allowed_models: frozenset[str] | None = None  # None: every model
    metadata: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def may_use(self, model: str) -> bool:
        return self.allowed_models is None or model in self.allowed_models
