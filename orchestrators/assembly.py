"""Helpers every orchestrator uses: folding a stream into a response and back."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

from tako.core.protocols import StreamItem
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
)


class ToolCallBuffer:
    """Reassembles streamed tool-call fragments by index."""

    def __init__(self) -> None:
        self.calls: dict[int, dict[str, str]] = {}

    def add(self, deltas: list[ToolCallDelta]) -> None:
        for d in deltas:
            slot = self.calls.setdefault(d.index, {"id": "", "name": "", "arguments": ""})
            if d.id:
                slot["id"] = d.id
            if d.name:
                slot["name"] += d.name
            if d.arguments:
                slot["arguments"] += d.arguments

    def result(self) -> list[ToolCall]:
        return [
            ToolCall(id=s["id"] or f"call_{uuid.uuid4().hex[:16]}",
                     function=FunctionCall(name=s["name"], arguments=s["arguments"]))
            for _, s in sorted(self.calls.items())
        ]

    def as_deltas(self, calls: list[ToolCall]) -> list[Delta]:
        return [
            Delta(tool_calls=[ToolCallDelta(index=i, id=c.id, name=c.function.name,
                                            arguments=c.function.arguments)])
            for i, c in enumerate(calls)
        ]


async def collect(stream: AsyncIterator[StreamItem | ChatChunk], model: str) -> ChatResponse:
    """Fold a stream into one response; a ChunkError is raised."""
    text: list[str] = []
    calls = ToolCallBuffer()
    end = End()
    async for item in stream:
        if isinstance(item, Delta):
            if item.content:
                text.append(item.content)
            if item.tool_calls:
                calls.add(item.tool_calls)
        elif isinstance(item, ChunkError):
            raise item.error
        elif isinstance(item, End):
            end = item
    tool_calls = calls.result() or None
    return ChatResponse(
        id=f"chatcmpl-{uuid.uuid4().hex[:24]}", model=model, created=int(time.time()),
        content="".join(text) if text or not tool_calls else None, tool_calls=tool_calls,
        finish_reason=end.finish_reason, usage=end.usage,
    )



def with_messages(req: ChatRequest, messages: list[Message], **update: object) -> ChatRequest:
    """A copy of ``req`` with other messages (and other fields), unknown fields kept."""
    return req.model_copy(update={"messages": messages, **update})
