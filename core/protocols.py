"""Protocols between packages, and the context an orchestrator runs in."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, Union, runtime_checkable

from tako.core.errors import InvalidRequest
from tako.core.types import (
    ChatChunk,
    ChatRequest,
    ChatResponse,
    ChunkError,
    Delta,
    End,
    OrchEvent,
    Principal,
    ToolSpec,
    Usage,
)


@runtime_checkable
class LlmProvider(Protocol):
    """One upstream deployment.

    ``stream`` contract: yield every chunk received; if the upstream fails before the
    first chunk, raise the TakoError (so retry and fallback can act); after the first
    chunk, a failure yields one ``ChunkError``; in every case exactly one ``End`` closes
    the stream (with the usage known so far).
    """

    id: str
    model: str

    async def chat(self, req: ChatRequest) -> ChatResponse: ...

    def stream(self, req: ChatRequest) -> AsyncIterator[ChatChunk]: ...

    def estimate_cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float: ...

    async def aclose(self) -> None: ...


@dataclass(slots=True)
class EmbeddingRequest:
    """Texts to embed with one model; ``dimensions`` is passed on to vendors that take it."""

    model: str
    inputs: list[str]
    dimensions: int | None = None
    user: str | None = None


@dataclass(slots=True)
class Embeddings:
    """One vector per input, in input order, and what the call cost (prompt tokens only)."""

    vectors: list[list[float]]
    usage: Usage = field(default_factory=Usage)


@runtime_checkable
class EmbeddingsProvider(Protocol):
    """A deployment (or an alias over deployments) that serves text embeddings."""

    id: str
    model: str

    async def embed(self, req: EmbeddingRequest) -> Embeddings: ...

    def estimate_cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float: ...


def embedder_of(provider: object) -> EmbeddingsProvider:
    """``provider`` as an embeddings provider, or the 400 saying its deployment serves
    none."""
    if callable(getattr(provider, "embed", None)):
        return provider  # type: ignore[return-value]
    name = getattr(provider, "id", "?")
    raise InvalidRequest(f"the deployment {name} does not serve embeddings", param="model",
                         code="model_not_supported")


class Tool(Protocol):
    """A server-side tool the orchestrator may run inside its loop."""

    name: str
    spec: ToolSpec

    async def invoke(self, arguments: dict[str, Any], ctx: RunContext) -> str: ...


@dataclass(slots=True)
class Score:
    value: float  # in [0, 1]
    feedback: str = ""
    judged: bool = True  # False: the judgement was unreadable, "no score" (value 0)


class Verifier(Protocol):
    async def score(self, req: ChatRequest, answer: str) -> Score: ...


@dataclass(slots=True)
class PolicyDecision:
    """``action``: allow, deny, redact_messages, redact_response, force_model, require_approval."""

    action: str = "allow"
    reason: str = ""
    messages: list[dict[str, Any]] | None = None
    response: str | None = None
    model: str | None = None


class PolicyEngine(Protocol):
    async def evaluate(self, stage: str, data: dict[str, Any]) -> PolicyDecision: ...


class AuthResolver(Protocol):
    """Returns the principal for a token it recognises, None for one it does not know.
    A recognised but invalid token raises AuthenticationFailed; an infrastructure
    failure raises Unavailable (never a silent pass or deny)."""

    async def resolve(self, token: str) -> Principal | None: ...


StreamItem = Union[Delta, OrchEvent, ChunkError, End]


class ToolLookup(Protocol):
    def get(self, name: str) -> Tool | None: ...

    def specs(self, names: list[str] | None = None) -> list[ToolSpec]: ...


@dataclass(slots=True)
class RunContext:
    """What an orchestrator run may touch.

    ``provider(alias)`` returns the deployment behind an alias already wrapped in the
    runtime stack (budget reservation per call, fallback, breaker, retry); every upstream
    call an orchestrator makes goes through it. ``usage`` accumulates over all calls.
    """

    principal: Principal
    request_id: str
    provider: Callable[[str], LlmProvider]
    tools: ToolLookup
    emit_events: bool = False
    depth: int = 0
    usage: Usage = field(default_factory=Usage)
    trace: list[dict[str, Any]] | None = None
    state: dict[str, Any] = field(default_factory=dict)
    # the deployment whose output is the answer, set as soon as it is known (when the
    # answer starts streaming, or when the run decided on it)
    answered_by: str | None = None


class Orchestrator(Protocol):
    """A profile's behaviour. ``stream`` yields Delta (assistant text/tool-call deltas of
    the final answer), OrchEvent, at most one ChunkError and exactly one End last.
    ``complete`` returns the whole answer."""

    kind: str

    async def complete(self, ctx: RunContext, req: ChatRequest) -> ChatResponse: ...

    def stream(self, ctx: RunContext, req: ChatRequest) -> AsyncIterator[StreamItem]: ...
