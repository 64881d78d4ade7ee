"""``echo``: a deterministic demo provider with no network.

It answers ``echo: <last user text>``. When the request offers tools and the last user
message names one of them (or ``tool_choice`` forces one), it calls that tool: the text
after ``<tool>:`` (or the whole text) goes to the tool's first required parameter. After a
tool result it answers ``tool <name> returned: <result>``.
Options (``EchoOptions``): ``delay_s`` (sleep before answering), ``fail`` (raise this error
message).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from functools import partial
from typing import Any

import orjson
from pydantic import Field

from tako.core.errors import UpstreamTransient
from tako.core.specs import DeploymentSpec
from tako.core.tokens import estimate_prompt_tokens, estimate_text_tokens
from tako.core.types import (
    ChatChunk,
    ChatRequest,
    ChatResponse,
    Delta,
    FunctionCall,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from tako.providers.base import StreamOutcome, keep_stream_contract, new_id, now
from tako.providers.pricing import price_for
from tako.providers.registry import AdapterOptions, register


class EchoOptions(AdapterOptions):
    delay_s: float = Field(default=0.0, ge=0)
    fail: str | None = None


class EchoProvider:
    def __init__(self, spec: DeploymentSpec) -> None:
        options = EchoOptions.model_validate(spec.options)
        self.id = spec.name
        self.model = spec.model
        self.price = price_for(spec)
        self.delay_s = options.delay_s
        self.fail = options.fail

    def estimate_cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        return self.price.cost(prompt_tokens, completion_tokens)

    async def aclose(self) -> None:
        return None

    def _answer(self, req: ChatRequest) -> tuple[str | None, ToolCall | None]:
        last = req.messages[-1]
        if last.role == "tool":
            name = next(
                (
                    c.function.name
                    for m in reversed(req.messages)
                    for c in (m.tool_calls or ())
                    if c.id == last.tool_call_id
                ),
                "tool",
            )
            return f"tool {name} returned: {last.text()}", None
        user_text = next((m.text() for m in reversed(req.messages) if m.role == "user"), "")
        tool = self._pick_tool(req, user_text)
        if tool is not None:
            args = orjson.dumps(self._arguments(req, tool, user_text)).decode()
            call_id = "call_" + new_id("")[:16]
            return None, ToolCall(id=call_id, function=FunctionCall(name=tool, arguments=args))
        text = f"echo: {user_text}"
        limit = req.output_limit()
        if limit is not None:
            words = text.split(" ")
            text = " ".join(words[:limit])
        for stop in req.stop_list():
            if stop and stop in text:
                text = text[: text.index(stop)]
        return text, None

    @staticmethod
    def _arguments(req: ChatRequest, tool: str, user_text: str) -> dict[str, str]:
        """``"<tool>: <text>"`` passes <text>; the value goes to the tool's first required
        parameter (else ``input``)."""
        marker = f"{tool}:"
        value = user_text.split(marker, 1)[1].strip() if marker in user_text else user_text
        spec = next((t.function for t in req.tools or () if t.function.name == tool), None)
        required = (spec.parameters or {}).get("required") if spec else None
        return {str(required[0]) if required else "input": value}

    @staticmethod
    def _pick_tool(req: ChatRequest, user_text: str) -> str | None:
        if not req.tools or req.tool_choice == "none":
            return None
        if isinstance(req.tool_choice, dict):
            return str(req.tool_choice.get("function", {}).get("name")) or None
        names = [t.function.name for t in req.tools]
        for name in names:
            if name in user_text:
                return name
        if req.tool_choice == "required":
            return names[0]
        return None

    def _usage(self, req: ChatRequest, text: str) -> Usage:
        prompt = estimate_prompt_tokens(req)
        completion = max(1, estimate_text_tokens(text))
        return Usage(
            prompt_tokens=prompt,
            completion_tokens=completion,
            cost_usd=self.price.cost(prompt, completion),
        )

    async def _before(self) -> None:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail:
            raise UpstreamTransient(f"provider {self.id} failed: {self.fail}",
                                    details={"provider": self.id})

    async def chat(self, req: ChatRequest) -> ChatResponse:
        await self._before()
        text, call = self._answer(req)
        return ChatResponse(
            id=new_id(),
            model=self.model,
            created=now(),
            content=text,
            tool_calls=[call] if call else None,
            finish_reason="tool_calls" if call else "stop",
            usage=self._usage(req, text or (call.function.arguments if call else "")),
            provider_id=self.id,
        )

    def stream(self, req: ChatRequest) -> AsyncIterator[ChatChunk]:
        return keep_stream_contract(self.id, partial(self._deltas, req))

    async def _deltas(self, req: ChatRequest, outcome: StreamOutcome) -> AsyncIterator[Delta]:
        await self._before()
        text, call = self._answer(req)
        if call is not None:
            outcome.finish_reason = "tool_calls"
            outcome.usage = self._usage(req, call.function.arguments)
            yield Delta(tool_calls=[
                ToolCallDelta(index=0, id=call.id, name=call.function.name, arguments="")])
            args = call.function.arguments
            half = len(args) // 2
            for piece in (args[:half], args[half:]):
                yield Delta(tool_calls=[ToolCallDelta(index=0, arguments=piece)])
            return
        assert text is not None
        outcome.usage = self._usage(req, text)
        words = text.split(" ")
        for i, word in enumerate(words):
            yield Delta(content=word if i == 0 else " " + word)



TELEMETRY_SYSTEM = "tako.echo"  # gen_ai.system
# the embedded default serves this vendor when these are all set
EMBEDDED_ENV = ()


def embedded_deployments(environ: Mapping[str, str]) -> list[dict[str, Any]]:
    """The echo demo deployment is always there."""
    if not all(environ.get(key) for key in EMBEDDED_ENV):
        return []
    return [{"name": "echo", "provider": "echo", "model": "echo"}]

@register("echo", EchoOptions)
def _echo(spec: DeploymentSpec) -> EchoProvider:
    return EchoProvider(spec)


