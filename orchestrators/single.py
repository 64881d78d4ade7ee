"""``single``: one deployment in a tool loop.

Params (``SingleParams``): ``deployment`` (alias), ``max_steps`` (default 8), ``tools``
(server-side tool names). Server-side tool calls run here and the loop continues; any
client-side tool call ends the run and goes back to the client, as OpenAI does. With no
server-side tools the provider's answer (or stream) passes straight through.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from pydantic import Field

from tako.core.errors import InternalError, InvalidRequest, TakoError
from tako.core.protocols import RunContext, StreamItem
from tako.core.types import (
    ChatRequest,
    ChatResponse,
    ChunkError,
    Delta,
    End,
    Message,
    OrchEvent,
    ToolCall,
)
from tako.orchestrators.assembly import ToolCallBuffer, with_messages
from tako.orchestrators.calls import deployment_of, run_tool_calls
from tako.orchestrators.flow import Answer, Sink
from tako.orchestrators.params import Alias, Params, ToolName
from tako.orchestrators.registry import register


class SingleParams(Params):
    deployment: Alias
    max_steps: int = Field(default=8, ge=1)
    tools: list[ToolName] = []


@register("single", SingleParams)
class Single:
    kind = "single"

    def __init__(self, params: SingleParams) -> None:
        self.alias = params.deployment  # a deployment or alias name
        self.max_steps = params.max_steps
        self.tool_names = list(params.tools)

    def _prepare(self, ctx: RunContext, req: ChatRequest) -> tuple[ChatRequest, set[str]]:
        server = {n for n in self.tool_names if ctx.tools.get(n) is not None}
        if not server:
            return req, server
        client_names = {t.function.name for t in req.tools or ()}
        clash = client_names & server
        if clash:
            raise InvalidRequest(f"tool names {sorted(clash)} are reserved by the gateway",
                                 param="tools")
        specs = list(req.tools or ()) + ctx.tools.specs(sorted(server))
        return req.model_copy(update={"tools": specs}), server

    async def complete(self, ctx: RunContext, req: ChatRequest) -> ChatResponse:
        return await self._complete(ctx, req, Sink.silent())

    async def run(self, ctx: RunContext, req: ChatRequest, sink: Sink) -> Answer:
        """The whole answer, non-streaming, with the loop's events on ``sink`` (how an
        enclosing orchestrator runs it: the same calls with events on or off)."""
        response = await self._complete(ctx, req, sink)
        return Answer(response.content, response.tool_calls, response.finish_reason,
                      deployment=ctx.answered_by)

    async def _complete(self, ctx: RunContext, req: ChatRequest, sink: Sink) -> ChatResponse:
        provider = ctx.provider(self.alias)
        req, server = self._prepare(ctx, req)
        messages = list(req.messages)
        for step in range(self.max_steps):
            if server:
                await sink.event("step_start", step=step, deployment=self.alias)
            response = await provider.chat(with_messages(req, messages) if server else req)
            ctx.usage.add(response.usage)
            calls = response.tool_calls or []
            if not calls or not server or any(c.function.name not in server for c in calls):
                response.usage = ctx.usage.model_copy()
                ctx.answered_by = deployment_of(provider)
                return response
            messages.append(response.message())
            for call in calls:
                await sink.event("tool_call_start", name=call.function.name, id=call.id)
            results = await run_tool_calls(ctx, calls)
            for call, result in zip(calls, results, strict=True):
                await sink.event("tool_result", name=call.function.name, id=call.id,
                                 output=result.text()[:2000])
            messages.extend(results)
        raise _too_many_steps(self.max_steps)

    async def stream(self, ctx: RunContext, req: ChatRequest) -> AsyncIterator[StreamItem]:
        provider = ctx.provider(self.alias)
        req, server = self._prepare(ctx, req)
        messages = list(req.messages)
        for step in range(self.max_steps):
            if ctx.emit_events and server:
                yield OrchEvent("step_start", {"step": step, "deployment": self.alias})
            turn = _Turn()
            async for item in turn.relay(provider.stream(
                    with_messages(req, messages) if server else req), server):
                ctx.answered_by = deployment_of(provider)
                yield item
            ctx.usage.add(turn.end.usage)
            calls = turn.calls.result()
            if turn.end.finish_reason == "error" or not calls:
                for item in _closing(ctx, turn.end.finish_reason):
                    yield item
                return
            if any(c.function.name not in server for c in calls):
                for delta in turn.calls.as_deltas(calls):
                    yield delta
                for item in _closing(ctx, "tool_calls"):
                    yield item
                return
            messages.append(Message(role="assistant", content="".join(turn.text) or None,
                                    tool_calls=calls))
            async for event in self._run_tools_streaming(ctx, calls, messages):
                yield event
        yield ChunkError(_too_many_steps(self.max_steps))
        for item in _closing(ctx, "error"):
            yield item

    async def _run_tools_streaming(self, ctx: RunContext, calls: list[ToolCall],
                                   messages: list[Message]) -> AsyncIterator[OrchEvent]:
        """Run the server-side calls, appending their results to ``messages``; with events
        on, each call's start and result as events."""
        if ctx.emit_events:
            for call in calls:
                yield OrchEvent("tool_call_start", {"name": call.function.name, "id": call.id})
        results = await run_tool_calls(ctx, calls)
        if ctx.emit_events:
            for call, result in zip(calls, results, strict=True):
                yield OrchEvent("tool_result", {"name": call.function.name, "id": call.id,
                                                "output": result.text()[:2000]})
        messages.extend(results)


class _Turn:
    """One model call of the loop, relayed to the client: the text passes through; the
    tool calls are held back when the loop may run them itself."""

    def __init__(self) -> None:
        self.calls = ToolCallBuffer()
        self.text: list[str] = []
        self.end = End()

    async def relay(self, items: AsyncIterator[StreamItem],
                    server: set[str]) -> AsyncIterator[StreamItem]:
        async for item in items:
            if isinstance(item, End):
                self.end = item
                continue
            if isinstance(item, Delta) and item.tool_calls and server:
                self.calls.add(item.tool_calls)
                if item.content:
                    yield Delta(content=item.content)
                continue
            if isinstance(item, Delta) and item.content:
                self.text.append(item.content)
            yield item


def _closing(ctx: RunContext, finish_reason: str) -> list[StreamItem]:
    """The stream's last items: the ``final`` event (when the client asked for events),
    then the End with the usage of the whole loop."""
    usage = ctx.usage.model_copy()
    end = End(finish_reason, usage)
    if not ctx.emit_events:
        return [end]
    final = OrchEvent("final", {"finish_reason": finish_reason, "usage": usage.to_openai(),
                                "deployment": ctx.answered_by})
    return [final, end]


def _too_many_steps(max_steps: int) -> TakoError:
    return InternalError(f"the tool loop did not finish within max_steps={max_steps}",
                         code="max_steps_exceeded")

