"""The run shape every multi-LLM orchestrator shares.

An orchestrator implements ``run(ctx, req, sink) -> Answer``. ``complete`` runs it with a
silent sink; ``stream`` runs it in a producer task behind a bounded queue
(``orchestrators.channel``) whose sink forwards OrchEvents (when the client opted in) and
the final answer's text deltas. A run that did not stream its final answer gets it
replayed. The stream then carries at most one ChunkError and exactly one End with the
usage summed over every upstream call.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from tako.core.errors import InternalError, TakoError
from tako.core.protocols import RunContext, StreamItem
from tako.core.types import ChatRequest, ChatResponse, ChunkError, Delta, End, OrchEvent, ToolCall
from tako.orchestrators.assembly import ToolCallBuffer
from tako.orchestrators.channel import DEFAULT_MAXSIZE, Put, pump


@dataclass(slots=True)
class Answer:
    content: str | None
    tool_calls: list[ToolCall] | None = None
    finish_reason: str = "stop"
    streamed: bool = False  # the text already went out as deltas
    deployment: str | None = None  # whose output it is


class Sink:
    """Where a run sends what the client sees. ``answer`` is False for sub-runs whose text
    is not the final answer, ``deltas`` also when nothing streams; events still flow when
    the client asked for them."""

    def __init__(self, put: Put | None = None, events: bool = False, deltas: bool = True):
        self._put = put
        self.events = events and put is not None
        self.answer = deltas  # what goes to this sink is the final answer (streamed or not)
        self.deltas = deltas and put is not None
        self._started = [False]

    @classmethod
    def silent(cls) -> Sink:
        return cls(None)

    def quiet(self) -> Sink:
        """The same event channel, without the final-answer text."""
        sink = Sink(self._put, self.events, deltas=False)
        sink._started = self._started
        return sink

    def final(self) -> Sink:
        """The same channel, passing the final-answer text (used by the last step) when
        this sink passes it: the last step of a nested run inside a quiet step stays
        quiet."""
        sink = Sink(self._put, self.events, deltas=self.answer)
        sink._started = self._started
        return sink

    @property
    def started(self) -> bool:
        return self._started[0]

    async def event(self, kind: str, **data: Any) -> None:
        if self.events and self._put is not None:
            await self._put(OrchEvent(kind, data))

    async def delta(self, text: str) -> None:
        if not self.deltas or self._put is None:
            return
        self._started[0] = True
        await self._put(Delta(content=text))


def record(ctx: RunContext, **entry: Any) -> None:
    """Append a step to the client's trace when it asked for one."""
    if ctx.trace is not None:
        ctx.trace.append(entry)


class Orchestration:
    """Base for orchestrators that implement ``run``."""

    kind = "orchestration"

    async def run(self, ctx: RunContext, req: ChatRequest, sink: Sink) -> Answer:
        raise NotImplementedError

    async def complete(self, ctx: RunContext, req: ChatRequest) -> ChatResponse:
        answer = await self.run(ctx, req, Sink.silent())
        ctx.answered_by = answer.deployment or ctx.answered_by
        return ChatResponse(
            id=f"chatcmpl-{uuid.uuid4().hex[:24]}", model=req.model, created=int(time.time()),
            content=answer.content, tool_calls=answer.tool_calls,
            finish_reason=answer.finish_reason, usage=ctx.usage.model_copy(),
            provider_id=ctx.answered_by,
        )

    def stream(
        self, ctx: RunContext, req: ChatRequest, maxsize: int = DEFAULT_MAXSIZE
    ) -> AsyncIterator[StreamItem]:
        async def produce(put: Put) -> None:
            sink = Sink(put, ctx.emit_events)
            try:
                answer = await self.run(ctx, req, sink)
            except TakoError as exc:
                await put(ChunkError(exc))
                await put(End("error", ctx.usage.model_copy()))
                return
            except Exception as exc:  # a bug must still end the stream properly
                error = InternalError(f"{self.kind} orchestrator failed: {exc!r}")
                await put(ChunkError(error))
                await put(End("error", ctx.usage.model_copy()))
                return
            ctx.answered_by = answer.deployment or ctx.answered_by
            if not (answer.streamed and sink.started):
                await put(Delta(content=answer.content or ""))
                for delta in ToolCallBuffer().as_deltas(answer.tool_calls or []):
                    await put(delta)
            await sink.event("final", finish_reason=answer.finish_reason,
                             usage=ctx.usage.to_openai(), deployment=ctx.answered_by)
            await put(End(answer.finish_reason, ctx.usage.model_copy()))

        return pump(produce, maxsize)
