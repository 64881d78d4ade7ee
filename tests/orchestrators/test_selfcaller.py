"""selfcaller: confidence threshold, revision depth bound, best answer, bounded self_call."""

from __future__ import annotations

import json

import pytest

from tako.core.types import ChatRequest, End, OrchEvent
from tako.orchestrators.api import run
from tests.fakes.provider import ScriptedProvider

REQ = {"messages": [{"role": "user", "content": "main question"}]}


def profile(verifier: object, **params: object) -> dict[str, object]:
    base: dict[str, object] = {"inner": {"kind": "single", "params": {"deployment": "m"}},
                               "verifier": verifier}
    base.update(params)
    return {"kind": "selfcaller", "params": base}


MUST_GOOD = {"kind": "rules", "must": ["GOOD"]}


async def test_revises_until_max_depth_when_below_threshold() -> None:
    m = ScriptedProvider("m", default=["bad one", "bad two", "bad three", "never asked"])
    trace: list[dict[str, object]] = []
    response = await run(profile(MUST_GOOD, max_depth=2, self_call=False), REQ, {"m": m},
                         trace=trace)
    assert len(m.requests) == 3
    assert response.content == "bad three"  # all scored 0: the latest wins the tie
    second, third = m.requests[1], m.requests[2]
    assert [x.role for x in second.messages] == ["user", "assistant", "user"]
    assert "missing required pattern /GOOD/" in second.messages[-1].text()
    assert len(third.messages) == 5
    assert [t["depth"] for t in trace if t["type"] == "attempt"] == [0, 1, 2]
    assert response.usage.cost_usd == pytest.approx(0.003)


async def test_stops_as_soon_as_the_threshold_is_met() -> None:
    m = ScriptedProvider("m", default=["draft", "GOOD answer", "never asked"])
    items = [i async for i in await run(profile(MUST_GOOD, self_call=False), REQ, {"m": m},
                                        stream=True)]
    assert len(m.requests) == 2
    recursion = [i.data for i in items if isinstance(i, OrchEvent) and i.kind == "recursion"]
    assert recursion == [{"depth": 0, "confidence": 0.0}, {"depth": 1, "confidence": 1.0}]
    text = "".join(i.content or "" for i in items if hasattr(i, "content") and
                   not isinstance(i, OrchEvent))
    assert text == "GOOD answer"
    assert sum(isinstance(i, End) for i in items) == 1


async def test_llm_judge_guard_returns_the_best_scoring_answer() -> None:
    m = ScriptedProvider("m", default=["first", "second", "third"])
    judge = ScriptedProvider("judge", default=["SCORE: 6/10", "SCORE: 0.3", "SCORE: 20%"])
    response = await run(profile({"kind": "llm", "deployment": "judge"}, threshold=0.9,
                                 self_call=False), REQ, {"m": m, "judge": judge})
    assert response.content == "first"
    assert len(judge.requests) == 3
    assert "Answer to grade:\nsecond" in judge.prompts()[1]
    assert response.usage.cost_usd == pytest.approx(0.006)


def self_calling_model() -> ScriptedProvider:
    def reply(req: ChatRequest) -> str:
        last = req.messages[-1]
        if last.role == "tool":
            return f"final using: {last.text()}"
        question = last.text()
        return "@call self_call " + json.dumps({"question": f"sub of ({question})"})

    return ScriptedProvider("m", default=reply)


async def test_self_call_depth_is_bounded() -> None:
    m = self_calling_model()
    trace: list[dict[str, object]] = []
    response = await run(profile({"kind": "rules"}, max_self_call_depth=1), REQ, {"m": m},
                         trace=trace)
    assert len(m.requests) == 4  # top, sub (calls again), sub after refusal, top after result
    assert "self_call depth limit reached" in (response.content or "")
    assert [t["depth"] for t in trace if t["type"] == "self_call"] == [1]
    offered = [t.function.name for t in m.requests[0].tools or []]
    assert offered == ["self_call"]


async def test_self_call_count_is_bounded_per_request() -> None:
    m = self_calling_model()
    trace: list[dict[str, object]] = []
    response = await run(profile({"kind": "rules"}, max_self_calls=2, max_self_call_depth=9),
                         REQ, {"m": m}, trace=trace)
    assert len([t for t in trace if t["type"] == "self_call"]) == 2
    assert "self_call limit reached" in (response.content or "")
    assert len(m.requests) == 6
    assert response.usage.cost_usd == pytest.approx(0.006)


async def test_self_call_respects_cost_bound() -> None:
    m = self_calling_model()
    response = await run(profile({"kind": "rules"}, max_self_call_cost_usd=0.0005), REQ,
                         {"m": m})
    assert "cost limit" in (response.content or "")
    assert len(m.requests) == 2


async def test_stream_forwards_inner_tool_events() -> None:
    m = self_calling_model()
    items = [i async for i in await run(profile({"kind": "rules"}, max_self_call_depth=1),
                                        REQ, {"m": m}, stream=True)]
    kinds = [i.kind for i in items if isinstance(i, OrchEvent)]
    assert kinds.count("tool_call_start") == 1 and kinds.count("tool_result") == 1
    assert kinds[-2:] == ["recursion", "final"]
    assert isinstance(items[-1], End) and items[-1].usage.cost_usd == pytest.approx(0.004)


async def test_self_call_answers_can_be_verified() -> None:
    def reply(req: ChatRequest) -> str:
        last = req.messages[-1]
        if last.role == "tool":
            return f"final using: {last.text()} 42"
        if last.text().startswith("sub:"):
            return "the sub-answer is 41"
        return "@call self_call " + json.dumps({"question": "sub: what is 6 * 7?"})

    m = ScriptedProvider("m", default=reply)
    trace: list[dict[str, object]] = []
    response = await run(profile({"kind": "rules", "must": [r"\b42\b"]},
                                 verify_self_calls=True, threshold=1.0), REQ, {"m": m},
                         trace=trace)
    (self_call,) = [t for t in trace if t["type"] == "self_call"]
    assert self_call["score"] == 0.0 and "missing required pattern" in self_call["feedback"]
    tool_result = m.requests[-1].messages[-1].text()
    assert tool_result.startswith("the sub-answer is 41")
    assert "a reviewer scored this sub-answer 0.00 (it needs 1.00)" in tool_result
    assert (response.content or "").endswith("42")


async def test_self_call_works_over_any_inner_kind() -> None:
    def coordinate(req: ChatRequest) -> str:
        return json.dumps([{"worker": "w", "subtask": f"solve: {req.messages[-1].text()}"}])

    def work(req: ChatRequest) -> str:
        last = req.messages[-1]
        if last.role == "tool":
            return f"combined: {last.text()}"
        if "sub:" in last.text():
            return "the sub-answer is 42"
        return "@call self_call " + json.dumps({"question": "sub: what is 6 * 7?"})

    boss, w = ScriptedProvider("boss", default=coordinate), ScriptedProvider("w", default=work)
    trace: list[dict[str, object]] = []
    params = {"inner": {"kind": "conductor", "params": {"coordinator": "boss",
                                                       "workers": ["w"]}},
              "verifier": {"kind": "rules", "must": ["42"]}, "threshold": 1.0}
    response = await run({"kind": "selfcaller", "params": params}, REQ,
                         {"boss": boss, "w": w}, trace=trace)
    assert response.content == "combined: the sub-answer is 42"
    assert [t["question"] for t in trace if t["type"] == "self_call"] == [
        "sub: what is 6 * 7?"]
    assert len(boss.requests) == 2  # the run's plan, and the fresh run's plan
    assert all(not r.tools for r in boss.requests)  # control messages get no tools
    assert [t.function.name for t in w.requests[0].tools or []] == ["self_call"]
