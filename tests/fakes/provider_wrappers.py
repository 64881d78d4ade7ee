"""Wrappers over the scripted in-process provider: a deployment spec to carry, calls in
flight to count."""

from __future__ import annotations

from collections.abc import AsyncIterator

from tako.core.specs import DeploymentSpec
from tako.core.types import ChatChunk, ChatRequest, ChatResponse
from tests.fakes.provider import ScriptedProvider


class ProviderWithSpec:
    """A scripted provider that carries a deployment spec of the given provider kind."""

    def __init__(self, inner: ScriptedProvider, kind: str, **flags: object) -> None:
        self.inner = inner
        self.id = inner.id
        self.model = inner.model
        self.spec = DeploymentSpec(name=inner.id, provider=kind, model=inner.model, **flags)

    async def chat(self, req: ChatRequest) -> ChatResponse:
        return await self.inner.chat(req)

    def stream(self, req: ChatRequest) -> object:
        return self.inner.stream(req)

    def estimate_cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        return 0.0

    async def aclose(self) -> None:
        return None


class Concurrency:
    """Counts upstream calls in flight over every provider it watches."""

    def __init__(self) -> None:
        self.active = 0
        self.max_active = 0

    def watch(self, provider: ScriptedProvider) -> Watched:
        return Watched(provider, self)


class Watched:
    def __init__(self, inner: ScriptedProvider, counter: Concurrency) -> None:
        self.inner, self.counter = inner, counter
        self.id, self.model = inner.id, inner.model

    async def chat(self, req: ChatRequest) -> ChatResponse:
        self.counter.active += 1
        self.counter.max_active = max(self.counter.max_active, self.counter.active)
        try:
            return await self.inner.chat(req)
        finally:
            self.counter.active -= 1

    async def stream(self, req: ChatRequest) -> AsyncIterator[ChatChunk]:
        self.counter.active += 1
        self.counter.max_active = max(self.counter.max_active, self.counter.active)
        try:
            async for item in self.inner.stream(req):
                yield item
        finally:
            self.counter.active -= 1

    def estimate_cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        return 0.0

    async def aclose(self) -> None:
        return None
