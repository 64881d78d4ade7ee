"""Every upstream call of every orchestrator goes through the provider the context hands
out, so a per-call budget wrapper there stops any orchestrator from overspending."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tako.core.errors import QuotaExceeded
from tako.core.types import ChatChunk, ChatRequest, ChatResponse
from tako.orchestrators.api import run
from tests.fakes.provider import ScriptedProvider
from tests.support.orchestrator_profiles import PROFILES


class Budget:
    def __init__(self, calls: int) -> None:
        self.left = calls
        self.admitted = 0

    def admit(self) -> None:
        if self.left <= 0:
            raise QuotaExceeded("request budget exhausted")
        self.left -= 1
        self.admitted += 1


class Budgeted:
    """A stand-in for the gateway's budget stack: one reservation per call."""

    def __init__(self, inner: ScriptedProvider, budget: Budget) -> None:
        self.inner = inner
        self.budget = budget
        self.id, self.model = inner.id, inner.model

    async def chat(self, req: ChatRequest) -> ChatResponse:
        self.budget.admit()
        return await self.inner.chat(req)

    async def stream(self, req: ChatRequest) -> AsyncIterator[ChatChunk]:
        self.budget.admit()
        async for item in self.inner.stream(req):
            yield item

    def estimate_cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        return self.inner.cost

    async def aclose(self) -> None:
        return None


LOOPING_WORKFLOW = ('[{"worker": "m", "subtask": "a"}, {"worker": "m", "subtask": "b"}, '
                    '{"worker": "m", "subtask": "c", "access": "all"}]')



@pytest.mark.parametrize("kind", sorted(PROFILES))
async def test_budget_stops_every_orchestrator(kind: str) -> None:
    model = ScriptedProvider("m", rules=[("You coordinate", LOOPING_WORKFLOW),
                           ("Verifier", "VERDICT: REVISE: no"), ("grader", "SCORE: 0.1")],
                     default="some answer", match_all=True)
    budget = Budget(3)
    with pytest.raises(QuotaExceeded):
        await run({"kind": kind, "params": PROFILES[kind]}, {"messages": [
            {"role": "user", "content": "go"}]}, {"m": Budgeted(model, budget)})
    assert budget.admitted == 3
    assert len(model.requests) == 3
