"""Upstream calls made by orchestrators: always through ``ctx.provider(alias)`` (the budget
stack), always adding the call's usage to ``ctx.usage``."""

from __future__ import annotations

from tako.core.errors import TakoError
from tako.core.protocols import RunContext
from tako.core.types import ChatRequest, ChunkError, Delta, End, Message
from tako.orchestrators.base import with_messages
from tako.orchestrators.flow import Sink


def system(text: str) -> Message:
    return Message(role="system", content=text)


def user(text: str) -> Message:
    return Message(role="user", content=text)


def assistant(text: str) -> Message:
    return Message(role="assistant", content=text)


def upstream_request(req: ChatRequest, alias: str, messages: list[Message],
                     *, stream: bool = False) -> ChatRequest:
    """The client's sampling settings over internal messages; client tools, response
    format and stream options belong to the final answer only and are dropped."""
    return with_messages(
        req, messages, model=alias, stream=stream, stream_options=None, tools=None,
        tool_choice=None, parallel_tool_calls=None, response_format=None, n=None,
    )


async def ask(ctx: RunContext, alias: str, req: ChatRequest, messages: list[Message]) -> str:
    """One non-streaming call; returns the answer's text."""
    response = await ctx.provider(alias).chat(upstream_request(req, alias, messages))
    ctx.usage.add(response.usage)
    return response.content or ""


async def ask_streaming(ctx: RunContext, alias: str, req: ChatRequest,
                        messages: list[Message], sink: Sink) -> str:
    """One call whose text goes to the client as it arrives when ``sink`` passes deltas;
    a plain call otherwise. A mid-stream failure is raised after its usage is counted."""
    if not sink.deltas:
        return await ask(ctx, alias, req, messages)
    text: list[str] = []
    failure: TakoError | None = None
    stream = ctx.provider(alias).stream(upstream_request(req, alias, messages, stream=True))
    async for item in stream:
        if isinstance(item, Delta) and item.content:
            text.append(item.content)
            await sink.delta(item.content)
        elif isinstance(item, ChunkError):
            failure = item.error
        elif isinstance(item, End):
            ctx.usage.add(item.usage)
    if failure is not None:
        raise failure
    return "".join(text)
