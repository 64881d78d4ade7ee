"""Synthetic search benchmark: AB-MCTS (the ``abmcts`` orchestrator) against repeated
sampling (best-of-N) at equal generation budgets.

Every generated answer carries a hidden quality in [0, 1]. A fresh answer draws it from
the worker's distribution; a refinement of a parent answer draws the parent's quality plus
a worker-specific improvement (positive in expectation, noisy). The verifier (a judge
deployment) sees only the answer text and reports the hidden quality plus Gaussian noise,
so search is guided by noisy scores. Both methods return the answer with the highest
verifier score; the table reports the mean hidden quality of that returned answer
("returned") and of the best answer generated at all ("oracle"), over seeds.

Workers: A samples well (fresh ~ N(0.45, 0.15)) but refines weakly (+N(0.02, 0.05));
B samples worse (fresh ~ N(0.30, 0.15)) but refines well (+N(0.10, 0.08)).

    make bench-search
    .venv/bin/python bench/search_bench.py [--seeds 30] [--budgets 8 16 32 64] [--noise 0.1]

``--seeds`` defaults to ``$BENCH_SEEDS``, else 30 (about 15 s on one core).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from tako.core.types import ChatChunk, ChatRequest, ChatResponse, Delta, End, Usage
from tako.orchestrators.api import make_context, run
from tako.orchestrators.calls import ask
from tako.orchestrators.verifiers import LlmJudge

QUESTION = {"messages": [{"role": "user", "content": "Find the best plan."}]}


@dataclass
class WorkerModel:
    fresh_mean: float
    fresh_sd: float
    refine_mean: float
    refine_sd: float


WORKERS = {
    "A": WorkerModel(0.45, 0.15, 0.02, 0.05),
    "B": WorkerModel(0.30, 0.15, 0.10, 0.08),
}


def clip(x: float) -> float:
    return min(1.0, max(0.0, x))


class World:
    """The hidden truth shared by the simulated workers and the judge of one run."""

    def __init__(self, seed: int, noise: float) -> None:
        self.rng = random.Random(seed)
        self.noise = noise
        self.quality: dict[str, float] = {}

    def new_answer(self, quality: float) -> str:
        answer_id = f"cand-{len(self.quality)}-{uuid.uuid4().hex[:6]}"
        self.quality[answer_id] = quality
        return answer_id

    @staticmethod
    def find_id(text: str) -> str | None:
        for word in text.split():
            if word.startswith("cand-"):
                return word.strip(".,")
        return None


class SimProvider:
    def __init__(self, name: str, world: World) -> None:
        self.id = name
        self.model = f"sim-{name}"
        self.world = world

    def _answer(self, req: ChatRequest) -> str:
        w, rng = self.world, self.world.rng
        if self.id == "judge":
            answer_id = w.find_id(req.messages[-1].text())
            quality = w.quality.get(answer_id or "", 0.0)
            return f'{{"score": {clip(quality + rng.gauss(0, w.noise)):.4f}}}'
        model = WORKERS[self.id]
        if len(req.messages) == 1:
            quality = clip(rng.gauss(model.fresh_mean, model.fresh_sd))
        else:
            parent_id = w.find_id(req.messages[-2].text()) or ""
            quality = clip(w.quality.get(parent_id, 0.0)
                           + rng.gauss(model.refine_mean, model.refine_sd))
        return f"answer {w.new_answer(quality)} from {self.id}"

    async def chat(self, req: ChatRequest) -> ChatResponse:
        return ChatResponse(id="sim", model=self.model, created=0, content=self._answer(req),
                            usage=Usage(prompt_tokens=10, completion_tokens=10, cost_usd=1e-4))

    async def stream(self, req: ChatRequest) -> AsyncIterator[ChatChunk]:
        yield Delta(content=self._answer(req))
        yield End("stop", Usage())

    def estimate_cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        return 1e-4

    async def aclose(self) -> None:
        return None


async def abmcts(world: World, workers: list[str], budget: int, seed: int,
                 batch: int) -> str:
    providers = {name: SimProvider(name, world) for name in [*workers, "judge"]}
    profile = {"kind": "abmcts", "params": {
        "workers": workers, "verifier": {"kind": "llm", "deployment": "judge"},
        "max_calls": budget, "batch_size": batch, "seed": seed}}
    response = await run(profile, QUESTION, providers)
    assert isinstance(response, ChatResponse)
    return response.content or ""


async def best_of_n(world: World, worker: str, budget: int) -> str:
    """Repeated sampling: ``budget`` fresh answers, each scored by the same judge."""
    ctx = make_context({worker: SimProvider(worker, world), "judge": SimProvider("judge", world)})
    judge = LlmJudge(ctx, "judge")
    req = ChatRequest.model_validate({"model": "best-of-n", **QUESTION})
    best, best_score = "", -1.0
    for _ in range(budget):
        answer = (await ask(ctx, worker, req, list(req.messages))).text
        score = (await judge.score(req, answer)).value
        if score > best_score:
            best, best_score = answer, score
    return best


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=int(os.environ.get("BENCH_SEEDS") or 30))
    parser.add_argument("--budgets", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--noise", type=float, default=0.1)
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args()

    methods = {
        "best-of-N (A)": lambda w, b, s: best_of_n(w, "A", b),
        "best-of-N (B)": lambda w, b, s: best_of_n(w, "B", b),
        "AB-MCTS (A)": lambda w, b, s: abmcts(w, ["A"], b, s, args.batch),
        "AB-MCTS (B)": lambda w, b, s: abmcts(w, ["B"], b, s, args.batch),
        "AB-MCTS (A+B)": lambda w, b, s: abmcts(w, ["A", "B"], b, s, args.batch),
    }
    print(f"seeds={args.seeds} verifier noise sd={args.noise} batch={args.batch}")
    print("mean hidden quality: returned answer / best answer generated (oracle)\n")
    header = f"{'method':<16}" + "".join(f"{'N=' + str(b):>16}" for b in args.budgets)
    print(header)
    print("-" * len(header))
    started = time.perf_counter()
    for name, method in methods.items():
        cells = []
        for budget in args.budgets:
            returned, oracle = [], []
            for seed in range(args.seeds):
                world = World(seed * 7919, args.noise)
                answer = await method(world, budget, seed)
                returned.append(world.quality[World.find_id(answer) or ""])
                oracle.append(max(world.quality.values()))
            cells.append(f"{statistics.mean(returned):.3f} / {statistics.mean(oracle):.3f}")
        print(f"{name:<16}" + "".join(f"{c:>16}" for c in cells))
    print(f"\n({time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    asyncio.run(main())
