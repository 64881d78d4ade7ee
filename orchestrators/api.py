"""Run any orchestrator profile in-process, without the HTTP server.

    from tako.orchestrators.api import run, run_sync
    response = await run({"kind": "conductor", "params": {...}},
                         {"model": "conductor", "messages": [...]},
                         {"coordinator": provider_a, "coder": provider_b})

A profile that does not parse raises ConfigError (its params are checked by the kind's
params model; the aliases it names are not, they are looked up in ``providers`` as the
run goes). ``providers`` maps the aliases a profile names to ``core.protocols.LlmProvider`` objects,
used as given (the gateway adds its budget, retry and breaker stack around them; here the
caller decides). ``stream=True`` returns the async iterator of stream items (Delta,
OrchEvent, at most one ChunkError, one End); ``trace=True`` puts the run's trace in
``response.extra["tako_trace"]`` (or pass a list to have it filled, also when streaming).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

from pydantic import ValidationError

from tako.core.errors import ConfigError, ModelNotFound
from tako.core.protocols import LlmProvider, RunContext, StreamItem, Tool, ToolLookup
from tako.core.specs import ProfileSpec
from tako.core.types import ChatRequest, ChatResponse, Principal
from tako.orchestrators.registry import build
from tako.tools.registry import ToolRegistry

LOCAL_PRINCIPAL = Principal(tenant_id="local", user_id="local", key_id="local")


def _profile(profile: ProfileSpec | Mapping[str, Any]) -> ProfileSpec:
    if isinstance(profile, ProfileSpec):
        return profile
    data = dict(profile)
    data.setdefault("name", str(data.get("kind", "profile")))
    try:
        return ProfileSpec.model_validate(data)
    except ValidationError as error:
        raise ConfigError.from_validation(error) from None


def _request(request: ChatRequest | Mapping[str, Any], name: str) -> ChatRequest:
    if isinstance(request, ChatRequest):
        return request
    data = dict(request)
    data.setdefault("model", name)
    return ChatRequest.model_validate(data)


def make_context(
    providers: Mapping[str, LlmProvider],
    *,
    tools: ToolLookup | list[Tool] | None = None,
    emit_events: bool = False,
    trace: list[dict[str, Any]] | None = None,
    principal: Principal = LOCAL_PRINCIPAL,
) -> RunContext:
    """A RunContext over plain providers: an unknown alias raises ModelNotFound."""

    def provider(alias: str) -> LlmProvider:
        try:
            return providers[alias]
        except KeyError:
            raise ModelNotFound(f"no deployment named {alias!r} was given to the run",
                                param="model") from None

    lookup = tools if tools is not None and not isinstance(tools, list) else ToolRegistry(tools)
    return RunContext(principal=principal, request_id=f"req-{uuid.uuid4().hex[:16]}",
                      provider=provider, tools=lookup, emit_events=emit_events, trace=trace)


async def run(
    profile: ProfileSpec | Mapping[str, Any],
    request: ChatRequest | Mapping[str, Any],
    providers: Mapping[str, LlmProvider],
    *,
    tools: ToolLookup | list[Tool] | None = None,
    stream: bool = False,
    trace: bool | list[dict[str, Any]] = False,
    events: bool = True,
) -> ChatResponse | AsyncIterator[StreamItem]:
    spec = _profile(profile)
    req = _request(request, spec.name)
    trace_list = trace if isinstance(trace, list) else ([] if trace else None)
    ctx = make_context(providers, tools=tools, emit_events=stream and events, trace=trace_list)
    orchestrator = build(spec)
    if stream:
        return orchestrator.stream(ctx, req)
    response = await orchestrator.complete(ctx, req)
    if trace_list is not None:
        response.extra["tako_trace"] = trace_list
    return response


def run_sync(
    profile: ProfileSpec | Mapping[str, Any],
    request: ChatRequest | Mapping[str, Any],
    providers: Mapping[str, LlmProvider],
    *,
    tools: ToolLookup | list[Tool] | None = None,
    trace: bool | list[dict[str, Any]] = False,
) -> ChatResponse:
    """``run`` for synchronous callers (not from inside a running event loop)."""
    result = asyncio.run(run(profile, request, providers, tools=tools, trace=trace))
    assert isinstance(result, ChatResponse)
    return result
