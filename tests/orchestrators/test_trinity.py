"""trinity: rule router flow, ACCEPT/REVISE loop, turn cap, LLM router parsing + fallback."""

from __future__ import annotations

import pytest

from tako.core.types import Delta, End, OrchEvent
from tako.orchestrators.api import run
from tako.orchestrators.routers import parse_choice
from tako.orchestrators.textparse import parse_verdict
from tests.fakes.provider import ScriptedProvider
from tests.fakes.provider_wrappers import ProviderWithSpec

REQ = {"messages": [{"role": "user", "content": "What is 17 * 23?"}]}


def team(verifier_replies: list[str], worker_replies: list[str] | None = None) -> ScriptedProvider:
    """One scripted model playing every role, recognised by its system prompt."""
    return ScriptedProvider("m", rules=[
        ("You are the Thinker", "PLAN: multiply step by step"),
        ("You are the Worker", worker_replies or ["391"]),
        ("You are the Verifier", verifier_replies),
    ], match_all=True, default="ok")


def profile(**params: object) -> dict[str, object]:
    base: dict[str, object] = {"roles": {"thinker": "m", "worker": "m", "verifier": "m"}}
    base.update(params)
    return {"kind": "trinity", "params": base}


def roles_of(model: ScriptedProvider) -> list[str]:
    out = []
    for prompt in model.prompts():
        for role in ("Thinker", "Worker", "Verifier"):
            if f"You are the {role}" in prompt:
                out.append(role)
    return out


async def test_accept_stops_after_thinker_worker_verifier() -> None:
    m = team(["ACCEPT"])
    response = await run(profile(), REQ, {"m": m}, trace=True)
    assert response.content == "391"
    assert roles_of(m) == ["Thinker", "Worker", "Verifier"]
    worker_prompt, verifier_prompt = m.prompts()[1], m.prompts()[2]
    assert "PLAN: multiply" in worker_prompt and "17 * 23" in worker_prompt
    assert "391" in verifier_prompt and "PLAN: multiply" in verifier_prompt
    verdicts = [t["verdict"] for t in response.extra["tako_trace"] if t["type"] == "turn"]
    assert verdicts == [None, None, "accept"]


async def test_revise_goes_back_to_worker_with_the_diagnosis() -> None:
    m = team(["VERDICT: REVISE: the product is off by ten", "ACCEPT"], ["381", "391"])
    response = await run(profile(), REQ, {"m": m})
    assert response.content == "391"
    assert roles_of(m) == ["Thinker", "Worker", "Verifier", "Worker", "Verifier"]
    assert "off by ten" in m.prompts()[3]
    assert response.usage.prompt_tokens == 50


async def test_revise_blaming_the_plan_returns_to_the_thinker() -> None:
    m = team(["VERDICT: REVISE: the plan is wrong, decompose differently", "ACCEPT"])
    await run(profile(), REQ, {"m": m})
    assert roles_of(m) == ["Thinker", "Worker", "Verifier", "Thinker", "Worker", "Verifier"]


async def test_turn_cap_returns_last_worker_output() -> None:
    m = team(["VERDICT: REVISE: still wrong"], ["a1", "a2", "a3"])
    response = await run(profile(max_turns=4), REQ, {"m": m})
    assert len(m.requests) == 4
    assert roles_of(m) == ["Thinker", "Worker", "Verifier", "Worker"]
    assert response.content == "a2"


async def test_roles_use_their_assigned_llms_in_rotation() -> None:
    thinker = ScriptedProvider("t", default="plan")
    workers = [ScriptedProvider("w1", default="one"), ScriptedProvider("w2", default="two")]
    judge = ScriptedProvider("v", default=["VERDICT: REVISE: wrong", "ACCEPT"])
    params = {"roles": {"thinker": "t", "worker": ["w1", "w2"], "verifier": "v"}}
    response = await run(profile(**params), REQ,
                         {"t": thinker, "w1": workers[0], "w2": workers[1], "v": judge})
    assert response.content == "two"
    assert [len(p.requests) for p in (thinker, *workers, judge)] == [1, 1, 1, 2]


async def test_llm_router_choices_are_followed_and_bad_replies_fall_back() -> None:
    router = ScriptedProvider("r", default=[
        '{"llm": "m", "role": "worker"}',
        "I think the verifier should go",  # unparseable -> rule router: Verifier after Worker
        '```json\n{"llm": "m", "role": "Worker"}\n```',
        '{"llm": "ghost", "role": "verifier"}',  # unknown llm -> rule router: Verifier
    ])
    m = team(["VERDICT: REVISE: wrong", "ACCEPT"], ["w1", "w2"])
    trace: list[dict[str, object]] = []
    response = await run(profile(router={"kind": "llm", "deployment": "r"}), REQ,
                         {"m": m, "r": router}, trace=trace)
    assert roles_of(m) == ["Worker", "Verifier", "Worker", "Verifier"]
    assert response.content == "w2"
    assert {"type": "router_fallbacks", "count": 2} in trace
    assert len(router.requests) == 4
    first = router.requests[0]
    assert "- thinker: m\n- worker: m\n- verifier: m" in first.messages[-1].text()
    assert (first.temperature, first.max_tokens) == (0.0, 128)


@pytest.mark.parametrize("reply, expected", [
    ('{"llm": "a", "role": "thinker"}', ("a", "thinker")),
    ('Next: {"role": "VERIFIER", "llm": "b"}', ("b", "verifier")),
    ('{"llm": "c", "role": "worker"}', None),
    ('{"llm": "a", "role": "judge"}', None),
    ("worker a", None),
    ('["a", "worker"]', None),
])
def test_parse_choice(reply: str, expected: tuple[str, str] | None) -> None:
    assert parse_choice(reply, ["a", "b"]) == expected


@pytest.mark.parametrize("text, expected", [
    ("ACCEPT", ("accept", "")),
    ("**ACCEPT**", ("accept", "")),
    ("VERDICT: ACCEPT", ("accept", "")),
    ("Checked every line.\n**Verdict:** REVISE - the sum is wrong",
     ("revise", "the sum is wrong")),
    ("VERDICT: REVISE: units missing", ("revise", "units missing")),
    ('{"verdict": "accept", "diagnosis": ""}', ("accept", "")),
    ('{"verdict": "REVISE", "diagnosis": "off by one"}', ("revise", "off by one")),
    ("I cannot ACCEPT this", None),
    ("If it is correct and complete reply exactly ACCEPT. Otherwise reply REVISE: ...",
     None),
    ("ACCEPT, although the units are missing", None),
    ("REVISE: units missing", None),
    ('{"verdict": "maybe"}', None),
    ("looks fine to me", None),
])
def test_verdicts_come_only_from_a_field_or_a_verdict_line(
        text: str, expected: tuple[str, str] | None) -> None:
    assert parse_verdict(text) == expected


async def test_stream_reports_turns_and_verdicts_and_replays_answer() -> None:
    m = team(["VERDICT: REVISE: wrong", "ACCEPT"], ["381", "391"])
    items = [i async for i in await run(profile(), REQ, {"m": m}, stream=True)]
    events = [i for i in items if isinstance(i, OrchEvent)]
    scores = [e.data["score"] for e in events if e.kind == "verifier_score"]
    assert scores == [0.0, 1.0]
    assert [e.data["role"] for e in events if e.kind == "step_start"] == [
        "thinker", "worker", "verifier", "worker", "verifier"]
    deltas = [i for i in items if isinstance(i, Delta)]
    assert [d.content for d in deltas] == ["391"]
    assert sum(isinstance(i, End) for i in items) == 1 and isinstance(items[-1], End)
    assert items[-1].usage.cost_usd == pytest.approx(0.005)


async def test_a_verifier_that_only_mentions_accept_does_not_end_the_run() -> None:
    m = team(["I cannot ACCEPT this", "Reply exactly ACCEPT if it is correct.", "ACCEPT"],
             ["381", "390", "391"])
    trace: list[dict[str, object]] = []
    items = [i async for i in await run(profile(max_turns=7), REQ, {"m": m}, stream=True,
                                        trace=trace)]
    verdicts = [t["verdict"] for t in trace if t["type"] == "turn" and t["role"] == "verifier"]
    assert verdicts == ["unreadable", "unreadable", "accept"]
    scores = [i.data["score"] for i in items
              if isinstance(i, OrchEvent) and i.kind == "verifier_score"]
    assert scores == [None, None, 1.0]
    assert "".join(i.content or "" for i in items if isinstance(i, Delta)) == "391"


async def test_role_prompts_reach_a_model_that_drops_system_messages() -> None:
    m = team(["ACCEPT"])
    folded = ProviderWithSpec(m, "http-generic", fold_system_prompt=True)
    response = await run(profile(), REQ, {"m": folded})
    assert response.content == "391"
    for sent in m.requests:
        assert [msg.role for msg in sent.messages][0] == "user"
        assert all(msg.role != "system" for msg in sent.messages)
    assert m.requests[0].messages[0].text().startswith("You are the Thinker")
    assert "17 * 23" in m.requests[0].messages[0].text()
    verifier_call = m.requests[2]
    assert verifier_call.response_format is not None
    assert verifier_call.response_format["json_schema"]["schema"]["required"] == [
        "verdict", "diagnosis"]


async def test_a_worker_on_the_last_turn_streams_as_it_writes() -> None:
    m = team(["VERDICT: REVISE: still wrong"], ["a1", "the final answer"])
    items = [i async for i in await run(profile(max_turns=4), REQ, {"m": m}, stream=True)]
    deltas = [i.content for i in items if isinstance(i, Delta)]
    assert deltas == ["the", " final", " answer"]  # the upstream's chunks, not a replay
    assert m.requests[-1].stream
    assert not any(r.stream for r in m.requests[:-1])
