"""``tako train-router --tasks FILE --out HEAD.npz [--config FILE]``: trains the learned
trinity router's head with sep-CMA-ES (``orchestrators.router_training``) by running
trinity episodes of the task file's tasks against the config's deployments.

The task file (YAML or JSON) names the trinity ``roles``, optionally the head's ``llms``,
``max_turns``, ``cost_per_call`` and the ``tasks`` (request + check). A task file that does
not parse, or names an alias the config lacks, prints its problems and exits with 2.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from tako.app.gateway import Gateway
from tako.core.protocols import LlmProvider
from tako.orchestrators.learned_router import HASHING, MINILM, Embedder, embedder
from tako.orchestrators.router_training import Score, TaskFile, TrainConfig, train

BAD_TASKS_EXIT = 2
DEFAULTS = TrainConfig()


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("train-router", help="train the learned trinity router's head")
    parser.add_argument("--config", help="YAML config file with the deployments to train "
                                         "against (default: $TAKO_CONFIG)")
    parser.add_argument("--tasks", required=True, help="task file (YAML or JSON)")
    parser.add_argument("--out", required=True, help="where to write the head (.npz)")
    parser.add_argument("--generations", type=int, default=DEFAULTS.generations)
    parser.add_argument("--popsize", type=int, default=DEFAULTS.popsize)
    parser.add_argument("--sigma0", type=float, default=DEFAULTS.sigma0)
    parser.add_argument("--hidden", type=int, default=DEFAULTS.hidden,
                        help="hidden units of the head (0: linear)")
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed)
    parser.add_argument("--embedder", choices=[MINILM, HASHING], default=MINILM)
    parser.add_argument("--embed-dim", type=int, default=64,
                        help="dimension of the hashing embedder")


def _tasks(path: str, gateway: Gateway) -> TaskFile | list[str]:
    try:
        data = yaml.safe_load(Path(path).read_text())
        tasks = TaskFile.model_validate(data)
    except (OSError, yaml.YAMLError) as error:
        return [f"{path}: {error}"]
    except ValidationError as error:
        return [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()]
    unknown = [a for a in _aliases(tasks) if a not in gateway.aliases]
    if not tasks.tasks:
        return ["tasks: at least one task is needed"]
    return [f"roles: no deployment or alias named {a!r}" for a in unknown] or tasks


def _aliases(tasks: TaskFile) -> list[str]:
    pools = (tasks.roles.thinker, tasks.roles.worker, tasks.roles.verifier)
    return list(dict.fromkeys(alias for pool in pools for alias in pool))


def _line(score: Score) -> str:
    return (f"fitness {score.fitness:.3f}, pass rate {score.pass_rate:.2f}, "
            f"{score.calls:.2f} calls")


def run(args: argparse.Namespace, gateway: Gateway) -> int:
    tasks = _tasks(args.tasks, gateway)
    if isinstance(tasks, list):
        print(f"tako: invalid task file {args.tasks}:", file=sys.stderr)
        for problem in tasks:
            print(f"  {problem}", file=sys.stderr)
        return BAD_TASKS_EXIT
    providers: dict[str, LlmProvider] = {a: gateway.upstreams(a)[0][0] for a in _aliases(tasks)}
    embed: Embedder = embedder(args.embedder, args.embed_dim)
    config = TrainConfig(generations=args.generations, popsize=args.popsize,
                         sigma0=args.sigma0, hidden=args.hidden, seed=args.seed)

    def progress(generation: int, best: Score) -> None:
        print(f"generation {generation + 1}/{config.generations}: best {_line(best)}",
              flush=True)

    result = asyncio.run(_train(tasks, providers, embed, config, progress, gateway))
    result.head.save(args.out)
    print(f"wrote {args.out}: {result.head.theta.size} parameters over LLMs "
          f"{', '.join(result.head.llms)} x roles; learned router {_line(result.best)}; "
          f"rule router {_line(result.baseline)}")
    return 0


async def _train(tasks: TaskFile, providers: dict[str, LlmProvider], embed: Embedder,
                 config: TrainConfig, progress: Any, gateway: Gateway) -> Any:
    try:
        return await train(tasks, providers, embed, config, progress)
    finally:
        await gateway.aclose()
