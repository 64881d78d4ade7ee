"""Upstream calls made by orchestrators: always through ``ctx.provider(alias)`` (the budget
stack), always adding the call's usage to ``ctx.usage``."""

from __future__ import annotations

from dataclasses import dataclass

from tako.core.errors import TakoError
from tako.core.protocols import LlmProvider, RunContext
from tako.core.types import ChatRequest, ChunkError, Delta, End, Message
from tako.orchestrators.assembly import with_messages
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


@dataclass(slots=True, frozen=True)
class Reply:
    text: str
    deployment: str  # the deployment that answered (after fallback within the alias)


def deployment_of(provider: LlmProvider) -> str:
    """The deployment that answered the provider's last call: a guarded alias knows which
    of its deployments it was; a plain provider is its own deployment."""
    answered: str | None = getattr(provider, "answered_by", None)
    return answered or provider.id


async def ask(ctx: RunContext, alias: str, req: ChatRequest,
              messages: list[Message]) -> Reply:
    """One non-streaming call."""
    provider = ctx.provider(alias)
    response = await provider.chat(upstream_request(req, alias, messages))
    ctx.usage.add(response.usage)
    return Reply(response.content or "", deployment_of(provider))


async def ask_streaming(ctx: RunContext, alias: str, req: ChatRequest,
                        messages: list[Message], sink: Sink) -> Reply:
    """One call whose text goes to the client as it arrives when ``sink`` passes deltas
    (it is then the answer: ``ctx.answered_by`` names its deployment); a plain call
    otherwise. A mid-stream failure is raised after its usage is counted."""
    if not sink.deltas:
        return await ask(ctx, alias, req, messages)
    text: list[str] = []
    failure: TakoError | None = None
    provider = ctx.provider(alias)
    stream = provider.stream(upstream_request(req, alias, messages, stream=True))
    async for item in stream:
        if isinstance(item, Delta) and item.content:
            if not text:
                ctx.answered_by = deployment_of(provider)
            text.append(item.content)
            await sink.delta(item.content)
        elif isinstance(item, ChunkError):
            failure = item.error
        elif isinstance(item, End):
            ctx.usage.add(item.usage)
    if failure is not None:
        raise failure
    return Reply("".join(text), deployment_of(provider))
