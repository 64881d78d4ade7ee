"""The in-process scripted LlmProvider: a deployment that answers without any network.

Each call takes one step: the reply of the first rule whose pattern is found in the last
message's text (``match_all=True``: in the whole prompt), else the next step queued in
``steps``, else ``default``. A step is a ``Reply``, a ``Stream``, a ``TakoError`` to
raise, a string (a ``Reply`` of that text costing ``cost_usd``), a callable of the
request returning one of those, or a list of them consumed in order, its last entry
repeating. A reply text written ``@call <name> <json arguments>`` is a tool call.

Every request is recorded (``requests``, ``calls``, ``started``), as is the most calls
ever in flight at once (``max_active``).
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Union

from tako.core.errors import TakoError
from tako.core.types import (
    ChatChunk,
    ChatRequest,
    ChatResponse,
    ChunkError,
    Delta,
    End,
    FunctionCall,
    Message,
    ToolCall,
    ToolCallDelta,
    Usage,
)


@dataclass
class Reply:
    """A successful answer costing ``usd`` for ``prompt`` + ``completion`` tokens; streamed
    word by word."""

    usd: float = 0.01
    prompt: int = 10
    completion: int = 5
    text: str = "hello world"

    def usage(self) -> Usage:
        return Usage(prompt_tokens=self.prompt, completion_tokens=self.completion,
                     cost_usd=self.usd)


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
Scripted = Union[Step, str, Callable[[ChatRequest], "Step | str"], list["Scripted"]]


def tool_call(text: str) -> ToolCall | None:
    """A reply written ``@call <name> <json arguments>`` becomes a tool call."""
    if not text.startswith("@call "):
        return None
    name, _, arguments = text[len("@call "):].partition(" ")
    return ToolCall(id=f"call_{uuid.uuid4().hex[:8]}",
                    function=FunctionCall(name=name, arguments=arguments or "{}"))


def prompt_text(req: ChatRequest) -> str:
    return "\n".join(f"{m.role}: {m.text()}" for m in req.messages)


def request(text: str = "hi", max_tokens: int | None = 100) -> ChatRequest:
    """A one-message chat request for the alias ``alias``."""
    return ChatRequest(model="alias", messages=[Message(role="user", content=text)],
                       max_tokens=max_tokens)


class ScriptedProvider:
    """See the module docstring. ``estimate_cost_usd`` is ``price_per_token`` per token,
    or ``cost_usd`` flat when ``price_per_token`` is None; ``delay_s`` is slept before
    every answer."""

    def __init__(self, id: str, steps: Sequence[Scripted] | None = None, *,
                 rules: Sequence[tuple[str, Scripted]] = (), default: Scripted | None = None,
                 match_all: bool = False, delay_s: float = 0.0, cost_usd: float = 0.001,
                 price_per_token: float | None = 1e-6) -> None:
        self.id = id
        self.model = f"model-{id}"
        self.steps = list(steps or [])
        self.rules = [(re.compile(p, re.DOTALL | re.IGNORECASE), r) for p, r in rules]
        self.default: Scripted = default if default is not None else Reply()
        self.match_all = match_all
        self.delay_s = delay_s
        self.cost_usd = cost_usd
        self.price_per_token = price_per_token
        self.requests: list[ChatRequest] = []
        self.started: list[float] = []
        self.active = 0
        self.max_active = 0
        self.called = asyncio.Event()

    @property
    def calls(self) -> int:
        return len(self.requests)

    def prompts(self) -> list[str]:
        return [prompt_text(r) for r in self.requests]

    def estimate_cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        if self.price_per_token is None:
            return self.cost_usd
        return (prompt_tokens + completion_tokens) * self.price_per_token

    async def aclose(self) -> None:
        return None

    def _scripted(self, req: ChatRequest) -> Scripted:
        text = prompt_text(req) if self.match_all else req.messages[-1].text()
        for pattern, reply in self.rules:
            if pattern.search(text):
                return reply
        return self.steps.pop(0) if self.steps else self.default

    def _resolve(self, scripted: Scripted, req: ChatRequest) -> Step:
        if isinstance(scripted, list):
            scripted = scripted.pop(0) if len(scripted) > 1 else scripted[0]
        if callable(scripted) and not isinstance(scripted, Step):
            scripted = scripted(req)
        if isinstance(scripted, str):
            return Reply(text=scripted, usd=self.cost_usd)
        return scripted

    async def _next_step(self, req: ChatRequest) -> Reply | Stream:
        self.requests.append(req)
        self.started.append(time.monotonic())
        self.called.set()
        step = self._resolve(self._scripted(req), req)
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
        finally:
            self.active -= 1
        if isinstance(step, TakoError):
            raise step
        return step

    async def chat(self, req: ChatRequest) -> ChatResponse:
        step = await self._next_step(req)
        if isinstance(step, Stream):
            step = Reply(usd=step.usd, prompt=step.prompt, completion=step.completion,
                         text="".join(step.deltas))
        call = tool_call(step.text)
        return ChatResponse(id=f"chatcmpl-{uuid.uuid4().hex[:8]}", model=self.model,
                            created=int(time.time()), content=None if call else step.text,
                            tool_calls=[call] if call else None,
                            finish_reason="tool_calls" if call else "stop",
                            usage=step.usage(), provider_id=self.id)

    async def stream(self, req: ChatRequest) -> AsyncIterator[ChatChunk]:
        step = await self._next_step(req)
        chunks = self._reply_chunks(step) if isinstance(step, Reply) else self._stream_chunks(step)
        async for chunk in chunks:
            yield chunk

    @staticmethod
    async def _reply_chunks(reply: Reply) -> AsyncIterator[ChatChunk]:
        call = tool_call(reply.text)
        if call is not None:
            yield Delta(tool_calls=[ToolCallDelta(
                index=0, id=call.id, name=call.function.name,
                arguments=call.function.arguments)])
            yield End("tool_calls", reply.usage())
            return
        for i, word in enumerate(reply.text.split(" ")):
            yield Delta(content=word if i == 0 else " " + word)
        yield End("stop", reply.usage())

    async def _stream_chunks(self, step: Stream) -> AsyncIterator[ChatChunk]:
        for i, piece in enumerate(step.deltas):
            if step.fail_after and i == step.fail_after:
                yield ChunkError(TakoError(f"provider {self.id} broke mid-stream", status=502))
                break
            if step.pause_s:
                await asyncio.sleep(step.pause_s)
            yield Delta(content=piece)
        if step.end:
            yield End("stop", Usage(prompt_tokens=step.prompt, completion_tokens=step.completion,
                                    cost_usd=step.usd))
        elif step.hang:
            await asyncio.sleep(3600)
