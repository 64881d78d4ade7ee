"""What the provider tests share: a provider built from a spec and closed after the test,
chat requests for a deployment, a drained stream and a sample function tool."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import pytest

from tako.core.errors import TakoError
from tako.core.protocols import LlmProvider
from tako.core.specs import DeploymentSpec
from tako.core.types import ChatChunk, ChatRequest, Delta
from tako.providers.registry import build

P = TypeVar("P", bound=LlmProvider)



def weather_tool(**schema: Any) -> dict[str, Any]:
    """An OpenAI function tool taking a required ``city``; ``schema`` adds keys to its
    parameters schema."""
    return {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                           "required": ["city"], **schema},
        },
    }


WEATHER_TOOL = weather_tool()


@asynccontextmanager
async def built(spec: DeploymentSpec, kind: type[P]) -> AsyncIterator[P]:
    """The provider ``spec`` describes, which must be a ``kind``; closed on the way out."""
    provider = build(spec)
    try:
        assert isinstance(provider, kind)
        yield provider
    finally:
        await provider.aclose()


def chat_for(deployment: str) -> Callable[..., ChatRequest]:
    """``chat(messages, **fields)``: a chat request addressed to ``deployment``."""

    def chat(messages: list[dict[str, Any]], **fields: Any) -> ChatRequest:
        return ChatRequest.model_validate({"model": deployment, "messages": messages,
                                           **fields})

    return chat


async def collect(provider: LlmProvider, req: ChatRequest) -> list[ChatChunk]:
    return [item async for item in provider.stream(req)]


def tool_calls_by_index(items: list[ChatChunk] | list[Delta]) -> dict[int, dict[str, str]]:
    """The streamed tool calls in ``items``, their id, name and argument fragments joined
    per call index."""
    calls: dict[int, dict[str, str]] = {}
    for item in items:
        for tc in (item.tool_calls or ()) if isinstance(item, Delta) else ():
            call = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
            call["id"] += tc.id or ""
            call["name"] += tc.name or ""
            call["arguments"] += tc.arguments or ""
    return calls


async def assert_vendor_error(provider: LlmProvider, req: ChatRequest, reply: Any,
                              error_class: type[TakoError], code: str,
                              retry_after: float) -> None:
    """With the scripted error ``reply`` queued twice on the provider's fake, ``req`` fails
    ``chat`` with ``error_class`` and ``code``, the vendor's status and body in the details
    and, for a 429, ``retry_after``; before the first chunk of a stream the same failure is
    raised, not yielded."""
    with pytest.raises(error_class) as caught:
        await provider.chat(req)
    assert caught.value.code == code
    assert caught.value.details is not None
    assert caught.value.details["status"] == reply.status
    assert caught.value.details["body"] == reply.body
    if reply.status == 429:
        assert caught.value.retry_after == retry_after
    with pytest.raises(error_class):
        await collect(provider, req)
