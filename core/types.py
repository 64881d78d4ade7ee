"""Request, response, stream and identity types shared by every package."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, model_validator

from tako.core.errors import TakoError


class _Open(BaseModel):
    """OpenAI objects grow new fields; unknown ones are kept and passed on."""

    model_config = ConfigDict(extra="allow")


class ImageUrl(_Open):
    url: str
    detail: str | None = None


class ContentPart(_Open):
    """One part of a message: ``text``, ``image_url`` (http(s) or data URL), ``input_audio``,
    ``file`` or (assistant) ``refusal``; each carries the field its type names."""

    type: Literal["text", "image_url", "input_audio", "file", "refusal"]
    text: str | None = None
    image_url: ImageUrl | None = None
    input_audio: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _carries_its_type(self) -> ContentPart:
        if getattr(self, self.type, None) is None:
            raise ValueError(f"a content part of type '{self.type}' needs a '{self.type}' "
                             f"field")
        return self


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
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")  # OpenAI's rule for function names
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    @model_validator(mode="after")
    def _parameters_are_a_schema(self) -> FunctionDef:
        if self.parameters is not None:
            problem = json_schema_problem(json.dumps(self.parameters, sort_keys=True))
            if problem:
                raise ValueError(f"invalid JSON schema for function '{self.name}': {problem}")
        return self


@functools.lru_cache(maxsize=512)
def json_schema_problem(schema_json: str) -> str | None:
    """Why a function's ``parameters`` are not a JSON Schema of an object, or None."""
    from jsonschema import Draft202012Validator, SchemaError  # type: ignore[import-untyped]

    schema = json.loads(schema_json)
    if schema and schema.get("type", "object") != "object":
        return f"the schema must have type 'object', not {str(schema.get('type'))[:40]!r}"
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        return str(exc.message)[:200]
    return None


class ToolSpec(_Open):
    type: Literal["function"] = "function"
    function: FunctionDef


class StreamOptions(_Open):
    include_usage: bool | None = None


class ChatRequest(_Open):
    """OpenAI's CreateChatCompletionRequest; unknown fields stay in ``model_extra``."""

    model: str = Field(max_length=256)
    messages: list[Message] = Field(min_length=1)
    stream: StrictBool | None = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    n: StrictInt | None = Field(default=None, ge=1, le=1)
    tools: list[ToolSpec] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None
    user: str | None = None
    seed: int | None = None

    @model_validator(mode="after")
    def _tool_choice_names_a_tool(self) -> ChatRequest:
        problem = tool_choice_problem(self.tool_choice, self.tools)
        if problem:
            raise ValueError(problem)
        return self

    def output_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def extras(self) -> dict[str, Any]:
        """Fields the gateway does not know; providers pass them through."""
        return dict(self.model_extra or {})


def tool_choice_problem(choice: str | dict[str, Any] | None,
                        tools: list[ToolSpec] | None) -> str | None:
    """What is wrong with a request's ``tool_choice`` given its tools, as OpenAI checks it."""
    if choice is None or choice in ("none", "auto"):
        return None
    if choice == "required":
        return None if tools else "tool_choice 'required' needs tools"
    if isinstance(choice, str):
        return "tool_choice must be 'none', 'auto', 'required' or name a function"
    if choice.get("type") == "allowed_tools":
        return None
    function = choice.get("function") if choice.get("type") == "function" else None
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(name, str):
        return "tool_choice must be {'type': 'function', 'function': {'name': ...}}"
    if name not in {t.function.name for t in tools or ()}:
        return f"tool_choice names function '{name[:64]}', which is not among the tools"
    return None


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float = 0.0
    estimated: bool = False  # counted by the gateway: the upstream reported no usage

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, other: Usage) -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cached_tokens += other.cached_tokens
        self.reasoning_tokens += other.reasoning_tokens
        self.cost_usd += other.cost_usd
        self.estimated = self.estimated or other.estimated

    def to_openai(self) -> dict[str, Any]:
        """OpenAI's usage object, plus tako's extensions ``cost_usd`` and, when any of it
        was counted by the gateway, ``estimated: true``."""
        body: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
            "completion_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
            "cost_usd": round(self.cost_usd, 9),
        }
        if self.estimated:
            body["estimated"] = True
        return body


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
    #: a vendor's own stream event with no counterpart in tako's types, for an ingress
    #: that speaks that vendor's API to pass on unchanged (Anthropic's thinking blocks:
    #: ``{"type": "content_block_start" | "content_block_delta", ...}``); others skip it
    native: dict[str, Any] | None = None


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
