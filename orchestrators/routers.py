"""Routers for ``trinity``: each turn, pick the next (LLM, role) pair.

A router is anything with ``async pick(state) -> (llm, role)`` (``Router``). Kinds are
found by name through the ``tako.routers`` entry points (``core.plugins.Plugins``), the
same mechanism as providers and orchestrators: a package declares
``[project.entry-points."tako.routers"] mykind = "mypkg.mymodule"`` and that module calls
``register_router("mykind", MyParams)`` on a factory ``(params, ctx) -> Router``. A trinity
profile names one as ``router: {kind: mykind, ...}``; the other keys are parsed by
``MyParams``. tako's own kinds:

- ``RuleRouter`` (default): Thinker first, then Worker, then Verifier; after a Verifier's
  REVISE back to the Worker, or to the Thinker when the diagnosis blames the plan. Each
  role's LLM comes from ``roles[role]`` (a list rotates per turn of that role).
- ``LlmRouter``: a deployment reads the transcript and answers ``{"llm": .., "role": ..}``
  (as a JSON-schema ``response_format`` where the deployment takes one); a reply that does
  not parse or names an unknown LLM or role falls back to the rule router for that turn
  (counted in ``fallbacks``).
- ``learned`` (``orchestrators.learned_router``): a sentence embedding of the request and
  the transcript, and a small trained head scoring every (LLM, role) pair.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Protocol, TypeVar, runtime_checkable

from pydantic import PlainValidator, ValidationInfo

from tako.core.plugins import Plugins
from tako.core.protocols import RunContext
from tako.core.types import ChatRequest
from tako.orchestrators.calls import ask, control, system, user
from tako.orchestrators.params import Alias, Params, invalid, parse_params
from tako.orchestrators.textparse import REVISE, json_object

THINKER, WORKER, VERIFIER = "thinker", "worker", "verifier"
ROLES = (THINKER, WORKER, VERIFIER)

_PLAN_BLAME = re.compile(r"\b(plan|approach|strategy|decompos\w*|rethink|reconsider)\b",
                         re.IGNORECASE)
@dataclass(slots=True)
class Turn:
    llm: str
    role: str
    text: str
    verdict: str | None = None  # "accept" / "revise" / "unreadable" on Verifier turns
    diagnosis: str = ""


@dataclass(slots=True)
class TrinityState:
    request: ChatRequest
    roles: dict[str, list[str]]
    turns: list[Turn] = field(default_factory=list)

    @property
    def llms(self) -> list[str]:
        seen: dict[str, None] = {}
        for pool in self.roles.values():
            seen.update(dict.fromkeys(pool))
        return list(seen)


@runtime_checkable
class Router(Protocol):
    """Picks the next turn's (LLM, role); ``role`` is one of ``ROLES`` and ``llm`` one of
    ``state.llms``. A router may count ``fallbacks`` (turns it could not decide), which
    trinity records in the trace."""

    async def pick(self, state: TrinityState) -> tuple[str, str]: ...


RouterFactory = Callable[[Any, RunContext], Router]
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class RouterKind:
    params: type[Params]
    factory: RouterFactory


ROUTERS: Plugins[RouterKind] = Plugins("tako.routers")


def register_router(kind: str, params: type[Params]) -> Callable[[F], F]:
    """Registers ``factory(params, ctx) -> Router`` for ``kind``; it is given ``params``
    models, one router is made per run."""

    def deco(factory: F) -> F:
        ROUTERS.register(kind, RouterKind(params, factory))
        return factory

    return deco


@dataclass(frozen=True, slots=True)
class RouterSpec:
    """A router kind with its parsed params; ``build(ctx)`` makes one run's router."""

    kind: str
    params: Params

    def build(self, ctx: RunContext) -> Router:
        kind = ROUTERS.get(self.kind)
        assert kind is not None
        return kind.factory(self.params, ctx)


def _router_spec(value: Any, info: ValidationInfo) -> RouterSpec:
    if isinstance(value, RouterSpec):
        return value
    named = isinstance(value, str)
    if named:
        value = {"kind": value}
    if not isinstance(value, dict) or not isinstance(value.get("kind"), str):
        raise ValueError('router must be a kind name ("rule") or {"kind": name, ...}')
    name = value["kind"]
    kind = ROUTERS.get(name)
    if kind is None:
        raise invalid(f"unknown router kind {name!r}; known: {', '.join(ROUTERS.kinds())}",
                      name, *(() if named else ("kind",)))
    return RouterSpec(name, parse_params(kind.params, value, info, f"{name} router param"))


RouterParam = Annotated[RouterSpec, PlainValidator(_router_spec)]
"""``"rule"`` or ``{"kind": name, ...}``, parsed by that kind's params model."""


class RuleRouterSpec(Params):
    kind: Literal["rule"] = "rule"


class LlmRouterSpec(Params):
    kind: Literal["llm"]
    deployment: Alias


class RuleRouter:
    def next_role(self, state: TrinityState) -> str:
        if not state.turns:
            return THINKER
        last = state.turns[-1]
        if last.role == THINKER:
            return WORKER
        if last.role == WORKER:
            return VERIFIER
        if last.verdict == REVISE and _PLAN_BLAME.search(last.diagnosis):
            return THINKER
        return WORKER

    @staticmethod
    def llm_for(state: TrinityState, role: str) -> str:
        pool = state.roles[role]
        used = sum(1 for t in state.turns if t.role == role)
        return pool[used % len(pool)]

    async def pick(self, state: TrinityState) -> tuple[str, str]:
        role = self.next_role(state)
        return self.llm_for(state, role), role


ROUTER_PROMPT = (
    "You route a team of language models. Roles: thinker (plans and decomposes), worker "
    "(writes the answer), verifier (checks the latest worker answer: ACCEPT or REVISE). "
    'Choose who acts next. Reply with JSON only: {"llm": <one of the LLMs>, "role": '
    "<thinker|worker|verifier>}."
)


def router_choice(llms: list[str]) -> dict[str, object]:
    """The JSON schema of a routing choice among ``llms``."""
    return {"type": "object",
            "properties": {"llm": {"type": "string", "enum": llms},
                           "role": {"type": "string", "enum": list(ROLES)}},
            "required": ["llm", "role"]}


class LlmRouter:
    def __init__(self, ctx: RunContext, deployment: str,
                 fallback: RuleRouter | None = None) -> None:
        self.ctx = ctx
        self.deployment = deployment
        self.fallback = fallback or RuleRouter()
        self.fallbacks = 0

    async def pick(self, state: TrinityState) -> tuple[str, str]:
        transcript = render_transcript(state.turns) or "(no turns yet)"
        assigned = "\n".join(f"- {role}: {', '.join(pool)}"
                              for role, pool in state.roles.items())
        prompt = (f"LLMs: {', '.join(state.llms)}\nThe roles they were assigned:\n"
                  f"{assigned}\n\nUser request:\n{_last_user(state.request)}\n\n"
                  f"Transcript:\n{transcript}")
        reply = (await ask(self.ctx, self.deployment, state.request,
                           [system(ROUTER_PROMPT), user(prompt)],
                           control("routing_choice", router_choice(state.llms), 128))).text
        choice = parse_choice(reply, state.llms)
        if choice is None:
            self.fallbacks += 1
            return await self.fallback.pick(state)
        return choice


@register_router("rule", RuleRouterSpec)
def _rule_router(params: RuleRouterSpec, ctx: RunContext) -> Router:
    return RuleRouter()


@register_router("llm", LlmRouterSpec)
def _llm_router(params: LlmRouterSpec, ctx: RunContext) -> Router:
    return LlmRouter(ctx, params.deployment)


def parse_choice(reply: str, llms: list[str]) -> tuple[str, str] | None:
    data = json_object(reply)
    if data is None:
        return None
    llm, role = data.get("llm"), data.get("role")
    if not isinstance(llm, str) or not isinstance(role, str):
        return None
    role = role.strip().lower()
    if llm not in llms or role not in ROLES:
        return None
    return llm, role


def render_transcript(turns: list[Turn]) -> str:
    return "\n\n".join(f"[turn {i + 1}] {t.role.capitalize()} ({t.llm}):\n{t.text}"
                       for i, t in enumerate(turns))


def _last_user(req: ChatRequest) -> str:
    return next((m.text() for m in reversed(req.messages) if m.role == "user"), "")
