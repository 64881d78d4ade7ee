"""``abmcts``: Adaptive Branching Monte Carlo Tree Search over candidate answers (Inoue et
al., "Wider or Deeper? Scaling LLM Inference-Time Compute with Adaptive Branching Tree
Search", arXiv:2503.04412), using Sakana's ``treequest`` implementation (``ABMCTSA``:
node aggregation, Thompson sampling; multi-LLM action selection by a bandit over the
actions' rewards).

Each deployment in ``workers`` is an action. Expanding the root is a fresh answer to the
client's conversation; expanding a node is a refinement of that node's answer, given its
score and the verifier's feedback. Every answer is scored in [0, 1] by ``verifier``
(see ``orchestrators.verifiers``). Each round asks treequest for up to ``batch_size``
(at most 5) expansions and runs them concurrently.

Stops when ``max_calls`` answers were generated (judge calls come on top), when the next
expansion might take the run past ``max_cost_usd``, or when an answer scores at least
``min_confidence``; returns the best-scoring answer. ``max_cost_usd`` is a hard cap over
all calls, judge included: before each round the worst case of one expansion (the
dearest worker with the longest prompt so far and ``answer_max_tokens`` of output, plus
its judgement) is reserved as many times as the remaining budget allows, and the round
shrinks to that many expansions. ``seed`` makes the search
reproducible (the sampling uses its own random stream, never the process-wide one).
With a trace, every node is listed: node, parent, action, score, depth.

``algorithm`` picks treequest's ``ABMCTSA`` ("a", node aggregation with conjugate priors:
``dist_type`` gaussian or beta, ``prior`` its parameters: m, kappa, nu, tau_square or a,
b) or ``ABMCTSM`` ("m", mixed model, which needs ``treequest[abmcts-m]``: pymc, jax);
both take ``reward_average_priors`` (one value, or one per worker) and
``model_selection_strategy``.

Params (``ABMCTSParams``): ``workers`` (aliases), ``verifier`` (required), ``max_calls``
(16), ``max_cost_usd``, ``min_confidence``, ``batch_size`` (3), ``seed``, ``refine_prompt``
(str.format with {score} and {feedback}), ``answer_max_tokens`` (1024, each answer's
output limit), the search settings above.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field, model_validator
from treequest import ABMCTSA, ABMCTSM
from treequest.algos.ab_mcts_a.prob_state import BetaPrior, GaussianPrior, PriorConfig

from tako.core.errors import ConfigError, QuotaExceeded, TakoError, UpstreamError
from tako.core.protocols import RunContext, Verifier
from tako.core.tokens import estimate_prompt_tokens
from tako.core.types import ChatRequest, Message
from tako.orchestrators.assembly import with_messages
from tako.orchestrators.calls import CallSettings, ask, assistant, user
from tako.orchestrators.flow import Answer, Orchestration, Sink, record
from tako.orchestrators.params import Alias, Params, prompt_template
from tako.orchestrators.registry import register
from tako.orchestrators.textparse import clamp
from tako.orchestrators.verifiers import (
    VerifierSpec,
    build_verifier,
    verifier_cost_bound_usd,
)

MAX_BATCH = 5

REFINE_PROMPT = (
    "Your answer above was scored {score:.2f} out of 1 by a reviewer. Feedback: {feedback}\n"
    "Write an improved, complete answer that fixes these problems. Reply with the answer "
    "only."
)


@dataclass(slots=True)
class Candidate:
    text: str
    score: float
    feedback: str
    action: str
    deployment: str
    node: int = -1
    parent: int | None = None
    depth: int = 1
    judged: bool = True  # False: the verifier could not read a score (reward 0)


class PrivateRandom:
    """treequest samples from numpy's global random state; this keeps one run's stream
    apart from every other user of it (ask_batch is synchronous, so nothing interleaves)."""

    def __init__(self, seed: int | None) -> None:
        self.state = np.random.RandomState(seed).get_state()

    @contextmanager
    def active(self) -> Iterator[None]:
        saved = np.random.get_state()
        np.random.set_state(self.state)
        try:
            yield
        finally:
            self.state = np.random.get_state()
            np.random.set_state(saved)


class ABMCTSParams(Params):
    workers: list[Alias] = Field(min_length=1)
    verifier: VerifierSpec
    max_calls: int = Field(default=16, ge=1)
    max_cost_usd: float | None = None
    min_confidence: float | None = None
    batch_size: int = 3
    seed: int | None = None
    refine_prompt: Annotated[str, prompt_template("score", "feedback")] = REFINE_PROMPT
    answer_max_tokens: int = Field(default=1024, ge=1)
    algorithm: Literal["a", "m"] = "a"
    dist_type: Literal["gaussian", "beta"] = "gaussian"
    prior: dict[str, float] | None = None
    reward_average_priors: float | dict[Alias, float] | None = None
    model_selection_strategy: Literal["multiarm_bandit_thompson", "multiarm_bandit_ucb",
                                      "stack"] = "multiarm_bandit_thompson"

    @model_validator(mode="after")
    def _prior_fits_the_distribution(self) -> ABMCTSParams:
        if self.prior is not None:
            allowed = GaussianPrior if self.dist_type == "gaussian" else BetaPrior
            names = {f.name for f in dataclasses.fields(allowed)}
            unknown = set(self.prior) - names
            if unknown:
                raise ValueError(f"prior: {sorted(unknown)} are not parameters of the "
                                 f"{self.dist_type} prior ({', '.join(sorted(names))})")
        return self


def build_search(params: ABMCTSParams) -> Any:
    """The treequest algorithm the params ask for; ConfigError when AB-MCTS-M's optional
    dependencies are not installed."""
    if params.algorithm == "a":
        return ABMCTSA(dist_type=params.dist_type,
                       reward_average_priors=params.reward_average_priors,
                       prior_config=PriorConfig(dist_type=params.dist_type,
                                                prior=params.prior),
                       model_selection_strategy=params.model_selection_strategy)
    try:
        return ABMCTSM(reward_average_priors=params.reward_average_priors,
                       model_selection_strategy=params.model_selection_strategy,
                       max_process_workers=1)
    except ImportError as missing:
        raise ConfigError.at("algorithm", "AB-MCTS-M needs treequest's optional "
                             "dependencies: pip install 'treequest[abmcts-m]' "
                             f"({missing})") from None


@register("abmcts", ABMCTSParams)
class ABMCTS(Orchestration):
    kind = "abmcts"

    def __init__(self, params: ABMCTSParams) -> None:
        self.workers = list(dict.fromkeys(params.workers))
        self.verifier_spec = params.verifier
        self.max_calls = params.max_calls
        self.max_cost_usd = params.max_cost_usd
        self.min_confidence = params.min_confidence
        self.batch_size = max(1, min(MAX_BATCH, params.batch_size))
        self.seed = params.seed
        self.refine_prompt = params.refine_prompt
        self.answer = CallSettings(max_tokens=params.answer_max_tokens)
        self.params = params
        build_search(params)  # a missing optional dependency is a config error at start

    async def run(self, ctx: RunContext, req: ChatRequest, sink: Sink) -> Answer:
        verifier = build_verifier(self.verifier_spec, ctx)
        algo = build_search(self.params)
        state = algo.init_tree()
        rng = PrivateRandom(self.seed)
        calls = 0
        rounds = 0
        best: Candidate | None = None
        failure: TakoError | None = None
        stop = "max_calls"
        widest: Candidate | None = None  # the longest text + feedback to refine yet
        while calls < self.max_calls:
            size = self._affordable(ctx, req, verifier, widest,
                                    min(self.batch_size, self.max_calls - calls))
            if size == 0:
                stop = "max_cost_usd"
                break
            with rng.active():
                state, trials = algo.ask_batch(state, size, self.workers)
            calls += len(trials)
            for trial in trials:
                parent = state.tree.get_node(trial.node_to_expand)
                await sink.event("step_start", step=rounds, action=trial.action,
                                 parent=None if parent.is_root() else parent.expand_idx)
            results = await asyncio.gather(
                *(self._expand(ctx, req, verifier, t.action,
                               None if t.parent_state is None else t.parent_state)
                  for t in trials),
                return_exceptions=True)
            for trial, result in zip(trials, results, strict=True):
                if isinstance(result, BaseException):
                    failure = _failed_expansion(ctx, trial, result)
                    continue
                size = state.tree.size
                with rng.active():
                    state = algo.tell(state, trial.trial_id, (result, result.score))
                if state.tree.size == size:
                    continue  # treequest did not take the result
                await _placed(ctx, sink, result, state.tree.get_nodes()[-1], trial, rounds)
                if best is None or result.score > best.score:
                    best = result
                if widest is None or _length(result) > _length(widest):
                    widest = result
            rounds += 1
            if (best is not None and self.min_confidence is not None
                    and best.score >= self.min_confidence):
                stop = "min_confidence"
                break
        if best is None:
            if failure is not None:
                raise failure
            raise UpstreamError("abmcts produced no candidate answer", code="no_candidate")
        record(ctx, type="abmcts", best=best.node, score=best.score, calls=calls,
               rounds=rounds, stop=stop)
        return Answer(best.text, deployment=best.deployment)

    def _affordable(self, ctx: RunContext, req: ChatRequest, verifier: Verifier,
                    widest: Candidate | None, wanted: int) -> int:
        """How many of ``wanted`` expansions fit in what is left of ``max_cost_usd``, each
        reserved at its worst case (refining the widest candidate yet)."""
        if self.max_cost_usd is None:
            return wanted
        prompt = estimate_prompt_tokens(with_messages(req, self._messages(req, widest)))
        output = self.answer.max_tokens or 0
        worst = max(ctx.provider(w).estimate_cost_usd(prompt, output) for w in self.workers)
        worst += verifier_cost_bound_usd(verifier, req, output)
        left = self.max_cost_usd - ctx.usage.cost_usd
        if worst <= 0:
            return wanted if left > 0 else 0
        return max(0, min(wanted, int(left / worst + 1e-9)))

    def _messages(self, req: ChatRequest, parent: Candidate | None) -> list[Message]:
        messages: list[Message] = list(req.messages)
        if parent is not None:
            messages += [assistant(parent.text), user(self.refine_prompt.format(
                score=parent.score, feedback=parent.feedback or "(none)"))]
        return messages

    async def _expand(self, ctx: RunContext, req: ChatRequest, verifier: Verifier,
                      action: str, parent: Candidate | None) -> Candidate:
        reply = await ask(ctx, action, req, self._messages(req, parent), self.answer)
        score = await verifier.score(req, reply.text)
        return Candidate(reply.text, clamp(score.value), score.feedback, action,
                         reply.deployment, judged=score.judged)


def _length(candidate: Candidate) -> int:
    return len(candidate.text) + len(candidate.feedback)


def _failed_expansion(ctx: RunContext, trial: Any, error: BaseException) -> TakoError:
    """A generation that failed: recorded, and the run goes on, unless the budget is
    spent or it is not a gateway error."""
    if isinstance(error, QuotaExceeded) or not isinstance(error, TakoError):
        raise error  # the budget is spent (or a bug): stop the whole run
    record(ctx, type="failed_expansion", action=trial.action, parent=trial.node_to_expand,
           error=error.message)
    return error


async def _placed(ctx: RunContext, sink: Sink, result: Candidate, node: Any, trial: Any,
                  rounds: int) -> None:
    """The candidate takes its place in the tree: noted in the trace and the events."""
    result.node = node.expand_idx
    result.parent = None if trial.node_to_expand < 0 else trial.node_to_expand
    result.depth = node.depth
    shown = result.score if result.judged else None  # None: no score
    record(ctx, type="node", node=result.node, parent=result.parent, action=result.action,
           score=shown, depth=result.depth)
    await sink.event("verifier_score", step=rounds, branch=result.node, parent=result.parent,
                     action=result.action, score=shown)
