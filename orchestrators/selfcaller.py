"""``selfcaller``: recursive self-refinement behind a confidence guard (Self-Refine, Madaan
et al. 2023; Sakana Fugu-style recursive self-calls).

Each attempt runs the inner orchestrator (``params.inner``: a profile ``{kind, params}``,
built through the orchestrator registry) and scores its answer with the verifier
(``params.verifier``, see ``orchestrators.verifiers``). Below ``threshold`` the answer and
the verifier's feedback go back to the inner orchestrator with a revision prompt, up to
``max_depth`` revisions; the best-scoring answer is returned (the latest on ties). An
answer that calls client-side tools goes back to the client unscored.

The models of the inner orchestrator are also offered a server-side ``self_call`` tool
(``single``'s model among its tools; any other kind's worker calls, never its control
messages): it asks a fresh run of the inner orchestrator a self-contained sub-question.
Self-calls nest at most ``max_self_call_depth`` levels (1), at most
``max_self_calls`` (3) happen per request, and none starts once the run has spent
``max_self_call_cost_usd`` (when set); every call still passes ``ctx.provider`` and so
the per-call budget check. Set ``self_call: false`` to not offer the tool. With
``verify_self_calls: true`` each sub-answer is scored by the verifier too; one below
``threshold`` (or unreadable) reaches the model with its score and the feedback.

Params (``SelfCallerParams``): ``inner`` (required), ``verifier`` (required),
``threshold`` (0.7), ``max_depth`` (2), ``revision_prompt`` (str.format with {score},
{threshold}, {feedback}), the self-call settings above.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import Field

from tako.core.protocols import Orchestrator, RunContext, Tool, ToolLookup, Verifier
from tako.core.types import ChatRequest, ChatResponse, FunctionDef, ToolSpec
from tako.orchestrators.assembly import with_messages
from tako.orchestrators.calls import WORKER_TOOLS, assistant, user
from tako.orchestrators.flow import Answer, Orchestration, Sink, record
from tako.orchestrators.params import Params, prompt_template
from tako.orchestrators.registry import NestedProfile, Profile, register
from tako.orchestrators.single import SingleParams
from tako.orchestrators.verifiers import VerifierSpec, build_verifier

SELF_CALL = "self_call"
SELF_CALLS_USED = "selfcaller.self_calls"

REVISION_PROMPT = (
    "A reviewer scored your previous answer {score:.2f} (it needs {threshold:.2f}). "
    "Feedback: {feedback}\nRevise it: fix every problem and reply with the complete "
    "improved answer only."
)


class WithTool:
    """A ToolLookup that adds one tool to another lookup."""

    def __init__(self, base: ToolLookup, tool: Tool) -> None:
        self.base = base
        self.tool = tool

    def get(self, name: str) -> Tool | None:
        return self.tool if name == self.tool.name else self.base.get(name)

    def specs(self, names: list[str] | None = None) -> list[ToolSpec]:
        others = self.base.specs(None if names is None else
                                 [n for n in names if n != self.tool.name])
        if names is None or self.tool.name in names:
            return [*others, self.tool.spec]
        return others


class SelfCallTool:
    name = SELF_CALL
    spec = ToolSpec(function=FunctionDef(
        name=SELF_CALL,
        description=("Ask yourself a self-contained sub-question and get the answer of a "
                     "fresh run. Use it for parts of the task that can be solved on their "
                     "own."),
        parameters={"type": "object", "properties": {"question": {"type": "string"}},
                    "required": ["question"]},
    ))

    def __init__(self, inner: Orchestrator, req: ChatRequest, base_depth: int,
                 max_calls: int, max_depth: int, max_cost_usd: float | None,
                 check: SubAnswerCheck | None = None) -> None:
        self.inner = inner
        self.req = req
        self.base_depth = base_depth
        self.max_calls = max_calls
        self.max_depth = max_depth
        self.max_cost_usd = max_cost_usd
        self.check = check

    async def invoke(self, arguments: dict[str, Any], ctx: RunContext) -> str:
        question = arguments.get("question")
        if not isinstance(question, str) or not question.strip():
            return "error: self_call needs a non-empty 'question' string"
        used = int(ctx.state.get(SELF_CALLS_USED, 0))
        if used >= self.max_calls:
            return (f"error: self_call limit reached ({self.max_calls} per request); "
                    "answer with what you have")
        level = ctx.depth - self.base_depth
        if level >= self.max_depth:
            return (f"error: self_call depth limit reached ({self.max_depth}); answer this "
                    "sub-question yourself")
        if self.max_cost_usd is not None and ctx.usage.cost_usd >= self.max_cost_usd:
            return "error: self_call cost limit reached; answer with what you have"
        ctx.state[SELF_CALLS_USED] = used + 1
        sub_ctx = dataclasses.replace(ctx, depth=ctx.depth + 1)
        sub_req = with_messages(self.req, [user(question)], tools=None, tool_choice=None,
                                stream=False, response_format=None)
        response = await self.inner.complete(sub_ctx, sub_req)
        answer = response.content or ""
        if self.check is None:
            record(ctx, type="self_call", depth=level + 1, question=question, answer=answer)
            return answer
        score = await self.check.verifier.score(sub_req, answer)
        shown = score.value if score.judged else None
        record(ctx, type="self_call", depth=level + 1, question=question, answer=answer,
               score=shown, feedback=score.feedback)
        if score.judged and score.value >= self.check.threshold:
            return answer
        return (f"{answer}\n\n[a reviewer scored this sub-answer "
                f"{'no score' if shown is None else f'{shown:.2f}'} (it needs "
                f"{self.check.threshold:.2f}): {score.feedback or 'no feedback'}; do not "
                "rely on it unchecked]")


@dataclass(frozen=True, slots=True)
class SubAnswerCheck:
    """Self-call answers scored by the run's verifier; one below ``threshold`` reaches the
    model with its score and the feedback."""

    verifier: Verifier
    threshold: float


class SelfCallerParams(Params):
    inner: NestedProfile
    verifier: VerifierSpec
    threshold: float = 0.7
    max_depth: int = Field(default=2, ge=0)
    self_call: bool = True
    max_self_calls: int = Field(default=3, ge=0)
    max_self_call_depth: int = Field(default=1, ge=0)
    max_self_call_cost_usd: float | None = None
    verify_self_calls: bool = False
    revision_prompt: Annotated[str, prompt_template("score", "threshold", "feedback")] = (
        REVISION_PROMPT)


@register("selfcaller", SelfCallerParams)
class SelfCaller(Orchestration):
    kind = "selfcaller"

    def __init__(self, params: SelfCallerParams) -> None:
        inner = params.inner
        self.offers_self_call = params.self_call
        if params.self_call and isinstance(inner.params, SingleParams):
            tools = [*inner.params.tools, SELF_CALL]
            inner = Profile(inner.kind, inner.params.model_copy(update={"tools": tools}))
        self.inner = inner.build()
        self.verifier_spec = params.verifier
        self.threshold = params.threshold
        self.max_depth = params.max_depth
        self.max_self_calls = params.max_self_calls
        self.max_self_call_depth = params.max_self_call_depth
        self.max_self_call_cost_usd = params.max_self_call_cost_usd
        self.verify_self_calls = params.verify_self_calls
        self.revision_prompt = params.revision_prompt

    async def run(self, ctx: RunContext, req: ChatRequest, sink: Sink) -> Answer:
        verifier = build_verifier(self.verifier_spec, ctx)
        run_ctx = ctx
        if self.offers_self_call:
            check = (SubAnswerCheck(verifier, self.threshold) if self.verify_self_calls
                     else None)
            tool = SelfCallTool(self.inner, req, ctx.depth, self.max_self_calls,
                                self.max_self_call_depth, self.max_self_call_cost_usd, check)
            # single offers it through its tools; every other kind to its worker calls
            run_ctx = dataclasses.replace(ctx, tools=WithTool(ctx.tools, tool),
                                          state={**ctx.state, WORKER_TOOLS: [SELF_CALL]})
        messages = list(req.messages)
        best: tuple[float, str, str | None] | None = None
        for depth in range(self.max_depth + 1):
            response = await self._attempt(run_ctx, with_messages(req, messages), sink)
            if response.tool_calls:
                return Answer(response.content, response.tool_calls, "tool_calls",
                              deployment=response.provider_id)
            text = response.content or ""
            score = await verifier.score(req, text)
            shown = score.value if score.judged else None  # None: no score
            await sink.event("recursion", depth=depth, confidence=shown)
            record(ctx, type="attempt", depth=depth, answer=text, score=shown,
                   feedback=score.feedback)
            if best is None or score.value >= best[0]:
                best = (score.value, text, response.provider_id)
            if score.value >= self.threshold or depth == self.max_depth:
                break
            messages = [*messages, assistant(text), user(self.revision_prompt.format(
                score=score.value, threshold=self.threshold,
                feedback=score.feedback or "(none)"))]
        assert best is not None
        return Answer(best[1], deployment=best[2])

    async def _attempt(self, ctx: RunContext, req: ChatRequest, sink: Sink) -> ChatResponse:
        """One inner run, never streamed: the same upstream calls (and so the same usage)
        with events on or off; its events (tool calls, steps) pass through to the
        client."""
        run = getattr(self.inner, "run", None)
        if run is None or not sink.events:
            return await self.inner.complete(ctx, req)
        answer: Answer = await run(ctx, req, sink.quiet())
        return ChatResponse(id="inner", model=req.model, created=0, content=answer.content,
                            tool_calls=answer.tool_calls, finish_reason=answer.finish_reason,
                            provider_id=answer.deployment or ctx.answered_by)
