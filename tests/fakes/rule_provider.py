"""A scripted in-process LlmProvider: answers by prompt pattern and records every request."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from tako.core.errors import UpstreamTransient
from tako.core.types import (
    ChatChunk,
    ChatRequest,
    ChatResponse,
    Delta,
    End,
    FunctionCall,
    ToolCall,
    ToolCallDelta,
    Usage,
)

Reply = str | Callable[[ChatRequest], str] | list[str]


def tool_call(text: str) -> ToolCall | None:
    """A reply written ``@call <name> <json arguments>`` becomes a tool call."""
    if not text.startswith("@call "):
        return None
    name, _, arguments = text[len("@call "):].partition(" ")
    return ToolCall(id=f"call_{uuid.uuid4().hex[:8]}",
                    function=FunctionCall(name=name, arguments=arguments or "{}"))


def prompt_text(req: ChatRequest) -> str:
    return "\n".join(f"{m.role}: {m.text()}" for m in req.messages)


class Scripted:
    """``rules``: (regex, reply) pairs tried in order against the last message's text
    (``match_all=True``: against the whole prompt). A list reply is consumed in order,
    its last entry repeating. Each call costs ``cost`` USD and 10 + 5 tokens."""

    def __init__(self, id: str, rules: Sequence[tuple[str, Reply]] = (), default: Reply = "ok",
                 delay: float = 0.0, cost: float = 0.001, match_all: bool = False,
                 fail: str | None = None) -> None:
        self.id = id
        self.model = f"scripted-{id}"
        self.rules = [(re.compile(p, re.DOTALL | re.IGNORECASE), r) for p, r in rules]
        self.default = default
        self.delay = delay
        self.cost = cost
        self.match_all = match_all
        self.fail = fail
        self.requests: list[ChatRequest] = []
        self.active = 0
        self.max_active = 0
        self.started: list[float] = []

    def prompts(self) -> list[str]:
        return [prompt_text(r) for r in self.requests]

    def _reply(self, req: ChatRequest) -> str:
        text = prompt_text(req) if self.match_all else req.messages[-1].text()
        for pattern, reply in self.rules:
            if pattern.search(text):
                return self._take(reply, req)
        return self._take(self.default, req)

    @staticmethod
    def _take(reply: Reply, req: ChatRequest) -> str:
        if isinstance(reply, list):
            return reply.pop(0) if len(reply) > 1 else reply[0]
        if callable(reply):
            return reply(req)
        return reply

    def usage(self) -> Usage:
        return Usage(prompt_tokens=10, completion_tokens=5, cost_usd=self.cost)

    async def _enter(self, req: ChatRequest) -> str:
        self.requests.append(req)
        self.started.append(time.monotonic())
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
        finally:
            self.active -= 1
        if self.fail:
            raise UpstreamTransient(f"provider {self.id} failed: {self.fail}")
        return self._reply(req)

    async def chat(self, req: ChatRequest) -> ChatResponse:
        text = await self._enter(req)
        call = tool_call(text)
        return ChatResponse(id=f"chatcmpl-{uuid.uuid4().hex[:8]}", model=self.model,
                            created=int(time.time()), content=None if call else text,
                            tool_calls=[call] if call else None,
                            finish_reason="tool_calls" if call else "stop",
                            usage=self.usage(), provider_id=self.id)

    async def stream(self, req: ChatRequest) -> AsyncIterator[ChatChunk]:
        text = await self._enter(req)
        call = tool_call(text)
        if call is not None:
            yield Delta(role="assistant", tool_calls=[ToolCallDelta(
                index=0, id=call.id, name=call.function.name,
                arguments=call.function.arguments)])
            yield End("tool_calls", self.usage())
            return
        words = text.split(" ")
        for i, word in enumerate(words):
            yield Delta(role="assistant" if i == 0 else None,
                        content=word if i == 0 else " " + word)
        yield End("stop", self.usage())

    def estimate_cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        return self.cost

    async def aclose(self) -> None:
        return None


def kinds(items: Sequence[Any]) -> list[str]:
    return [type(i).__name__ if not hasattr(i, "kind") else f"OrchEvent:{i.kind}"
            for i in items]
