"""Training the ``learned`` trinity router's head with sep-CMA-ES (``tako train-router``).

A task file (YAML or JSON, ``TaskFile``) names the trinity ``roles`` over the deployments to
train against, the head's LLM slots (``llms``, default every alias of ``roles``), the runs'
``max_turns``, a ``cost_per_call`` and the ``tasks``: each a request text and a
programmatic ``check`` of the final answer (``include``/``exclude`` words, ``max_words``,
``json_keys``, ``regex``; every given condition must hold).

One candidate head is scored by running a trinity episode per task with that head as the
router, against the given providers (the gateway's deployments, or in-process ones): its
fitness is the check's pass rate minus ``cost_per_call`` times the mean number of upstream
calls per episode. sep-CMA-ES (the ``cma`` package with ``CMA_diagonal``: a diagonal
covariance, linear in the ~10K parameters) maximises it; the best head seen is kept.
"""

from __future__ import annotations

import asyncio
import json
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tako.core.protocols import LlmProvider
from tako.core.types import ChatRequest, Message
from tako.orchestrators.api import make_context
from tako.orchestrators.learned_router import Embedder, Head, LearnedRouter
from tako.orchestrators.params import Params
from tako.orchestrators.routers import ROLES, Router, RuleRouter
from tako.orchestrators.trinity import Trinity, TrinityParams, TrinityRoles


class Check(Params):
    include: list[str] = []
    exclude: list[str] = []
    max_words: int | None = None
    json_keys: list[str] | None = None
    regex: str | None = None

    def passes(self, text: str) -> bool:
        lower = text.lower()
        if any(w.lower() not in lower for w in self.include):
            return False
        if any(re.search(rf"\b{re.escape(w.lower())}\b", lower) for w in self.exclude):
            return False
        if self.max_words is not None and len(text.split()) > self.max_words:
            return False
        if self.regex is not None and not re.search(self.regex, text):
            return False
        return self.json_keys is None or _has_keys(text, self.json_keys)


def _has_keys(text: str, keys: list[str]) -> bool:
    body = text.strip().removeprefix("```json").removeprefix("```").removesuffix("```")
    try:
        data = json.loads(body)
    except ValueError:
        return False
    return isinstance(data, dict) and all(k in data for k in keys)


class Task(Params):
    request: str
    check: Check


class TaskFile(Params):
    roles: TrinityRoles
    llms: list[str] | None = None
    max_turns: int = 4
    cost_per_call: float = 0.02
    tasks: list[Task]

    def slots(self) -> list[str]:
        if self.llms:
            return list(self.llms)
        seen: dict[str, None] = {}
        for role in ROLES:
            seen.update(dict.fromkeys(getattr(self.roles, role)))
        return list(seen)


@dataclass(slots=True)
class TrainConfig:
    generations: int = 30
    popsize: int = 12
    sigma0: float = 0.3
    hidden: int = 12
    seed: int = 1


@dataclass(slots=True)
class Score:
    fitness: float
    pass_rate: float
    calls: float


@dataclass(slots=True)
class TrainResult:
    head: Head
    best: Score
    baseline: Score  # the rule router on the same tasks
    history: list[float] = field(default_factory=list)  # best fitness per generation


async def episode(trinity: Trinity, router: Router, task: Task,
                  providers: Mapping[str, LlmProvider]) -> tuple[bool, int]:
    """One trinity run of ``task`` routed by ``router``: (passed, upstream calls)."""
    trace: list[dict[str, Any]] = []
    ctx = make_context(providers, trace=trace)
    trinity.make_router = lambda _ctx: router
    req = ChatRequest(model="trinity", messages=[Message(role="user", content=task.request)])
    try:
        response = await trinity.complete(ctx, req)
    except Exception:  # an episode whose upstream failed scores as a failed task
        return False, sum(1 for t in trace if t.get("type") == "turn") + 1
    calls = sum(1 for t in trace if t.get("type") == "turn")
    return task.check.passes(response.content or ""), calls


async def evaluate(tasks: TaskFile, make_router: Callable[[], Router],
                   providers: Mapping[str, LlmProvider]) -> Score:
    params = TrinityParams.model_validate({"roles": tasks.roles.model_dump(),
                                          "max_turns": tasks.max_turns})
    results = await asyncio.gather(*(episode(Trinity(params), make_router(), task, providers)
                                     for task in tasks.tasks))
    pass_rate = sum(ok for ok, _ in results) / len(results)
    calls = sum(n for _, n in results) / len(results)
    return Score(pass_rate - tasks.cost_per_call * calls, pass_rate, calls)


async def train(tasks: TaskFile, providers: Mapping[str, LlmProvider], embed: Embedder,
                config: TrainConfig | None = None,
                progress: Callable[[int, Score], None] | None = None) -> TrainResult:
    """sep-CMA-ES over the head's parameters; the best head evaluated is returned."""
    with warnings.catch_warnings():  # cma warns that matplotlib (its plots) is missing
        warnings.simplefilter("ignore")
        import cma  # type: ignore[import-untyped]

    config = config or TrainConfig()
    blank = Head.zeros(tasks.slots(), embed.name, embed.dim, config.hidden)
    strategy = cma.CMAEvolutionStrategy(
        np.zeros(blank.theta.size), config.sigma0,
        {"CMA_diagonal": True, "popsize": config.popsize, "seed": config.seed,
         "maxiter": config.generations, "verbose": -9})
    best_theta, best = blank.theta, Score(-np.inf, 0.0, 0.0)
    history: list[float] = []
    for generation in range(config.generations):
        candidates = strategy.ask()
        scores = [await evaluate(tasks, _router_of(blank.with_theta(x), embed), providers)
                  for x in candidates]
        strategy.tell(candidates, [-s.fitness for s in scores])
        top = max(range(len(scores)), key=lambda i: scores[i].fitness)
        if scores[top].fitness > best.fitness:
            best_theta, best = np.asarray(candidates[top]), scores[top]
        history.append(best.fitness)
        if progress is not None:
            progress(generation, best)
    baseline = await evaluate(tasks, RuleRouter, providers)
    return TrainResult(blank.with_theta(best_theta), best, baseline, history)


def _router_of(head: Head, embed: Embedder) -> Callable[[], Router]:
    return lambda: LearnedRouter(head, embed)
