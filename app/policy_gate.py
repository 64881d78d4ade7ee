"""Policy and PII guards around one chat request.

Stages: ``pre_chat`` (deny, force a model, redact messages), ``pre_tool`` for server-side
tool calls (deny: the model is told the call was refused; require approval: the request
ends with 403 ``approval_required``, there being no approval channel in a chat call), and
``post_chat`` (deny, redact the answer). PII guards rewrite requests before the policy sees
them and answers before the client does, streamed answers included (a value split across
chunks is held back until it can be judged). A streamed answer cannot be recalled: a
``post_chat`` deny there ends the stream with an error frame instead of the finish chunk.

The shipped Rego policies are all driven by ``policy.data``; with no data and no custom
``policy_dir`` every decision is ``allow``, so the engine is not consulted at all.
"""

from __future__ import annotations

from typing import Any

import httpx
from opentelemetry.trace import Tracer

from tako.core.errors import InvalidRequest, PolicyDenied
from tako.core.protocols import PolicyDecision, RunContext, Tool, ToolLookup
from tako.core.types import (
    ChatRequest,
    ChatResponse,
    Delta,
    Message,
    Principal,
    ToolCallDelta,
    ToolSpec,
)
from tako.policies.factory import build_policy_engine
from tako.policies.pii import PiiFilter
from tako.policies.pii_stream import StreamRedactor
from tako.policies.settings import PolicySettings


def principal_input(p: Principal) -> dict[str, Any]:
    return {"tenant_id": p.tenant_id, "user_id": p.user_id, "key_id": p.key_id,
            "scopes": sorted(p.scopes)}


class PolicyGate:
    def __init__(self, settings: PolicySettings, tracer: Tracer | None = None, *,
                 max_messages: int | None = None) -> None:
        self.settings = settings
        self.max_messages = max_messages  # server.max_messages
        self.engine = build_policy_engine(settings)
        self.active = settings.mode == "opa" or (
            settings.mode == "embedded" and bool(settings.data or settings.policy_dir))
        self.request_pii = PiiFilter.for_request(settings.pii)
        self.response_pii = PiiFilter.for_response(settings.pii)
        self.tracer = tracer

    async def ready(self) -> bool:
        """The OPA server answers its health check (OPA mode only)."""
        if self.settings.mode != "opa":
            return True
        url = self.settings.opa_url.rstrip("/") + "/health"
        try:
            async with httpx.AsyncClient(timeout=max(self.settings.timeout_s, 1.0)) as client:
                return (await client.get(url)).status_code == 200
        except httpx.HTTPError:
            return False

    async def aclose(self) -> None:
        close = getattr(self.engine, "aclose", None)
        if close is not None:
            await close()

    @property
    def inspects_responses(self) -> bool:
        return self.active or self.response_pii.enabled

    async def evaluate(self, stage: str, data: dict[str, Any]) -> PolicyDecision:
        if self.tracer is None:
            return await self.engine.evaluate(stage, data)
        with self.tracer.start_as_current_span("tako.policy.evaluate",
                                               attributes={"tako.policy.stage": stage}) as span:
            decision = await self.engine.evaluate(stage, data)
            span.set_attribute("tako.policy.decision", decision.action)
            return decision

    async def before_chat(self, principal: Principal, req: ChatRequest) -> ChatRequest:
        if self.max_messages is not None and len(req.messages) > self.max_messages:
            raise InvalidRequest(f"the request has {len(req.messages)} messages, more than "
                                 f"the limit of {self.max_messages}", param="messages",
                                 code="too_many_messages")
        if not (self.active or self.request_pii.enabled):
            return req
        messages = [m.model_dump(exclude_none=True) for m in req.messages]
        update: dict[str, Any] = {}
        if self.request_pii.enabled:
            messages = self.request_pii.apply_messages(messages)
            update.update(self._guarded_fields(req))
        if self.active:
            decision = await self.evaluate("pre_chat", {
                "principal": principal_input(principal), "model": req.model,
                "messages": messages,
                "tools": [t.model_dump(exclude_none=True) for t in req.tools or ()],
                "metadata": {},
            })
            if decision.action == "deny":
                raise PolicyDenied(f"request denied by policy: {decision.reason}")
            if decision.model:
                update["model"] = decision.model
            if decision.messages is not None:
                messages = decision.messages
        update["messages"] = [Message.model_validate(m) for m in messages]
        return req.model_copy(update=update)

    def _guarded_fields(self, req: ChatRequest) -> dict[str, Any]:
        """The request's texts outside its messages, PII-guarded: tool and parameter
        descriptions, ``user`` and ``metadata``."""
        pii = self.request_pii
        fields: dict[str, Any] = {}
        if req.tools:
            tools = pii.apply_tools([t.model_dump(exclude_none=True) for t in req.tools])
            fields["tools"] = [ToolSpec.model_validate(t) for t in tools]
        if req.user is not None:
            fields["user"] = pii.apply(req.user)
        metadata = req.extras().get("metadata")
        if metadata is not None:
            fields["metadata"] = pii.apply_value(metadata)
        return fields

    async def after_chat(self, principal: Principal, model: str,
                         response: ChatResponse) -> None:
        if not self.inspects_responses:
            return
        if response.content is not None:
            response.content = await self.check_answer(principal, model, response.content)
        for call in response.tool_calls or ():
            call.function.arguments = self.response_pii.apply(call.function.arguments)

    async def check_answer(self, principal: Principal, model: str, text: str) -> str:
        """The answer as the client may see it; raises PolicyDenied."""
        if self.active:
            decision = await self.evaluate("post_chat", {
                "principal": principal_input(principal), "model": model, "response": text})
            if decision.action == "deny":
                raise PolicyDenied(f"response withheld by policy: {decision.reason}")
            if decision.response is not None:
                text = decision.response
        return self.response_pii.apply(text)

    def stream_filter(self, principal: Principal, model: str) -> StreamFilter | None:
        if not self.inspects_responses:
            return None
        return StreamFilter(self, principal, model)

    def tools(self, tools: ToolLookup, principal: Principal, model: str) -> ToolLookup:
        if not self.active:
            return tools
        return PolicyTools(tools, self, principal, model)


class StreamFilter:
    """PII redaction chunk by chunk; the post_chat policy on the whole answer at the end."""

    def __init__(self, gate: PolicyGate, principal: Principal, model: str) -> None:
        self.gate = gate
        self.principal = principal
        self.model = model
        self.redactor = StreamRedactor(gate.response_pii)
        self.argument_redactors: dict[int, StreamRedactor] = {}  # by tool-call index
        self.parts: list[str] = []

    def feed(self, text: str) -> str:
        self.parts.append(text)
        return self.redactor.feed(text)

    def filter_delta(self, item: Delta) -> Delta:
        """A streamed delta with its text and its tool-call argument fragments guarded
        (each tool call's arguments are a stream of their own, held back like text)."""
        content = self.feed(item.content) if item.content else item.content
        calls = [self._guarded_call(call) for call in item.tool_calls or ()]
        kept = [call for call in calls if call is not None]
        return Delta(content, kept or None)

    def _guarded_call(self, call: ToolCallDelta) -> ToolCallDelta | None:
        if not call.arguments:
            return call
        redactor = self.argument_redactors.get(call.index)
        if redactor is None:
            redactor = self.argument_redactors[call.index] = StreamRedactor(
                self.gate.response_pii)
        arguments = redactor.feed(call.arguments)
        if not arguments and call.id is None and call.name is None:
            return None  # all held back: nothing to send yet
        return ToolCallDelta(call.index, call.id, call.name, arguments)

    async def finish_delta(self) -> Delta | None:
        """What was held back, text and tool-call arguments, as one last delta; raises
        PolicyDenied when post_chat denies the answer."""
        calls = [ToolCallDelta(index, arguments=tail)
                 for index, redactor in sorted(self.argument_redactors.items())
                 if (tail := redactor.flush())]
        content = await self.finish()
        if not content and not calls:
            return None
        return Delta(content or None, calls or None)

    async def finish(self) -> str:
        """The held-back tail; raises PolicyDenied when post_chat denies the answer."""
        tail = self.redactor.flush()
        if self.gate.active:
            decision = await self.gate.evaluate("post_chat", {
                "principal": principal_input(self.principal), "model": self.model,
                "response": "".join(self.parts)})
            if decision.action == "deny":
                raise PolicyDenied(f"response withheld by policy: {decision.reason}")
        return tail


class PolicyTools:
    """Server-side tools behind the pre_tool stage."""

    def __init__(self, inner: ToolLookup, gate: PolicyGate, principal: Principal,
                 model: str) -> None:
        self.inner = inner
        self.gate = gate
        self.principal = principal
        self.model = model

    def specs(self, names: list[str] | None = None) -> list[ToolSpec]:
        return self.inner.specs(names)

    def get(self, name: str) -> Tool | None:
        tool = self.inner.get(name)
        return None if tool is None else PolicyCheckedTool(tool, self)


class PolicyCheckedTool:
    def __init__(self, inner: Tool, owner: PolicyTools) -> None:
        self.inner = inner
        self.owner = owner
        self.name = inner.name
        self.spec = inner.spec

    async def invoke(self, arguments: dict[str, Any], ctx: RunContext) -> str:
        owner = self.owner
        decision = await owner.gate.evaluate("pre_tool", {
            "principal": principal_input(owner.principal), "model": owner.model,
            "tool": self.name, "arguments": arguments})
        if decision.action == "deny":
            return f"error: the call to {self.name} was refused by policy: {decision.reason}"
        if decision.action == "require_approval":
            raise PolicyDenied(f"the call to {self.name} requires approval: {decision.reason}",
                               code="approval_required")
        return await self.inner.invoke(arguments, ctx)
