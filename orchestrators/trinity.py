"""``trinity`` (Xu et al., arXiv:2512.04695): a coordinator routes turns between
(LLM, role) pairs over a shared transcript.

Roles: Thinker (analyses, plans, decomposes), Worker (writes the answer), Verifier (checks
the latest Worker answer and replies ``ACCEPT`` or ``REVISE: <diagnosis>``). Every turn
sees the client's conversation plus the transcript of all earlier turns. The run stops
when a Verifier accepts a Worker answer or after ``max_turns``; the answer is the last
Worker output (if no Worker ever ran, the last turn's text).

Params: ``roles`` {thinker, worker, verifier: alias or list of aliases (rotated)};
``router``: "rule" (default) or {"kind": "llm", "deployment": alias}; ``max_turns`` (6).
"""

from __future__ import annotations

from typing import Any

from tako.core.errors import InvalidRequest
from tako.core.protocols import RunContext
from tako.core.specs import ProfileSpec
from tako.core.types import ChatRequest, Message
from tako.orchestrators.calls import ask, system, user
from tako.orchestrators.flow import Answer, Orchestration, Sink, record
from tako.orchestrators.registry import register
from tako.orchestrators.routers import (
    ROLES,
    THINKER,
    VERIFIER,
    WORKER,
    LlmRouter,
    RuleRouter,
    TrinityState,
    Turn,
    parse_verdict,
    render_transcript,
)

ROLE_PROMPTS = {
    THINKER: ("You are the Thinker of a team of models. Analyse the user's request, point out "
              "pitfalls, and write a plan that decomposes it into steps. Do not write the "
              "final answer."),
    WORKER: ("You are the Worker of a team of models. Solve the user's request, following "
             "the plan and fixing every issue the Verifier raised. Reply with the complete "
             "answer for the user only."),
    VERIFIER: ("You are the Verifier of a team of models. Check the latest Worker answer "
               "against the user's request. If it is correct and complete reply exactly "
               "ACCEPT. Otherwise reply REVISE: followed by a diagnosis of what is wrong "
               "(say if the plan itself is wrong)."),
}


class Trinity(Orchestration):
    kind = "trinity"

    def __init__(self, roles: dict[str, list[str]], router: dict[str, Any] | None = None,
                 max_turns: int = 6) -> None:
        missing = [r for r in ROLES if not roles.get(r)]
        if missing:
            raise InvalidRequest(f"trinity params.roles needs an LLM for {missing}")
        if max_turns < 1:
            raise InvalidRequest("trinity max_turns must be at least 1")
        self.roles = roles
        self.router_spec = router
        self.max_turns = max_turns

    def _router(self, ctx: RunContext) -> RuleRouter | LlmRouter:
        if self.router_spec is None:
            return RuleRouter()
        return LlmRouter(ctx, str(self.router_spec["deployment"]))

    async def run(self, ctx: RunContext, req: ChatRequest, sink: Sink) -> Answer:
        state = TrinityState(request=req, roles=self.roles)
        router = self._router(ctx)
        answer: str | None = None
        for turn_index in range(self.max_turns):
            llm, role = await router.pick(state)
            await sink.event("step_start", step=turn_index, role=role, llm=llm)
            text = await ask(ctx, llm, req, self._messages(req, state, role))
            turn = Turn(llm, role, text)
            if role == WORKER:
                answer = text
            if role == VERIFIER:
                turn.verdict, turn.diagnosis = parse_verdict(text)
                await sink.event("verifier_score", step=turn_index, branch=0,
                                 score=1.0 if turn.verdict == "accept" else 0.0,
                                 verdict=turn.verdict, diagnosis=turn.diagnosis[:500])
            state.turns.append(turn)
            record(ctx, type="turn", turn=turn_index, llm=llm, role=role, text=text,
                   verdict=turn.verdict)
            if turn.verdict == "accept" and answer is not None:
                break
        if isinstance(router, LlmRouter) and router.fallbacks:
            record(ctx, type="router_fallbacks", count=router.fallbacks)
        if answer is None:
            answer = state.turns[-1].text
        return Answer(answer)

    @staticmethod
    def _messages(req: ChatRequest, state: TrinityState, role: str) -> list[Message]:
        messages = [system(ROLE_PROMPTS[role]), *req.messages]
        if state.turns:
            messages.append(user("Team transcript so far:\n\n" + render_transcript(state.turns)
                                 + f"\n\nNow act as the {role.capitalize()}."))
        return messages


def _roles(value: Any) -> dict[str, list[str]]:
    if not isinstance(value, dict):
        raise InvalidRequest("trinity params.roles must map thinker/worker/verifier to aliases")
    roles: dict[str, list[str]] = {}
    for role, aliases in value.items():
        key = str(role).lower()
        if key not in ROLES:
            raise InvalidRequest(f"trinity: unknown role {role!r}; roles are {list(ROLES)}")
        roles[key] = [str(a) for a in aliases] if isinstance(aliases, list) else [str(aliases)]
    return roles


@register("trinity")
def _trinity(spec: ProfileSpec) -> Trinity:
    p = spec.params
    router = p.get("router", "rule")
    if router == "rule" or router is None:
        router_spec = None
    elif isinstance(router, dict) and router.get("kind") == "llm" and router.get("deployment"):
        router_spec = dict(router)
    else:
        raise InvalidRequest(f"profile {spec.name!r}: trinity router must be \"rule\" or "
                             '{"kind": "llm", "deployment": alias}')
    return Trinity(_roles(p.get("roles")), router_spec, int(p.get("max_turns", 6)))
