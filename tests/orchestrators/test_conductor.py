"""conductor: access lists, concurrency, fanout, recursion, malformed workflows, streaming."""

from __future__ import annotations

import json
import time

import pytest

from tako.core.errors import UpstreamError, UpstreamTransient
from tako.core.types import (
    ChatRequest,
    ChunkError,
    Delta,
    End,
    OrchEvent,
)
from tako.orchestrators.api import run
from tako.orchestrators.conductor import WorkflowError, parse_workflow
from tests.fakes.provider import ScriptedProvider
from tests.fakes.provider_wrappers import Concurrency, ProviderWithSpec

REQ = {"messages": [{"role": "user", "content": "Write a report on octopuses."}]}


def workflow(*steps: tuple[str, str, object]) -> str:
    return json.dumps([{"worker": w, "subtask": s, "access": a} for w, s, a in steps])


def profile(**params: object) -> dict[str, object]:
    base: dict[str, object] = {"coordinator": "boss", "workers": ["a", "b", "c"]}
    base.update(params)
    return {"kind": "conductor", "params": base}


async def test_workers_see_only_the_outputs_their_access_allows() -> None:
    boss = ScriptedProvider("boss", default=workflow(
        ("a", "research arms", []), ("b", "research ink", []),
        ("c", "combine the ink notes", [1]), ("a", "final answer from everything", "all")))
    a = ScriptedProvider("a", rules=[("research arms", "SECRET-ARMS"), ("final", "FINAL-ANSWER")],
                         default="ok")
    b = ScriptedProvider("b", default="SECRET-INK")
    c = ScriptedProvider("c", default="SECRET-COMBINED")
    response = await run(profile(), REQ, {"boss": boss, "a": a, "b": b, "c": c}, trace=True)
    assert response.content == "FINAL-ANSWER"
    (c_prompt,) = c.prompts()
    assert "SECRET-INK" in c_prompt and "SECRET-ARMS" not in c_prompt
    assert "octopuses" not in c_prompt  # the client's conversation is not shared implicitly
    assert all("SECRET" not in p for p in b.prompts())
    first_a, final_a = a.prompts()
    assert "SECRET" not in first_a
    assert all(s in final_a for s in ("SECRET-ARMS", "SECRET-INK", "SECRET-COMBINED"))
    steps = [t for t in response.extra["tako_trace"] if t["type"] == "step"]
    assert sorted(s["step"] for s in steps) == [0, 1, 2, 3]
    assert "octopuses" in boss.prompts()[0]


async def test_independent_steps_run_concurrently() -> None:
    boss = ScriptedProvider("boss", default=workflow(("a", "one", []), ("b", "two", []),
                                             ("c", "join", "all")))
    a = ScriptedProvider("a", delay_s=0.2, default="ok")
    b = ScriptedProvider("b", delay_s=0.2, default="ok")
    c = ScriptedProvider("c", default="joined")
    started = time.monotonic()
    response = await run(profile(), REQ, {"boss": boss, "a": a, "b": b, "c": c})
    elapsed = time.monotonic() - started
    assert response.content == "joined"
    assert elapsed < 0.35, f"two 200 ms steps took {elapsed:.3f}s: not concurrent"
    assert abs(a.started[0] - b.started[0]) < 0.05


async def test_fanout_bounds_concurrent_steps() -> None:
    steps = [("a", f"part {i}", []) for i in range(5)] + [("b", "join", "all")]
    boss = ScriptedProvider("boss", default=workflow(*steps))
    a, b = ScriptedProvider("a", delay_s=0.05, default="ok"), ScriptedProvider("b", default="done")
    await run(profile(max_fanout=2), REQ, {"boss": boss, "a": a, "b": b, "c": b})
    assert len(a.requests) == 5
    assert a.max_active == 2


async def test_self_recursion_is_bounded_by_max_depth() -> None:
    def plan(req: object) -> str:
        return workflow(("self", "solve it recursively", []))

    boss = ScriptedProvider("boss", rules=[("You coordinate", plan)], default="LEAF-ANSWER",
                            match_all=True)
    trace: list[dict[str, object]] = []
    response = await run(profile(max_depth=1), REQ, {"boss": boss, "a": boss, "b": boss,
                                                     "c": boss}, trace=trace)
    assert response.content == "LEAF-ANSWER"
    prompts = boss.prompts()
    assert len(prompts) == 3  # plan at level 0, plan at level 1, plain call at level 1
    assert "- self:" in prompts[0] and "- self:" not in prompts[1]
    assert "You coordinate" not in prompts[2] and "solve it recursively" in prompts[2]
    levels = [t["level"] for t in trace if t["type"] == "workflow"]
    assert levels == [0, 1]


async def test_malformed_workflow_gets_one_corrective_retry_then_error() -> None:
    boss = ScriptedProvider("boss", default=["this is not json", workflow(("zeta", "x", []))])
    with pytest.raises(UpstreamError) as info:
        await run(profile(degrade=False), REQ, {"boss": boss})
    assert info.value.code == "malformed_workflow"
    assert info.value.status == 502
    assert len(boss.requests) == 2
    assert "no JSON workflow" in boss.prompts()[1]
    assert "unknown worker 'zeta'" in info.value.message


async def test_a_plan_that_stays_malformed_degrades_to_one_coordinator_call() -> None:
    boss = ScriptedProvider("boss", default=["Let me think step by step about octopuses.",
                                     "Step 1: research. Step 2: write.",
                                     "Octopuses have three hearts."])
    trace: list[dict[str, object]] = []
    items = [i async for i in await run(profile(), REQ, {"boss": boss}, stream=True,
                                        trace=trace)]
    text = "".join(i.content or "" for i in items if isinstance(i, Delta))
    assert text == "Octopuses have three hearts."
    assert len(boss.requests) == 3
    assert boss.requests[2].messages[-1].text() == "Write a report on octopuses."
    assert [t["type"] for t in trace] == ["workflow_rejected", "workflow_degraded"]
    assert isinstance(items[-1], End) and items[-1].finish_reason == "stop"


async def test_prose_then_a_valid_plan_under_response_format() -> None:
    boss = ProviderWithSpec(ScriptedProvider("boss", default=[
        "Sure! First the arms, then the ink.", workflow(("a", "write it", []))]), "openai")
    a = ProviderWithSpec(ScriptedProvider("a", default="REPORT"), "anthropic")
    response = await run(profile(), REQ, {"boss": boss, "a": a})
    assert response.content == "REPORT"
    for sent in boss.inner.requests:
        assert sent.response_format is not None
        assert sent.response_format["type"] == "json_schema"
        schema = sent.response_format["json_schema"]["schema"]
        assert schema["properties"]["steps"]["items"]["properties"]["worker"]["enum"] == [
            "a", "b", "c", "self"]
        assert (sent.temperature, sent.max_tokens) == (0.0, 2048)
    (worker_call,) = a.inner.requests
    assert worker_call.response_format is None and worker_call.temperature is None


async def test_the_papers_three_list_form_is_a_workflow() -> None:
    plan = json.dumps({"model_ids": ["a", "b"],
                       "subtasks": ["list three octopus facts", "write the report"],
                       "access_lists": [[], "all"]})
    boss = ScriptedProvider("boss", default=plan)
    a, b = ScriptedProvider("a", default="FACTS"), ScriptedProvider("b", default="REPORT")
    response = await run(profile(), REQ, {"boss": boss, "a": a, "b": b, "c": b})
    assert response.content == "REPORT" and len(boss.requests) == 1
    assert "FACTS" in b.prompts()[0]
    bare = json.dumps([["a", "b"], ["x", "y"], [[], [0]]])
    steps = parse_workflow(bare, {"a", "b"}, allow_self=False, max_steps=8)
    assert [(s.worker, s.access) for s in steps] == [("a", ()), ("b", (0,))]


async def test_fanout_is_bounded_across_nesting_levels() -> None:
    def plan(req: ChatRequest) -> str:
        if "nested" in req.messages[-1].text():
            return workflow(*[("a", f"inner part {i}", []) for i in range(3)],
                            ("b", "inner join", "all"))
        return workflow(("self", "nested one", []), ("self", "nested two", []),
                        ("a", "outer part", []), ("b", "outer join", "all"))

    boss = ScriptedProvider("boss", default=plan, delay_s=0.02)
    a = ScriptedProvider("a", delay_s=0.05, default="ok")
    b = ScriptedProvider("b", default="done", delay_s=0.02)
    shared = Concurrency()
    await run(profile(max_fanout=2, max_depth=1), REQ,
              {"boss": shared.watch(boss), "a": shared.watch(a), "b": shared.watch(b),
               "c": shared.watch(b)})
    assert len(a.requests) == 7
    assert shared.max_active == 2


async def test_corrective_retry_recovers() -> None:
    boss = ScriptedProvider("boss", default=[workflow(("a", "x", [3])), workflow(("a", "x", []))])
    a = ScriptedProvider("a", default="fixed")
    response = await run(profile(), REQ, {"boss": boss, "a": a})
    assert response.content == "fixed"
    assert "not an earlier step" in boss.prompts()[1]


@pytest.mark.parametrize("text, error", [
    ("[]", "non-empty"),
    ('[{"worker": "a", "subtask": "x", "access": [0]}]', "not an earlier step"),
    ('[{"worker": "a", "subtask": "x"}, {"worker": "a", "subtask": "y", "access": [1]}]',
     "not an earlier step"),
    ('[{"worker": "self", "subtask": "x"}]', "unknown worker"),
    ('[{"worker": "a", "subtask": ""}]', "non-empty string"),
    ('[{"worker": "a", "subtask": "x", "access": "some"}]', "access must be"),
])
def test_parse_workflow_rejects(text: str, error: str) -> None:
    with pytest.raises(WorkflowError, match=error):
        parse_workflow(text, {"a"}, allow_self=False, max_steps=8)


def test_parse_workflow_reads_fenced_json_and_all() -> None:
    text = 'Plan:\n```json\n{"steps": [{"worker": "a", "subtask": "x"},' \
           ' {"worker": "b", "subtask": "y", "access": "all"}]}\n```'
    steps = parse_workflow(text, {"a", "b"}, allow_self=False, max_steps=8)
    assert [s.access for s in steps] == [(), (0,)]


async def test_stream_emits_events_streams_last_step_and_sums_usage() -> None:
    boss = ScriptedProvider("boss", default=workflow(("a", "one", []), ("b", "final words", [0])))
    a = ScriptedProvider("a", default="alpha")
    b = ScriptedProvider("b", default="the final answer text")
    items = [i async for i in await run(profile(), REQ, {"boss": boss, "a": a, "b": b},
                                        stream=True)]
    ends = [i for i in items if isinstance(i, End)]
    assert len(ends) == 1 and items[-1] is ends[0]
    assert not any(isinstance(i, ChunkError) for i in items)
    deltas = [i for i in items if isinstance(i, Delta)]
    assert len(deltas) == 4  # streamed word by word from the last step
    assert "".join(d.content or "" for d in deltas) == "the final answer text"
    events = [i for i in items if isinstance(i, OrchEvent)]
    assert [e.kind for e in events if e.kind == "step_start"] == ["step_start"] * 2
    assert events[-1].kind == "final"
    assert ends[0].usage.prompt_tokens == 30
    assert ends[0].usage.cost_usd == pytest.approx(0.003)
    assert b.requests[0].stream is True


async def test_stream_failure_ends_with_one_error_and_one_end() -> None:
    boss = ScriptedProvider("boss", default=workflow(("a", "one", [])))
    a = ScriptedProvider("a", default=UpstreamTransient("provider a failed: boom"))
    items = [i async for i in await run(profile(), REQ, {"boss": boss, "a": a}, stream=True)]
    assert [type(i).__name__ for i in items if not isinstance(i, OrchEvent)] == [
        "ChunkError", "End"]
    assert items[-1].finish_reason == "error"
    assert items[-1].usage.cost_usd == pytest.approx(0.001)
