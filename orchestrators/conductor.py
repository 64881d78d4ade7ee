"""``conductor`` (Nielsen et al., "Learning to Orchestrate Agents in Natural Language with
the Conductor", arXiv:2512.04388).

A coordinator model writes a workflow for the request: a JSON list of steps
``{"worker": alias, "subtask": str, "access": "all" | [earlier step indices] | []}``.
Each worker is prompted with its subtask; its context holds only the steps its access
list names (as earlier conversation turns: that step's subtask, then its output), never
the client's conversation unless the coordinator wrote it into the subtask. Steps run as
soon as the steps they can see are done, up to ``max_fanout`` at once; the answer is the
last step's output (streamed to the client as it is produced).

A worker named ``"self"`` runs a nested conductor on its subtask (depth + 1). At
``max_depth`` nesting levels ``"self"`` is no longer offered and, if named anyway, falls
back to a plain call of the coordinator deployment on the subtask.

A workflow that does not parse or validate (not JSON, empty, unknown worker, access to a
later or missing step, too many steps) is sent back once with the validation error; a
second bad workflow ends the run with UpstreamError code ``malformed_workflow``.

Params (``ConductorParams``): ``coordinator`` (alias), ``workers`` (list of aliases, or a
mapping alias -> description shown to the coordinator), ``max_fanout`` (4), ``max_depth``
(1), ``max_steps`` (8).
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import Field, PlainValidator, ValidationInfo

from tako.core.errors import UpstreamError
from tako.core.protocols import RunContext
from tako.core.types import ChatRequest, Message
from tako.orchestrators.calls import Reply, ask, ask_streaming, assistant, system, user
from tako.orchestrators.flow import Answer, Orchestration, Sink, record
from tako.orchestrators.params import Alias, Params, validate_under
from tako.orchestrators.registry import register
from tako.orchestrators.textparse import extract_json

SELF = "self"


@dataclass(frozen=True, slots=True)
class Step:
    worker: str
    subtask: str
    access: tuple[int, ...]


class WorkflowError(ValueError):
    pass


def parse_workflow(text: str, workers: set[str], allow_self: bool,
                   max_steps: int) -> list[Step]:
    """Validate a coordinator's workflow; WorkflowError says what is wrong."""
    try:
        data: Any = extract_json(text)
    except ValueError as exc:
        raise WorkflowError("the reply contains no JSON workflow") from exc
    if isinstance(data, dict):
        data = data.get("steps", data.get("workflow"))
    if not isinstance(data, list) or not data:
        raise WorkflowError('the workflow must be a non-empty JSON list of steps '
                            '(or {"steps": [...]})')
    if len(data) > max_steps:
        raise WorkflowError(f"the workflow has {len(data)} steps; at most {max_steps} allowed")
    steps: list[Step] = []
    for i, raw in enumerate(data):
        if not isinstance(raw, dict):
            raise WorkflowError(f"step {i} is not an object")
        worker = raw.get("worker")
        if not isinstance(worker, str) or not (worker in workers or
                                               (worker == SELF and allow_self)):
            allowed = sorted(workers) + ([SELF] if allow_self else [])
            raise WorkflowError(f"step {i}: unknown worker {worker!r}; use one of {allowed}")
        subtask = raw.get("subtask")
        if not isinstance(subtask, str) or not subtask.strip():
            raise WorkflowError(f"step {i}: subtask must be a non-empty string")
        steps.append(Step(worker, subtask, _access(raw.get("access"), i)))
    return steps


def _access(value: Any, index: int) -> tuple[int, ...]:
    if value is None or value == "none" or value == []:
        return ()
    if value == "all":
        return tuple(range(index))
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool)
                                              for v in value):
        raise WorkflowError(f'step {index}: access must be "all", a list of step indices '
                            "or []")
    for v in value:
        if v < 0 or v >= index:
            raise WorkflowError(f"step {index}: access to step {v}, which is not an earlier "
                                "step (a step may only see steps before it)")
    return tuple(sorted(set(value)))


def coordinator_prompt(workers: dict[str, str], allow_self: bool, max_steps: int) -> str:
    lines = [f"- {alias}" + (f": {desc}" if desc else "") for alias, desc in workers.items()]
    if allow_self:
        lines.append(f"- {SELF}: you again, coordinating a nested workflow for the subtask")
    return (
        "You coordinate a team of language models. Write a workflow that solves the user's "
        "request. Reply with JSON only: a list of steps, each "
        '{"worker": <name>, "subtask": <instruction>, "access": "all" | [indices] | []}. '
        "A worker sees only its subtask and the outputs of the earlier steps listed in "
        "access (0-based), so write everything it needs into its subtask. Steps that do not "
        "depend on each other run in parallel. The last step's output is the final answer "
        f"given to the user. At most {max_steps} steps.\nWorkers:\n" + "\n".join(lines)
    )


def _workers(value: Any, info: ValidationInfo) -> dict[str, str]:
    """Workers as alias -> description, from a list of aliases or that mapping."""
    if isinstance(value, list):
        workers = dict.fromkeys(validate_under(list[Alias], value, info), "")
    elif isinstance(value, dict):
        described = validate_under(dict[Alias, str | None], value, info)
        workers = {alias: desc or "" for alias, desc in described.items()}
    else:
        raise ValueError("workers must be a list of aliases or a mapping alias -> description")
    if not workers:
        raise ValueError("conductor needs at least one worker")
    return workers


class ConductorParams(Params):
    coordinator: Alias
    workers: Annotated[dict[str, str], PlainValidator(_workers)]
    max_fanout: int = Field(default=4, ge=1)
    max_depth: int = Field(default=1, ge=0)
    max_steps: int = Field(default=8, ge=1)


@register("conductor", ConductorParams)
class Conductor(Orchestration):
    kind = "conductor"

    def __init__(self, params: ConductorParams) -> None:
        self.coordinator = params.coordinator
        self.workers = params.workers
        self.max_fanout = params.max_fanout
        self.max_depth = params.max_depth
        self.max_steps = params.max_steps

    async def run(self, ctx: RunContext, req: ChatRequest, sink: Sink) -> Answer:
        reply = await self._conduct(ctx, req, sink, level=0)
        return Answer(reply.text, streamed=sink.deltas, deployment=reply.deployment)

    async def _plan(self, ctx: RunContext, req: ChatRequest, level: int) -> list[Step]:
        allow_self = level < self.max_depth
        messages = [system(coordinator_prompt(self.workers, allow_self, self.max_steps)),
                    *req.messages]
        reply = (await ask(ctx, self.coordinator, req, messages)).text
        try:
            return parse_workflow(reply, set(self.workers), True, self.max_steps)
        except WorkflowError as first:
            record(ctx, type="workflow_rejected", level=level, error=str(first))
            messages = [*messages, assistant(reply), user(
                f"That workflow is invalid: {first}. Reply with the corrected JSON workflow "
                "only.")]
            reply = (await ask(ctx, self.coordinator, req, messages)).text
            try:
                return parse_workflow(reply, set(self.workers), True, self.max_steps)
            except WorkflowError as second:
                raise UpstreamError(
                    f"conductor: coordinator {self.coordinator!r} wrote an invalid workflow "
                    f"twice: {second}", code="malformed_workflow",
                    details={"coordinator": self.coordinator, "first_error": str(first),
                             "second_error": str(second)},
                ) from second

    async def _conduct(self, ctx: RunContext, req: ChatRequest, sink: Sink,
                       level: int) -> Reply:
        steps = await self._plan(ctx, req, level)
        record(ctx, type="workflow", level=level,
               steps=[{"worker": s.worker, "subtask": s.subtask, "access": list(s.access)}
                      for s in steps])
        outputs: list[Reply | None] = [None] * len(steps)
        done = [asyncio.Event() for _ in steps]
        fanout = asyncio.Semaphore(self.max_fanout)
        last = len(steps) - 1

        async def run_step(i: int) -> None:
            step = steps[i]
            for j in step.access:
                await done[j].wait()
            async with fanout:
                await sink.event("step_start", step=i, worker=step.worker, level=level)
                context: list[Message] = []
                for j in step.access:
                    earlier = outputs[j]
                    context += [user(steps[j].subtask),
                                assistant(earlier.text if earlier else "")]
                step_sink = sink.final() if i == last else sink.quiet()
                reply = outputs[i] = await self._work(ctx, req, step, context, step_sink,
                                                      level)
                record(ctx, type="step", level=level, step=i, worker=step.worker,
                       access=list(step.access), output=reply.text,
                       deployment=reply.deployment)
            done[i].set()

        try:
            async with asyncio.TaskGroup() as group:
                for i in range(len(steps)):
                    group.create_task(run_step(i))
        except BaseExceptionGroup as failed:
            raise first_error(failed) from None
        answer = outputs[last]
        assert answer is not None  # every step ran, or the group raised
        return answer

    async def _work(self, ctx: RunContext, req: ChatRequest, step: Step,
                    context: list[Message], sink: Sink, level: int) -> Reply:
        messages = [*context, user(step.subtask)]
        if step.worker != SELF:
            return await ask_streaming(ctx, step.worker, req, messages, sink)
        if level >= self.max_depth:
            return await ask_streaming(ctx, self.coordinator, req, messages, sink)
        await sink.event("recursion", depth=level + 1, worker=SELF)
        nested_ctx = dataclasses.replace(ctx, depth=ctx.depth + 1)
        nested_req = req.model_copy(update={"messages": messages})
        return await self._conduct(nested_ctx, nested_req, sink, level + 1)


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first failure inside a (possibly nested) exception group."""
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error
