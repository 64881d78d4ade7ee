"""Routers for ``trinity``: each turn, pick the next (LLM, role) pair.

- ``RuleRouter`` (default): Thinker first, then Worker, then Verifier; after a Verifier's
  REVISE back to the Worker, or to the Thinker when the diagnosis blames the plan. Each
  role's LLM comes from ``roles[role]`` (a list rotates per turn of that role).
- ``LlmRouter``: a deployment reads the transcript and answers ``{"llm": .., "role": ..}``
  (as a JSON-schema ``response_format`` where the deployment takes one); a reply that does
  not parse or names an unknown LLM or role falls back to the rule router for that turn
  (counted in ``fallbacks``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from tako.core.protocols import RunContext
from tako.core.types import ChatRequest
from tako.orchestrators.calls import ask, control, system, user
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
