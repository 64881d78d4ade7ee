"""Upstream calls made by orchestrators: always through ``ctx.provider(alias)`` (the budget
stack), always adding the call's usage to ``ctx.usage``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from tako.core.errors import InternalError, TakoError
from tako.core.protocols import LlmProvider, RunContext
from tako.core.specs import DeploymentSpec
from tako.core.types import (
    ChatRequest,
    ChunkError,
    Delta,
    End,
    Message,
    StreamOptions,
    ToolCall,
    ToolSpec,
)
from tako.orchestrators.assembly import with_messages
from tako.orchestrators.flow import Sink


def system(text: str) -> Message:
    return Message(role="system", content=text)


def user(text: str) -> Message:
    return Message(role="user", content=text)


def assistant(text: str) -> Message:
    return Message(role="assistant", content=text)


@dataclass(slots=True, frozen=True)
class CallSettings:
    """What an internal call asks for itself, instead of inheriting the client's sampling:
    its output limit, its temperature, and for a control message (plan, router choice,
    score, verdict) the JSON schema its reply must follow, sent as ``response_format``
    to deployments that take structured outputs."""

    max_tokens: int | None = None
    temperature: float | None = None
    schema: dict[str, Any] | None = None
    schema_name: str = "reply"
    clients_sampling: bool = False  # the client's output limit, sampling and stops


WORKER = CallSettings()
"""A worker's answer: the deployment's own defaults."""

FINAL_ANSWER = CallSettings(clients_sampling=True)
"""The call whose output streams to the client as the answer: the client's output limit,
sampling and stop sequences apply to it."""


def control(name: str, schema: dict[str, Any], max_tokens: int = 1024) -> CallSettings:
    """Settings of a control message: deterministic, bounded, in the given JSON shape."""
    return CallSettings(max_tokens=max_tokens, temperature=0.0, schema=schema,
                        schema_name=name)


def deployment_specs(provider: Any) -> list[DeploymentSpec]:
    """The deployment specs behind a provider: an alias's deployments (``providers``),
    through wrappers (``inner``), down to adapters holding their ``spec``."""
    spec = getattr(provider, "spec", None)
    if isinstance(spec, DeploymentSpec):
        return [spec]
    inner = getattr(provider, "inner", None)
    if inner is not None:
        return deployment_specs(inner)
    return [s for p in getattr(provider, "providers", ()) for s in deployment_specs(p)]


def fold_system(messages: list[Message]) -> list[Message]:
    """System text moved into the first user turn, for models that drop system messages."""
    system_text = "\n\n".join(m.text() for m in messages if m.role == "system")
    rest = [m for m in messages if m.role != "system"]
    if not system_text:
        return rest
    first_user = next((i for i, m in enumerate(rest) if m.role == "user"), None)
    if first_user is None:
        return [user(system_text), *rest]
    folded = user(f"{system_text}\n\n{rest[first_user].text()}")
    return [*rest[:first_user], folded, *rest[first_user + 1:]]


def upstream_request(req: ChatRequest, alias: str, messages: list[Message], *,
                     stream: bool = False, settings: CallSettings = WORKER,
                     provider: Any = None) -> ChatRequest:
    """An internal call: internal messages with the call's own settings. The client's
    sampling, stop sequences, tools, response format and stream options belong to the
    final answer only and are dropped; a streamed call asks for its usage."""
    specs = deployment_specs(provider)
    if any(s.fold_system_prompt for s in specs):
        messages = fold_system(messages)
    response_format = None
    if settings.schema is not None and specs and all(
            s.takes_structured_outputs() for s in specs):
        response_format = {"type": "json_schema", "json_schema": {
            "name": settings.schema_name, "schema": settings.schema}}
    sampling: dict[str, Any] = {} if settings.clients_sampling else {
        "stop": None, "max_tokens": settings.max_tokens, "max_completion_tokens": None,
        "temperature": settings.temperature, "top_p": None}
    return with_messages(
        req, messages, model=alias, stream=stream,
        stream_options=StreamOptions(include_usage=True) if stream else None,
        tools=None, tool_choice=None, parallel_tool_calls=None, n=None,
        response_format=response_format, **sampling,
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


WORKER_TOOLS = "orchestrators.worker_tools"
"""``ctx.state`` key: the server-side tools (names) offered to the worker calls of a run,
never to its control messages; their calls run here, at most ``MAX_TOOL_STEPS`` model
calls per ask."""

MAX_TOOL_STEPS = 8


async def run_tool_calls(ctx: RunContext, calls: list[ToolCall]) -> list[Message]:
    """The server-side tool calls run, each answered by a tool message (an error text for
    bad arguments or an unknown tool)."""
    results = []
    for call in calls:
        tool = ctx.tools.get(call.function.name)
        try:
            if tool is None:
                raise ValueError("no such server-side tool")
            args: Any = orjson.loads(call.function.arguments or "{}")
            if not isinstance(args, dict):
                raise ValueError("arguments must be a JSON object")
            output = await tool.invoke(args, ctx)
        except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
            output = f"error: bad arguments for {call.function.name}: {exc}"
        results.append(Message(role="tool", tool_call_id=call.id, content=output))
    return results


def _worker_tools(ctx: RunContext, settings: CallSettings) -> list[ToolSpec]:
    names: list[str] = ctx.state.get(WORKER_TOOLS) or []
    if settings.schema is not None or not names:
        return []
    return ctx.tools.specs(names)


async def ask(ctx: RunContext, alias: str, req: ChatRequest, messages: list[Message],
              settings: CallSettings = WORKER) -> Reply:
    """One non-streaming call; with worker tools offered, the loop of calls that runs
    them."""
    provider = ctx.provider(alias)
    sent = upstream_request(req, alias, messages, settings=settings, provider=provider)
    tools = _worker_tools(ctx, settings)
    if tools:
        sent = sent.model_copy(update={"tools": tools})
    for _ in range(MAX_TOOL_STEPS):
        response = await provider.chat(sent)
        ctx.usage.add(response.usage)
        if not tools or not response.tool_calls:
            return Reply(response.content or "", deployment_of(provider))
        results = await run_tool_calls(ctx, response.tool_calls)
        sent = with_messages(sent, [*sent.messages, response.message(), *results])
    raise InternalError(f"{alias}'s tool loop did not finish within {MAX_TOOL_STEPS} calls",
                        code="max_steps_exceeded")


async def ask_streaming(ctx: RunContext, alias: str, req: ChatRequest,
                        messages: list[Message], sink: Sink,
                        settings: CallSettings = WORKER) -> Reply:
    """One call whose text goes to the client as it arrives when ``sink`` passes deltas
    (``ctx.answered_by`` then names its deployment); a plain call otherwise. When its
    output is the final answer, the client's sampling applies instead of ``settings``. A
    mid-stream failure is raised after its usage is counted."""
    if sink.answer:
        settings = FINAL_ANSWER
    if not sink.deltas:
        return await ask(ctx, alias, req, messages, settings)
    text: list[str] = []
    failure: TakoError | None = None
    provider = ctx.provider(alias)
    stream = provider.stream(upstream_request(req, alias, messages, stream=True,
                                              settings=settings, provider=provider))
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
