"""OpenAI's chat wire format, shared by every OpenAI-compatible adapter."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from tako.core.errors import TakoError, UpstreamTransient, upstream_error_for
from tako.core.types import (
    ChatRequest,
    ChatResponse,
    Delta,
    FunctionCall,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from tako.providers.base import StreamOutcome, iter_sse, new_id, now

CostFn = Callable[[int, int, int], float]
# (provider id, status, body) -> the TakoError for an error the vendor sent.
ErrorFor = Callable[[str, int, Any], TakoError]


def request_body(req: ChatRequest, model: str, *, stream: bool) -> dict[str, Any]:
    """The upstream body: the client's request (unknown fields included) with our model."""
    body = req.model_dump(exclude_none=True)
    body["model"] = model
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    else:
        body.pop("stream", None)
        body.pop("stream_options", None)
    return body


def parse_usage(raw: dict[str, Any] | None, cost: CostFn) -> Usage:
    if not raw:
        return Usage()
    prompt = int(raw.get("prompt_tokens") or 0)
    completion = int(raw.get("completion_tokens") or 0)
    cached = int((raw.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
    reasoning = int((raw.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0)
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        cached_tokens=cached,
        reasoning_tokens=reasoning,
        cost_usd=cost(prompt, completion, cached),
    )


def parse_response(body: dict[str, Any], provider_id: str, cost: CostFn) -> ChatResponse:
    try:
        choice = body["choices"][0]
        message = choice.get("message") or {}
    except (KeyError, IndexError, TypeError) as exc:
        raise UpstreamTransient(
            f"provider {provider_id} answered without choices",
            details={"provider": provider_id, "body": body},
        ) from exc
    calls = message.get("tool_calls") or None
    tool_calls = (
        [
            ToolCall(
                id=c.get("id") or new_id("call_"),
                function=FunctionCall(
                    name=c["function"]["name"], arguments=c["function"].get("arguments") or ""
                ),
            )
            for c in calls
        ]
        if calls
        else None
    )
    return ChatResponse(
        id=body.get("id") or new_id(),
        model=body.get("model") or "",
        created=body.get("created") or now(),
        content=message.get("content"),
        tool_calls=tool_calls,
        finish_reason=choice.get("finish_reason") or ("tool_calls" if tool_calls else "stop"),
        usage=parse_usage(body.get("usage"), cost),
        provider_id=provider_id,
    )


def delta_from_chunk(choice: dict[str, Any]) -> Delta | None:
    delta = choice.get("delta") or {}
    content = delta.get("content")
    calls = delta.get("tool_calls")
    if not content and not calls:
        return None
    tool_deltas = None
    if calls:
        tool_deltas = []
        for c in calls:
            fn = c.get("function") or {}
            tool_deltas.append(
                ToolCallDelta(
                    index=int(c.get("index", 0)),
                    id=c.get("id"),
                    name=fn.get("name"),
                    arguments=fn.get("arguments"),
                )
            )
    return Delta(content=content, tool_calls=tool_deltas)


async def deltas(chunks: AsyncIterator[bytes], provider_id: str, cost: CostFn,
                 outcome: StreamOutcome, error_for: ErrorFor = upstream_error_for,
                 ) -> AsyncIterator[Delta]:
    """An OpenAI SSE body as Deltas; an error event raises ``error_for``'s TakoError."""
    async for _event, data in iter_sse(chunks):
        if data == b"[DONE]":
            return
        obj = orjson.loads(data)
        if "error" in obj and not obj.get("choices"):
            raise error_for(provider_id, _error_status(obj["error"]), obj)
        if obj.get("usage"):
            outcome.usage = parse_usage(obj["usage"], cost)
        for choice in obj.get("choices") or ():
            delta = delta_from_chunk(choice)
            if delta is not None:
                yield delta
            if choice.get("finish_reason"):
                outcome.finish_reason = choice["finish_reason"]


def _error_status(err: Any) -> int:
    """An in-stream error's HTTP-like status, when it states one; else 500."""
    if isinstance(err, dict):
        for key in ("status", "code"):
            value = str(err.get(key) or "")
            if value.isdigit():
                return int(value)
    return 500
