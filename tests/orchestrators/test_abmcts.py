"""abmcts: the tree grows wider and deeper, budgets and early stop, best node returned."""

from __future__ import annotations

import importlib.util
import re

import numpy as np
import pytest
from pydantic import ValidationError

from tako.core.errors import ConfigError, UpstreamError, UpstreamTransient
from tako.core.types import ChatRequest, End, OrchEvent
from tako.orchestrators.abmcts import ABMCTS, ABMCTSParams, build_search
from tako.orchestrators.api import run
from tests.fakes.provider import ScriptedProvider

REQ = {"messages": [{"role": "user", "content": "Solve the puzzle."}]}
JUDGE = {"kind": "llm", "deployment": "judge"}


def worker(name: str, fresh: float, step: float, **kw: object) -> ScriptedProvider:
    """Fresh answers have quality ``fresh``; a refinement adds ``step`` to its parent's."""

    def reply(req: ChatRequest) -> str:
        if len(req.messages) == 1:
            return f"{name} answer q={fresh:.2f}"
        parent = re.findall(r"q=([0-9.]+)", req.messages[-2].text())
        return f"{name} refined q={min(1.0, float(parent[-1]) + step):.2f}"

    return ScriptedProvider(name, default=reply, price_per_token=None,  # flat estimates
                            **kw)  # type: ignore[arg-type]


def judge() -> ScriptedProvider:
    """Reads the graded answer's quality back as its score."""

    def reply(req: ChatRequest) -> str:
        quality = re.findall(r"q=([0-9.]+)", req.messages[-1].text())[-1]
        return f'{{"score": {quality}, "feedback": "could be better"}}'

    return ScriptedProvider("judge", default=reply, price_per_token=None)


def profile(**params: object) -> dict[str, object]:
    base: dict[str, object] = {"workers": ["good", "weak"], "verifier": JUDGE, "seed": 7}
    base.update(params)
    return {"kind": "abmcts", "params": base}


def nodes(trace: list[dict[str, object]]) -> list[dict[str, object]]:
    return [t for t in trace if t["type"] == "node"]


async def test_tree_grows_wider_and_deeper_and_best_node_wins() -> None:
    good, weak = worker("good", 0.3, 0.1), worker("weak", 0.2, 0.02)
    trace: list[dict[str, object]] = []
    response = await run(profile(max_calls=20, seed=0), REQ,
                         {"good": good, "weak": weak, "judge": judge()}, trace=trace)
    tree = nodes(trace)
    assert len(tree) == 20
    root_children = [n for n in tree if n["parent"] is None]
    assert len(root_children) >= 2, "never went wider"
    assert max(n["depth"] for n in tree) >= 3, "never went deeper"
    parents = {n["node"]: n["parent"] for n in tree}
    assert all(p is None or p in parents for p in parents.values())
    best = max(tree, key=lambda n: n["score"])
    summary = next(t for t in trace if t["type"] == "abmcts")
    assert summary["best"] == best["node"] and summary["stop"] == "max_calls"
    assert f"q={best['score']:.2f}" in (response.content or "")
    actions = [n["action"] for n in tree]
    assert actions.count("good") > actions.count("weak") >= 1
    # every generation and every judgement is counted
    assert response.usage.cost_usd == pytest.approx(0.04)


async def test_search_is_reproducible_and_leaves_global_random_state_alone() -> None:
    np.random.seed(123)
    expected_next = np.random.RandomState(123).random_sample()
    shapes = []
    for _ in range(2):
        trace: list[dict[str, object]] = []
        await run(profile(max_calls=10), REQ, {"good": worker("good", 0.3, 0.1),
                                               "weak": worker("weak", 0.2, 0.02),
                                               "judge": judge()}, trace=trace)
        shapes.append([(n["parent"], n["action"]) for n in nodes(trace)])
    assert shapes[0] == shapes[1]
    assert np.random.random_sample() == expected_next


async def test_stops_early_at_min_confidence() -> None:
    good = worker("good", 0.95, 0.0)
    trace: list[dict[str, object]] = []
    response = await run(profile(workers=["good"], max_calls=10, min_confidence=0.9,
                                 batch_size=1), REQ, {"good": good, "judge": judge()},
                         trace=trace)
    assert len(good.requests) == 1
    assert next(t for t in trace if t["type"] == "abmcts")["stop"] == "min_confidence"
    assert response.content == "good answer q=0.95"


async def test_call_budget_is_respected_with_batches() -> None:
    good, weak = worker("good", 0.3, 0.1), worker("weak", 0.2, 0.02)
    await run(profile(max_calls=7, batch_size=3), REQ,
              {"good": good, "weak": weak, "judge": judge()})
    assert len(good.requests) + len(weak.requests) == 7


@pytest.mark.parametrize("batch_size", [1, 5])
@pytest.mark.parametrize("cap", [0.0045, 0.0101])
async def test_max_cost_is_a_hard_cap(batch_size: int, cap: float) -> None:
    good = worker("good", 0.3, 0.1)
    trace: list[dict[str, object]] = []
    response = await run(profile(workers=["good"], max_calls=50, max_cost_usd=cap,
                                 batch_size=batch_size), REQ,
                         {"good": good, "judge": judge()}, trace=trace)
    expansions = int(cap / 0.002)  # 0.001 per generation + 0.001 per judgement
    assert len(good.requests) == expansions
    assert response.usage.cost_usd <= cap
    assert next(t for t in trace if t["type"] == "abmcts")["stop"] == "max_cost_usd"
    assert all(r.max_tokens == 1024 for r in good.requests)


async def test_a_cap_below_one_expansion_makes_no_call() -> None:
    good = worker("good", 0.3, 0.1)
    with pytest.raises(UpstreamError, match="no candidate"):
        await run(profile(workers=["good"], max_cost_usd=0.0015), REQ,
                  {"good": good, "judge": judge()})
    assert good.requests == []


async def test_batch_runs_concurrently_up_to_five() -> None:
    good = worker("good", 0.3, 0.1, delay_s=0.05)
    await run(profile(workers=["good"], max_calls=10, batch_size=9), REQ,
              {"good": good, "judge": judge()})
    assert good.max_active == 5
    assert len(good.requests) == 10


async def test_refinement_prompt_carries_parent_answer_score_and_feedback() -> None:
    good = worker("good", 0.3, 0.1)
    await run(profile(workers=["good"], max_calls=12), REQ, {"good": good, "judge": judge()})
    refinements = [r for r in good.requests if len(r.messages) == 3]
    assert refinements, "no refinement happened"
    last = refinements[0].messages
    assert last[1].role == "assistant" and "q=" in last[1].text()
    assert "scored 0.3" in last[2].text() and "could be better" in last[2].text()


async def test_stream_reports_scores_and_ends_once() -> None:
    items = [i async for i in await run(profile(workers=["good"], max_calls=4), REQ,
                                        {"good": worker("good", 0.3, 0.1),
                                         "judge": judge()}, stream=True)]
    scores = [i for i in items if isinstance(i, OrchEvent) and i.kind == "verifier_score"]
    assert len(scores) == 4 and all(0 <= s.data["score"] <= 1 for s in scores)
    assert sum(isinstance(i, End) for i in items) == 1 and isinstance(items[-1], End)


async def test_failed_workers_raise_when_nothing_was_produced() -> None:
    from tako.core.errors import UpstreamError

    bad = ScriptedProvider("bad", default=UpstreamTransient("provider bad failed: down"))
    with pytest.raises(UpstreamError, match="down"):
        await run(profile(workers=["bad"], max_calls=3), REQ, {"bad": bad, "judge": judge()})
    assert len(bad.requests) == 3


async def test_priors_are_configurable() -> None:
    good, weak = worker("good", 0.3, 0.1), worker("weak", 0.2, 0.02)
    params = {"dist_type": "beta", "prior": {"a": 2.0, "b": 2.0},
              "reward_average_priors": {"good": 0.8, "weak": 0.1}, "max_calls": 4}
    response = await run(profile(**params), REQ,
                         {"good": good, "weak": weak, "judge": judge()})
    assert response.content and len(good.requests) + len(weak.requests) == 4
    orchestrator = ABMCTS(ABMCTSParams.model_validate(
        {"workers": ["good"], "verifier": JUDGE, "dist_type": "beta",
         "prior": {"a": 2.0, "b": 2.0}}))
    assert build_search(orchestrator.params).prior_config.get_params() == {"a": 2.0, "b": 2.0}
    with pytest.raises(ValidationError, match="not parameters of the beta prior"):
        ABMCTSParams.model_validate({"workers": ["good"], "verifier": JUDGE,
                                     "dist_type": "beta", "prior": {"kappa": 1.0}})


def test_abmcts_m_is_offered_when_treequests_optional_dependencies_are_installed() -> None:
    params = ABMCTSParams.model_validate({"workers": ["good"], "verifier": JUDGE,
                                          "algorithm": "m"})
    if importlib.util.find_spec("pymc") is not None:
        assert type(build_search(params)).__name__ == "ABMCTSM"
        return
    with pytest.raises(ConfigError, match=r"treequest\[abmcts-m\]"):
        ABMCTS(params)
