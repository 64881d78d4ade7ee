"""Scripted in-process deployments: each call takes the next step of a script."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from tako.core.errors import TakoError
from tako.core.types import ChatChunk, ChatRequest, ChatResponse, Delta, End, Message, Usage


@dataclass
class Reply:
    """A successful answer costing ``usd`` for ``prompt`` + ``completion`` tokens."""

    usd: float = 0.01
    prompt: int = 10
    completion: int = 5
    text: str = "hello world"


@dataclass
class Stream:
    """Chunks to yield; ``fail_after`` > 0 ends with a ChunkError after that many deltas;
    ``pause_s`` sleeps between chunks; ``end`` False leaves the End out, and then the
    stream hangs (``hang``) or just stops."""

    deltas: list[str] = field(default_factory=lambda: ["a", "b", "c"])
    usd: float = 0.01
    prompt: int = 10
    completion: int = 3
    fail_after: int = 0
    pause_s: float = 0.0
    end: bool = True
    hang: bool = True


Step = Reply | Stream | TakoError


class ScriptedProvider:
    def __init__(self, id: str, steps: list[Step] | None = None, *, repeat: Step | None = None,
                 price_per_token: float = 1e-6, delay_s: float = 0.0) -> None:
        self.id = id
        self.model = f"model-{id}"
        self.steps = list(steps or [])
        self.repeat = repeat if repeat is not None else Reply()
        self.price_per_token = price_per_token
        self.delay_s = delay_s
        self.calls = 0
        self.called = asyncio.Event()

    def _next(self) -> Step:
        self.calls += 1
        self.called.set()
        return self.steps.pop(0) if self.steps else self.repeat

    def estimate_cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens + completion_tokens) * self.price_per_token

    async def aclose(self) -> None:
        return None

    async def chat(self, req: ChatRequest) -> ChatResponse:
        step = self._next()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if isinstance(step, TakoError):
            raise step
        assert isinstance(step, Reply)
        return ChatResponse(id="r", model=self.model, created=0, content=step.text,
                            usage=Usage(prompt_tokens=step.prompt,
                                        completion_tokens=step.completion, cost_usd=step.usd),
                            provider_id=self.id)

    async def stream(self, req: ChatRequest) -> AsyncIterator[ChatChunk]:
        from tako.core.types import ChunkError

        step = self._next()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if isinstance(step, TakoError):
            raise step
        assert isinstance(step, Stream)
        for i, piece in enumerate(step.deltas):
            if step.fail_after and i == step.fail_after:
                yield ChunkError(TakoError(f"provider {self.id} broke mid-stream",
                                           status=502))
                break
            if step.pause_s:
                await asyncio.sleep(step.pause_s)
            yield Delta(content=piece, role="assistant" if i == 0 else None)
        if step.end:
            yield End("stop", Usage(prompt_tokens=step.prompt, completion_tokens=step.completion,
                                    cost_usd=step.usd))
        elif step.hang:
            await asyncio.sleep(3600)


def request(text: str = "hi", max_tokens: int | None = 100) -> ChatRequest:
    return ChatRequest(model="alias", messages=[Message(role="user", content=text)],
                       max_tokens=max_tokens)
