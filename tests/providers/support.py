"""What the provider tests share: a provider built from a spec and closed after the test,
chat requests for a deployment, a drained stream and a sample function tool."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from core.protocols import LlmProvider
from core.specs import DeploymentSpec
from core.types import ChatChunk, ChatRequest
from providers.registry import build

P = TypeVar("P", bound=LlmProvider)

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]},
    },
}


@asynccontextmanager
async def built(spec: DeploymentSpec, kind: type[P]) -> AsyncIterator[P]:
    """The provider ``spec`` describes, which must be a ``kind``; closed on the way out."""
    provider = build(spec)
    assert isinstance(provider, kind)
    yield provider
    await provider.aclose()


def chat_for(deployment: str) -> Callable[..., ChatRequest]:
    """``chat(messages, **fields)``: a chat request addressed to ``deployment``."""

    def chat(messages: list[dict[str, Any]], **fields: Any) -> ChatRequest:
        return ChatRequest.model_validate({"model": deployment, "messages": messages,
                                           **fields})

    return chat


async def collect(provider: LlmProvider, req: ChatRequest) -> list[ChatChunk]:
    return [item async for item in provider.stream(req)]
