"""Verifiers and confidence guards: score an answer in [0, 1] with feedback.

Kinds (a profile names one in its ``verifier`` param):

- ``{"kind": "rules", "must": [regex], "must_not": [regex], "json_schema": {...},
  "min_chars": n, "max_chars": n}`` — the score is the fraction of checks passed; the
  feedback names each failed check. With no checks configured every answer scores 1.
- ``{"kind": "llm", "deployment": alias, "rubric": str, "check_every": chars,
  "flag_below": 0.3}`` — a judge model asked for a score; its reply is read leniently
  ("0.8", "Score: 8/10", "80%", ``{"score": 0.8}``) and clamped; an unreadable reply scores
  0 with that as feedback. Every judge call goes through ``ctx.provider`` (the budget).
- ``{"kind": "all", "of": [spec, ...], "mode": "min" | "mean"}`` (or a plain list) —
  combined verifiers.

The specs parse into ``RulesSpec``, ``LlmJudgeSpec`` and ``AllOfSpec`` (``VerifierSpec`` in
a params model), so a bad one is a config problem when the profile is built.

Each offers ``evaluate_streaming(req)``: an evaluation fed the answer as it streams,
whose ``feed`` returns a Score as soon as the answer can be flagged early (a must-not
pattern or the length bound for rules; a judged prefix scoring below ``flag_below`` for the
judge when ``check_every`` is set), and whose ``result()`` is the score so far.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import jsonschema
from pydantic import (
    AfterValidator,
    Field,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from tako.core.errors import ConfigError
from tako.core.protocols import RunContext, Score, StreamEvaluation, Verifier
from tako.core.types import ChatRequest
from tako.orchestrators.calls import ask, system, user
from tako.orchestrators.params import (
    Alias,
    KnownNames,
    Params,
    invalid,
    validate,
    validate_under,
)
from tako.orchestrators.textparse import extract_json, parse_score


class RuleVerifier:
    def __init__(
        self,
        must: Sequence[str] = (),
        must_not: Sequence[str] = (),
        json_schema: dict[str, Any] | None = None,
        min_chars: int | None = None,
        max_chars: int | None = None,
    ) -> None:
        self.must = [re.compile(p, re.IGNORECASE | re.DOTALL) for p in must]
        self.must_not = [re.compile(p, re.IGNORECASE | re.DOTALL) for p in must_not]
        self.json_schema = json_schema
        problem = schema_problem(json_schema)
        if problem:
            raise ConfigError.at("json_schema", problem)
        self.min_chars = min_chars
        self.max_chars = max_chars

    def check(self, answer: str) -> Score:
        failures: list[str] = []
        total = 0
        for pattern in self.must:
            total += 1
            if not pattern.search(answer):
                failures.append(f"missing required pattern /{pattern.pattern}/")
        for pattern in self.must_not:
            total += 1
            if pattern.search(answer):
                failures.append(f"contains forbidden pattern /{pattern.pattern}/")
        if self.json_schema is not None:
            total += 1
            failure = self._schema_failure(answer)
            if failure:
                failures.append(failure)
        if self.min_chars is not None:
            total += 1
            if len(answer) < self.min_chars:
                failures.append(f"shorter than {self.min_chars} characters")
        if self.max_chars is not None:
            total += 1
            if len(answer) > self.max_chars:
                failures.append(f"longer than {self.max_chars} characters")
        if total == 0:
            return Score(1.0, "")
        return Score((total - len(failures)) / total, "; ".join(failures))

    def _schema_failure(self, answer: str) -> str | None:
        try:
            document = json.loads(answer)
        except ValueError:
            try:
                document = extract_json(answer)
            except ValueError:
                return "not valid JSON"
        try:
            jsonschema.validate(document, self.json_schema or {})
        except jsonschema.ValidationError as exc:
            return f"JSON does not match the schema: {exc.message}"
        return None

    async def score(self, req: ChatRequest, answer: str) -> Score:
        return self.check(answer)

    def early_flag(self, text: str) -> Score | None:
        for pattern in self.must_not:
            if pattern.search(text):
                return Score(0.0, f"contains forbidden pattern /{pattern.pattern}/")
        if self.max_chars is not None and len(text) > self.max_chars:
            return Score(0.0, f"longer than {self.max_chars} characters")
        return None

    def evaluate_streaming(self, req: ChatRequest) -> StreamEvaluation:
        return _RuleEvaluation(self)


class _RuleEvaluation:
    def __init__(self, verifier: RuleVerifier) -> None:
        self.verifier = verifier
        self.text = ""

    def feed(self, text: str) -> Score | None:
        self.text += text
        return self.verifier.early_flag(self.text)

    def result(self) -> Score:
        return self.verifier.check(self.text)


JUDGE_RUBRIC = (
    "You are a strict grader. Judge how correct, complete and well-supported the answer "
    "is for the user's request. Reply with JSON only: "
    '{"score": <number between 0 and 1>, "feedback": "<what is wrong or missing>"}.'
)


class LlmJudge:
    def __init__(self, ctx: RunContext, deployment: str, rubric: str | None = None,
                 check_every: int = 0, flag_below: float = 0.3) -> None:
        self.ctx = ctx
        self.deployment = deployment
        self.rubric = rubric or JUDGE_RUBRIC
        self.check_every = check_every
        self.flag_below = flag_below

    async def score(self, req: ChatRequest, answer: str) -> Score:
        question = _conversation_text(req)
        prompt = f"Request:\n{question}\n\nAnswer to grade:\n{answer}"
        reply = (await ask(self.ctx, self.deployment, req,
                           [system(self.rubric), user(prompt)])).text
        return judge_reply_score(reply)

    def evaluate_streaming(self, req: ChatRequest) -> StreamEvaluation:
        return _JudgeEvaluation(self, req)


def judge_reply_score(reply: str) -> Score:
    value = parse_score(reply)
    if value is None:
        return Score(0.0, f"the judge's reply could not be read as a score: {reply[:200]!r}")
    feedback = reply.strip()
    try:
        data = extract_json(reply)
        if isinstance(data, dict) and isinstance(data.get("feedback"), str):
            feedback = data["feedback"]
    except ValueError:
        pass
    return Score(value, feedback)


class _JudgeEvaluation:
    """Judges prefixes in the background every ``check_every`` characters."""

    def __init__(self, judge: LlmJudge, req: ChatRequest) -> None:
        self.judge = judge
        self.req = req
        self.text = ""
        self.checked = 0
        self.task: asyncio.Task[Score] | None = None
        self.latest: Score | None = None

    def feed(self, text: str) -> Score | None:
        self.text += text
        if self.task is not None and self.task.done():
            if not self.task.cancelled() and self.task.exception() is None:
                self.latest = self.task.result()
            self.task = None
        every = self.judge.check_every
        if every and self.task is None and len(self.text) - self.checked >= every:
            self.checked = len(self.text)
            self.task = asyncio.get_running_loop().create_task(
                self.judge.score(self.req, self.text))
        if self.latest is not None and self.latest.value < self.judge.flag_below:
            return self.latest
        return None

    def result(self) -> Score:
        return self.latest or Score(0.0, "not judged yet")

    async def final(self) -> Score:
        """The judge's score of everything fed (one more judge call)."""
        if self.task is not None:
            self.task.cancel()
        self.latest = await self.judge.score(self.req, self.text)
        return self.latest


class AllOf:
    def __init__(self, verifiers: Sequence[Verifier], mode: str = "min") -> None:
        if mode not in ("min", "mean"):
            raise ConfigError.at("mode", f"must be min or mean, not {mode!r}")
        self.verifiers = list(verifiers)
        self.mode = mode

    def combine(self, scores: Sequence[Score]) -> Score:
        if not scores:
            return Score(1.0, "")
        values = [s.value for s in scores]
        value = min(values) if self.mode == "min" else sum(values) / len(values)
        return Score(value, "; ".join(s.feedback for s in scores if s.feedback))

    async def score(self, req: ChatRequest, answer: str) -> Score:
        scores = await asyncio.gather(*(v.score(req, answer) for v in self.verifiers))
        return self.combine(scores)

    def evaluate_streaming(self, req: ChatRequest) -> StreamEvaluation:
        parts = [v.evaluate_streaming(req) for v in self.verifiers
                 if hasattr(v, "evaluate_streaming")]
        return _AllEvaluation(self, parts)


class _AllEvaluation:
    def __init__(self, combined: AllOf, parts: list[StreamEvaluation]) -> None:
        self.combined = combined
        self.parts = parts

    def feed(self, text: str) -> Score | None:
        flags = [s for s in (p.feed(text) for p in self.parts) if s is not None]
        return self.combined.combine(flags) if flags else None

    def result(self) -> Score:
        return self.combined.combine([p.result() for p in self.parts])


def schema_problem(schema: dict[str, Any] | None) -> str | None:
    if schema is None:
        return None
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        return f"invalid JSON schema: {exc.message}"
    return None


def _compiles(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from None
    return pattern


Pattern = Annotated[str, AfterValidator(_compiles)]


class VerifierParams(Params):
    """A parsed verifier spec."""


class RulesSpec(VerifierParams):
    kind: Literal["rules"] = "rules"
    must: list[Pattern] = []
    must_not: list[Pattern] = []
    json_schema: dict[str, Any] | None = None
    min_chars: int | None = Field(default=None, ge=0)
    max_chars: int | None = Field(default=None, ge=0)

    @field_validator("json_schema")
    @classmethod
    def _valid_schema(cls, schema: dict[str, Any] | None) -> dict[str, Any] | None:
        problem = schema_problem(schema)
        if problem:
            raise ValueError(problem)
        return schema


class LlmJudgeSpec(VerifierParams):
    kind: Literal["llm"]
    deployment: Alias
    rubric: str | None = None
    check_every: int = Field(default=0, ge=0)
    flag_below: float = 0.3


def _verifier(value: Any, info: ValidationInfo) -> VerifierParams:
    if isinstance(value, VerifierParams):
        return value
    if isinstance(value, list):
        return AllOfSpec(kind="all", of=validate_under(list[VerifierSpec], value, info))
    if not isinstance(value, dict):
        raise ValueError("a verifier is a mapping {kind: rules | llm | all, ...} or a list "
                         "of them")
    kind = value.get("kind", "rules")
    spec = _SPECS.get(kind) if isinstance(kind, str) else None
    if spec is None:
        raise invalid(f"unknown verifier kind {kind!r}; known: {', '.join(_SPECS)}", kind,
                      "kind")
    return validate_under(spec, value, info)  # type: ignore[no-any-return]


VerifierSpec = Annotated[VerifierParams, PlainValidator(_verifier)]
"""A verifier spec in a params model: a mapping with a ``kind``, or a list (all of)."""


class AllOfSpec(VerifierParams):
    kind: Literal["all"]
    of: list[VerifierSpec] = []
    mode: Literal["min", "mean"] = "min"


_SPECS: dict[str, type[VerifierParams]] = {"rules": RulesSpec, "llm": LlmJudgeSpec,
                                           "all": AllOfSpec}


def parse_verifier(value: Any, names: KnownNames | None = None,
                   path: str = "verifier") -> VerifierParams:
    """A verifier spec parsed; ConfigError lists its problems below ``path``."""
    try:
        return validate(VerifierSpec, value, None if names is None  # type: ignore[no-any-return]
                        else names.context())
    except ValidationError as error:
        raise ConfigError.from_validation(error, path) from None


def build_verifier(spec: VerifierParams | dict[str, Any] | list[Any] | None,
                   ctx: RunContext) -> Verifier:
    """A verifier from its spec (parsed, or as a profile holds it); None: no checks."""
    if spec is None:
        return RuleVerifier()
    if not isinstance(spec, VerifierParams):
        spec = parse_verifier(spec)
    if isinstance(spec, RulesSpec):
        return RuleVerifier(spec.must, spec.must_not, spec.json_schema, spec.min_chars,
                            spec.max_chars)
    if isinstance(spec, LlmJudgeSpec):
        return LlmJudge(ctx, spec.deployment, spec.rubric, spec.check_every, spec.flag_below)
    assert isinstance(spec, AllOfSpec)
    return AllOf([build_verifier(s, ctx) for s in spec.of], spec.mode)


def _conversation_text(req: ChatRequest) -> str:
    lines = [f"{m.role}: {m.text()}" for m in req.messages if m.role in ("system", "user",
                                                                          "assistant")]
    return "\n".join(lines)
