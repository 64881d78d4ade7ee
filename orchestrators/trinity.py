"""``trinity`` (Xu et al., arXiv:2512.04695): a coordinator routes turns between
(LLM, role) pairs over a shared transcript.

Roles: Thinker (analyses, plans, decomposes), Worker (writes the answer), Verifier (checks
the latest Worker answer and replies ``ACCEPT`` or ``REVISE: <diagnosis>``). Every turn
sees the client's conversation plus the transcript of all earlier turns. The run stops
when a Verifier accepts a Worker answer or after ``max_turns``; the answer is the last
Worker output (if no Worker ever ran, the last turn's text). A Worker turn that is the
run's last turn is the answer for certain, so it streams to the client as it is written.

Params (``TrinityParams``): ``roles`` {thinker, worker, verifier: alias or list of aliases
(rotated)}; ``router``: "rule" (default) or {"kind": name, ...} naming a router kind
(``rule``, ``llm``, ``learned`` or a plugin's, see ``orchestrators.routers``);
``max_turns`` (6).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import Field, model_validator

from tako.core.protocols import RunContext
from tako.core.types import ChatRequest, Message
from tako.orchestrators.calls import WORKER as WORKER_CALL
from tako.orchestrators.calls import Reply, ask, ask_streaming, control, system, user
from tako.orchestrators.flow import Answer, Orchestration, Sink, record
from tako.orchestrators.params import AliasPool, Params
from tako.orchestrators.registry import register
from tako.orchestrators.routers import (
    ROLES,
    THINKER,
    VERIFIER,
    WORKER,
    Router,
    RouterParam,
    RouterSpec,
    RuleRouterSpec,
    TrinityState,
    Turn,
    render_transcript,
)
from tako.orchestrators.textparse import ACCEPT, REVISE, parse_verdict

ROLE_PROMPTS = {
    THINKER: ("You are the Thinker of a team of models. Analyse the user's request, point out "
              "pitfalls, and write a plan that decomposes it into steps. Do not write the "
              "final answer."),
    WORKER: ("You are the Worker of a team of models. Solve the user's request, following "
             "the plan and fixing every issue the Verifier raised. Reply with the complete "
             "answer for the user only."),
    VERIFIER: ("You are the Verifier of a team of models. Check the latest Worker answer "
               "against the user's request. If it is correct and complete reply with the "
               "line VERDICT: ACCEPT. Otherwise reply with the line VERDICT: REVISE: "
               "followed by a diagnosis of what is wrong (say if the plan itself is "
               "wrong)."),
}

VERDICT_SCHEMA = {
    "type": "object",
    "properties": {"verdict": {"type": "string", "enum": [ACCEPT, REVISE]},
                   "diagnosis": {"type": "string"}},
    "required": ["verdict", "diagnosis"],
}
ROLE_SETTINGS = {THINKER: WORKER_CALL, WORKER: WORKER_CALL,
                 VERIFIER: control("verdict", VERDICT_SCHEMA, max_tokens=512)}
UNREADABLE = "unreadable"


class TrinityRoles(Params):
    """An alias or a list of aliases (rotated per turn) for each role."""

    thinker: AliasPool
    worker: AliasPool
    verifier: AliasPool

    @model_validator(mode="before")
    @classmethod
    def _lower_case_roles(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {str(role).lower(): aliases for role, aliases in value.items()}
        return value


class TrinityParams(Params):
    roles: TrinityRoles
    router: RouterParam = Field(default_factory=lambda: RouterSpec("rule", RuleRouterSpec()))
    max_turns: int = Field(default=6, ge=1)


@register("trinity", TrinityParams)
class Trinity(Orchestration):
    kind = "trinity"

    def __init__(self, params: TrinityParams) -> None:
        self.roles = {role: list(getattr(params.roles, role)) for role in ROLES}
        self.make_router: Callable[[RunContext], Router] = params.router.build
        self.max_turns = params.max_turns

    async def run(self, ctx: RunContext, req: ChatRequest, sink: Sink) -> Answer:
        state = TrinityState(request=req, roles=self.roles)
        router = self.make_router(ctx)
        answer: Reply | None = None
        streamed = False
        for turn_index in range(self.max_turns):
            llm, role = await router.pick(state)
            await sink.event("step_start", step=turn_index, role=role, llm=llm)
            # a Worker on the last turn writes the answer for certain: it streams
            streamed = role == WORKER and turn_index == self.max_turns - 1
            reply = await self._speak(ctx, req, state, llm, role,
                                      sink if streamed else None)
            turn = Turn(llm, role, reply.text)
            if role == WORKER:
                answer = reply
            if role == VERIFIER:
                await self._judge(turn, turn_index, sink)
            state.turns.append(turn)
            record(ctx, type="turn", turn=turn_index, llm=llm, role=role, text=reply.text,
                   verdict=turn.verdict)
            if turn.verdict == ACCEPT and answer is not None:
                break
        fallbacks = getattr(router, "fallbacks", 0)
        if fallbacks:
            record(ctx, type="router_fallbacks", count=fallbacks)
        if answer is None:
            answer = reply
        return Answer(answer.text, streamed=streamed, deployment=answer.deployment)

    async def _speak(self, ctx: RunContext, req: ChatRequest, state: TrinityState, llm: str,
                     role: str, answer_sink: Sink | None) -> Reply:
        """One turn's call; with ``answer_sink`` its text streams to the client as the
        answer."""
        messages = self._messages(req, state, role)
        if answer_sink is not None:
            return await ask_streaming(ctx, llm, req, messages, answer_sink)
        return await ask(ctx, llm, req, messages, ROLE_SETTINGS[role])

    @staticmethod
    async def _judge(turn: Turn, turn_index: int, sink: Sink) -> None:
        """The Verifier's verdict, read strictly: neither a well-formed field nor a
        ``VERDICT:`` line is "unreadable", no score, and no acceptance."""
        verdict = parse_verdict(turn.text)
        if verdict is None:
            turn.verdict = UNREADABLE
        else:
            turn.verdict, turn.diagnosis = verdict
        score = None if verdict is None else float(turn.verdict == ACCEPT)
        await sink.event("verifier_score", step=turn_index, branch=0, score=score,
                         verdict=turn.verdict, diagnosis=turn.diagnosis[:500])

    @staticmethod
    def _messages(req: ChatRequest, state: TrinityState, role: str) -> list[Message]:
        messages = [system(ROLE_PROMPTS[role]), *req.messages]
        if state.turns:
            messages.append(user("Team transcript so far:\n\n" + render_transcript(state.turns)
                                 + f"\n\nNow act as the {role.capitalize()}."))
        return messages
