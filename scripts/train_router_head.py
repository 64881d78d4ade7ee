"""Trains the shipped learned-router head, orchestrators/data/trinity_router_head.npz.

    .venv/bin/python -m scripts.train_router_head [--generations 40] [--popsize 16]

The task set is orchestrators/data/trinity_router_tasks.yaml (constrained writing and JSON
with given keys). The deployments are simulated in process, each with its strengths, so
the head has something to learn and the run is repeatable:

- ``small``: as Worker writes short sentences with the asked-for words (passes the writing
  tasks) but answers JSON tasks in prose (fails them); as Verifier accepts anything.
- ``large``: as Worker writes valid JSON with the asked-for keys but rambles past every
  word limit; as Verifier accepts anything.
- ``judge``: as Verifier applies the task's check to the latest Worker answer (accepts or
  asks for a revision); as Worker only says it reviews.
Every Thinker writes a plan that changes nothing. The embedding is the real
all-MiniLM-L6-v2 (``learned-router`` extra). The script prints the learned and the rule
router's fitness, pass rate and calls on the same tasks.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from tako.core.types import ChatChunk, ChatRequest, ChatResponse, Delta, End, Usage
from tako.orchestrators.learned_router import MINILM, embedder, shipped_head_path
from tako.orchestrators.router_training import Check, TaskFile, TrainConfig, train

TASKS_PATH = Path(str(resources.files("tako.orchestrators") / "data"
                      / "trinity_router_tasks.yaml"))
TASK_FILE: dict[str, Any] = yaml.safe_load(TASKS_PATH.read_text())
CHECKS = {t["request"]: Check.model_validate(t["check"]) for t in TASK_FILE["tasks"]}
_LAST_WORKER = re.compile(r"\] Worker \([^)]*\):\n(.*?)(?=\n\n\[turn \d+\]|\n\nNow act as|\Z)",
                          re.DOTALL)


def _role(req: ChatRequest) -> str:
    system = req.messages[0].text() if req.messages else ""
    for role in ("Thinker", "Worker", "Verifier"):
        if f"You are the {role}" in system or f"You are the {role}" in req.messages[-1].text():
            return role
    return "Worker"


def _task(req: ChatRequest) -> tuple[str, Check]:
    for message in req.messages:
        if message.role == "user" and message.text() in CHECKS:
            return message.text(), CHECKS[message.text()]
    return "", Check()


def _worker_answer(name: str, check: Check) -> str:
    if check.json_keys:
        if name == "large":
            return json.dumps({key: f"sample {key}" for key in check.json_keys})
        return "Sure! " + ", ".join(f"the {k} is something" for k in check.json_keys) + "."
    if name == "small":
        return f"The {' and the '.join(check.include)} meet."
    words = " ".join(check.include)
    return ("Well, there is a great deal one could say here, and I will try to say all of it "
            f"at length, touching on {words} and many other lovely things besides, in a long "
            "flowing line that keeps going well past any limit anyone might have set.")


def _verdict(name: str, req: ChatRequest, check: Check) -> str:
    if name != "judge":
        return "VERDICT: ACCEPT"
    answers = _LAST_WORKER.findall(req.messages[-1].text())
    if answers and check.passes(answers[-1].strip()):
        return "VERDICT: ACCEPT"
    return "VERDICT: REVISE: the answer does not meet the request's constraints"


class SimulatedModel:
    """An in-process LlmProvider with the strengths the module docstring gives."""

    def __init__(self, name: str) -> None:
        self.id = self.model = name
        self.calls = 0

    def answer(self, req: ChatRequest) -> str:
        self.calls += 1
        role = _role(req)
        _, check = _task(req)
        if role == "Thinker":
            return "PLAN: read the constraints, then write the answer."
        if role == "Verifier":
            return _verdict(self.id, req, check)
        if self.id == "judge":
            return "I only review answers."
        return _worker_answer(self.id, check)

    async def chat(self, req: ChatRequest) -> ChatResponse:
        text = self.answer(req)
        return ChatResponse(id=f"chatcmpl-{uuid.uuid4().hex[:8]}", model=self.model,
                            created=int(time.time()), content=text, finish_reason="stop",
                            usage=Usage(prompt_tokens=50, completion_tokens=len(text.split())),
                            provider_id=self.id)

    async def stream(self, req: ChatRequest) -> AsyncIterator[ChatChunk]:
        text = self.answer(req)
        yield Delta(content=text)
        yield End("stop", Usage(prompt_tokens=50, completion_tokens=len(text.split())))

    def estimate_cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        return 0.0

    async def aclose(self) -> None:
        return None


def synthetic_world() -> dict[str, SimulatedModel]:
    return {name: SimulatedModel(name) for name in ("small", "large", "judge")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--generations", type=int, default=40)
    parser.add_argument("--popsize", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=12)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default=str(shipped_head_path()))
    args = parser.parse_args()
    tasks = TaskFile.model_validate(TASK_FILE)
    config = TrainConfig(generations=args.generations, popsize=args.popsize,
                         hidden=args.hidden, seed=args.seed)
    result = asyncio.run(train(tasks, synthetic_world(), embedder(MINILM), config,
                               lambda g, best: print(f"generation {g + 1}: {best}", flush=True)))
    result.head.save(args.out)
    print(f"wrote {args.out}: {result.head.theta.size} parameters; learned {result.best}; "
          f"rule router {result.baseline}")


if __name__ == "__main__":
    main()
