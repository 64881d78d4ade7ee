"""``conductor`` (Nielsen et al., "Learning to Orchestrate Agents in Natural Language with
the Conductor", arXiv:2512.04388).

A coordinator model writes a workflow for the request (as a JSON-schema
``response_format`` where its deployment takes one): a JSON list of steps
``{"worker": alias, "subtask": str, "access": "all" | [earlier step indices] | []}``, or
the paper's three lists ``{"model_ids": [...], "subtasks": [...], "access_lists": [...]}``.
Each worker is prompted with its subtask; its context holds only the steps its access
list names (as earlier conversation turns: that step's subtask, then its output), never
the client's conversation unless the coordinator wrote it into the subtask. Steps run as
soon as the steps they can see are done; at most ``max_fanout`` upstream calls run at once
across every nesting level of the run; the answer is the last step's output (streamed to
the client as it is produced).

A worker named ``"self"`` runs a nested conductor on its subtask (depth + 1). At
``max_depth`` nesting levels ``"self"`` is no longer offered and, if named anyway, falls
back to a plain call of the coordinator deployment on the subtask.

A workflow that does not parse or validate (not JSON, empty, unknown worker, access to a
later or missing step, too many steps) is sent back once with the validation error; a
second bad workflow degrades to one plain call of the coordinator on the client's
conversation (traced as ``workflow_degraded``), or with ``degrade: false`` ends the run
with UpstreamError code ``malformed_workflow``.

Params (``ConductorParams``): ``coordinator`` (alias), ``workers`` (list of aliases, or a
mapping alias -> description shown to the coordinator), ``max_fanout`` (4), ``max_depth``
(1), ``max_steps`` (8), ``degrade`` (true).
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
from tako.orchestrators.calls import (
    Reply,
    ask,
    ask_streaming,
    assistant,
    control,
    system,
    user,
)
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
        data: Any = step_list(extract_json(text))
    except ValueError as exc:
        raise WorkflowError("the reply contains no JSON workflow") from exc
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


_MODEL_KEYS = ("model_ids", "model_id", "models", "workers")
_SUBTASK_KEYS = ("subtasks", "subtask")
_ACCESS_KEYS = ("access_lists", "access_list", "access")


def step_list(data: Any) -> Any:
    """The workflow's steps as a list of step objects, from that list, ``{"steps": [...]}``
    (or ``workflow``), or the paper's three parallel lists (model ids, subtasks, access
    lists) as an object or a list of three lists. Anything else is returned as it is."""
    if isinstance(data, dict):
        if "steps" in data or "workflow" in data:
            return data.get("steps", data.get("workflow"))
        return _three_lists([_first(data, _MODEL_KEYS), _first(data, _SUBTASK_KEYS),
                             _first(data, _ACCESS_KEYS)]) or data
    if (isinstance(data, list) and len(data) == 3
            and all(isinstance(part, list) for part in data)):
        return _three_lists(data) or data
    return data


def _first(data: dict[str, Any], keys: tuple[str, ...]) -> Any:
    return next((data[k] for k in keys if k in data), None)


def _three_lists(parts: list[Any]) -> list[dict[str, Any]] | None:
    models, subtasks, access = parts
    if not (isinstance(models, list) and isinstance(subtasks, list)
            and isinstance(access, list)) or not len(models) == len(subtasks) == len(access):
        return None
    return [{"worker": m, "subtask": s, "access": a}
            for m, s, a in zip(models, subtasks, access, strict=True)]


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


def workflow_schema(workers: list[str]) -> dict[str, Any]:
    """The JSON schema of a workflow over ``workers`` (structured outputs)."""
    step = {"type": "object",
            "properties": {"worker": {"type": "string", "enum": workers},
                           "subtask": {"type": "string"},
                           "access": {"anyOf": [{"type": "string", "enum": ["all"]},
                                                {"type": "array",
                                                 "items": {"type": "integer"}}]}},
            "required": ["worker", "subtask", "access"]}
    return {"type": "object", "properties": {"steps": {"type": "array", "items": step}},
            "required": ["steps"]}


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
    degrade: bool = True


@register("conductor", ConductorParams)
class Conductor(Orchestration):
    kind = "conductor"

    def __init__(self, params: ConductorParams) -> None:
        self.coordinator = params.coordinator
        self.workers = params.workers
        self.max_fanout = params.max_fanout
        self.max_depth = params.max_depth
        self.max_steps = params.max_steps
        self.degrade = params.degrade
        self.plan_settings = control("workflow", workflow_schema(
            [*self.workers, SELF]), max_tokens=2048)

    async def run(self, ctx: RunContext, req: ChatRequest, sink: Sink) -> Answer:
        run = _Run(ctx, asyncio.Semaphore(self.max_fanout))
        reply = await self._conduct(run, req, sink, level=0)
        return Answer(reply.text, streamed=sink.deltas, deployment=reply.deployment)

    async def _plan(self, run: _Run, req: ChatRequest, level: int) -> list[Step] | None:
        """The coordinator's workflow, asked again once with the error; None when the
        second one is bad too and the run degrades."""
        allow_self = level < self.max_depth
        messages = [system(coordinator_prompt(self.workers, allow_self, self.max_steps)),
                    *req.messages]
        reply = await self._ask_coordinator(run, req, messages)
        try:
            return parse_workflow(reply, set(self.workers), True, self.max_steps)
        except WorkflowError as first:
            record(run.ctx, type="workflow_rejected", level=level, error=str(first))
            messages = [*messages, assistant(reply), user(
                f"That workflow is invalid: {first}. Reply with the corrected JSON workflow "
                "only.")]
            reply = await self._ask_coordinator(run, req, messages)
            try:
                return parse_workflow(reply, set(self.workers), True, self.max_steps)
            except WorkflowError as second:
                return self._malformed(run.ctx, level, first, second)

    async def _ask_coordinator(self, run: _Run, req: ChatRequest,
                               messages: list[Message]) -> str:
        async with run.fanout:
            return (await ask(run.ctx, self.coordinator, req, messages,
                              self.plan_settings)).text

    def _malformed(self, ctx: RunContext, level: int, first: WorkflowError,
                   second: WorkflowError) -> None:
        if self.degrade:
            record(ctx, type="workflow_degraded", level=level, error=str(second))
            return None
        raise UpstreamError(
            f"conductor: coordinator {self.coordinator!r} wrote an invalid workflow "
            f"twice: {second}", code="malformed_workflow",
            details={"coordinator": self.coordinator, "first_error": str(first),
                     "second_error": str(second)},
        ) from second

    async def _conduct(self, run: _Run, req: ChatRequest, sink: Sink, level: int) -> Reply:
        steps = await self._plan(run, req, level)
        if steps is None:  # degraded: the coordinator answers the conversation itself
            async with run.fanout:
                return await ask_streaming(run.ctx, self.coordinator, req,
                                           list(req.messages), sink)
        record(run.ctx, type="workflow", level=level,
               steps=[{"worker": s.worker, "subtask": s.subtask, "access": list(s.access)}
                      for s in steps])
        outputs: list[Reply | None] = [None] * len(steps)
        done = [asyncio.Event() for _ in steps]
        last = len(steps) - 1

        async def run_step(i: int) -> None:
            step = steps[i]
            for j in step.access:
                await done[j].wait()
            await sink.event("step_start", step=i, worker=step.worker, level=level)
            context: list[Message] = []
            for j in step.access:
                earlier = outputs[j]
                context += [user(steps[j].subtask), assistant(earlier.text if earlier else "")]
            step_sink = sink.final() if i == last else sink.quiet()
            reply = outputs[i] = await self._work(run, req, step, context, step_sink, level)
            record(run.ctx, type="step", level=level, step=i, worker=step.worker,
                   access=list(step.access), output=reply.text, deployment=reply.deployment)
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

    async def _work(self, run: _Run, req: ChatRequest, step: Step,
                    context: list[Message], sink: Sink, level: int) -> Reply:
        """One step: an upstream call holding one of the run's fanout slots, or a nested
        conductor (which holds none itself: only its calls do, so nesting cannot
        deadlock)."""
        messages = [*context, user(step.subtask)]
        if step.worker == SELF and level < self.max_depth:
            await sink.event("recursion", depth=level + 1, worker=SELF)
            nested = _Run(dataclasses.replace(run.ctx, depth=run.ctx.depth + 1), run.fanout)
            nested_req = req.model_copy(update={"messages": messages})
            return await self._conduct(nested, nested_req, sink, level + 1)
        worker = self.coordinator if step.worker == SELF else step.worker
        async with run.fanout:
            return await ask_streaming(run.ctx, worker, req, messages, sink)


@dataclass(frozen=True, slots=True)
class _Run:
    """One conductor run: its context and the fanout bound every level shares."""

    ctx: RunContext
    fanout: asyncio.Semaphore


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first failure inside a (possibly nested) exception group."""
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error
