"""Verifiers and confidence guards: score an answer in [0, 1] with feedback.

Kinds (a profile names one in its ``verifier`` param):

- ``{"kind": "rules", "must": [regex], "must_not": [regex], "json_schema": {...},
  "min_chars": n, "max_chars": n}`` — the score is the fraction of checks passed; the
  feedback names each failed check. With no checks configured every answer scores 1.
- ``{"kind": "llm", "deployment": alias, "rubric": str}`` — a judge model asked for
  ``{"score": 0..1, "feedback": ...}`` (as a JSON-schema ``response_format`` where the
  deployment takes one); the score is read only from that field or an explicit
  ``SCORE: x`` line. Anything else ("391", "Step 1: think") is no score: value 0,
  ``judged`` False, and the feedback says so. Every judge call goes through
  ``ctx.provider`` (the budget).
- ``{"kind": "all", "of": [spec, ...], "mode": "min" | "mean"}`` (or a plain list) —
  combined verifiers.

The specs parse into ``RulesSpec``, ``LlmJudgeSpec`` and ``AllOfSpec`` (``VerifierSpec`` in
a params model), so a bad one is a config problem when the profile is built.
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
from tako.core.protocols import RunContext, Score, Verifier
from tako.core.tokens import estimate_prompt_tokens
from tako.core.types import ChatRequest, Message
from tako.orchestrators.assembly import with_messages
from tako.orchestrators.calls import ask, control, system, user
from tako.orchestrators.params import (
    Alias,
    KnownNames,
    Params,
    invalid,
    validate,
    validate_under,
)
from tako.orchestrators.textparse import extract_json, json_object, parse_score


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

    def cost_bound_usd(self, req: ChatRequest, answer_tokens: int) -> float:
        return 0.0  # no upstream call


JUDGE_RUBRIC = (
    "You are a strict grader. Judge how correct, complete and well-supported the answer "
    "is for the user's request. Reply with JSON only: "
    '{"score": <number between 0 and 1>, "feedback": "<what is wrong or missing>"} '
    "(or, if you cannot write JSON, a line SCORE: <number between 0 and 1> and then the "
    "feedback)."
)


JUDGEMENT_SCHEMA = {
    "type": "object",
    "properties": {"score": {"type": "number", "minimum": 0, "maximum": 1},
                   "feedback": {"type": "string"}},
    "required": ["score", "feedback"],
}
JUDGEMENT = control("judgement", JUDGEMENT_SCHEMA, max_tokens=512)


class LlmJudge:
    def __init__(self, ctx: RunContext, deployment: str, rubric: str | None = None) -> None:
        self.ctx = ctx
        self.deployment = deployment
        self.rubric = rubric or JUDGE_RUBRIC

    async def score(self, req: ChatRequest, answer: str) -> Score:
        reply = (await ask(self.ctx, self.deployment, req, self._messages(req, answer),
                           JUDGEMENT)).text
        return judge_reply_score(reply)

    def _messages(self, req: ChatRequest, answer: str) -> list[Message]:
        question = _conversation_text(req)
        return [system(self.rubric),
                user(f"Request:\n{question}\n\nAnswer to grade:\n{answer}")]

    def cost_bound_usd(self, req: ChatRequest, answer_tokens: int) -> float:
        """The most one judgement of an answer of ``answer_tokens`` tokens can cost."""
        prompt = estimate_prompt_tokens(with_messages(req, self._messages(req, "")))
        provider = self.ctx.provider(self.deployment)
        return provider.estimate_cost_usd(prompt + answer_tokens, JUDGEMENT.max_tokens or 0)


def judge_reply_score(reply: str) -> Score:
    """The judge's score and feedback; an unreadable reply is no score (``judged``
    False)."""
    value = parse_score(reply)
    if value is None:
        return Score(0.0, f"no score: the judge's reply could not be read as one: "
                          f"{reply[:200]!r}", judged=False)
    data = json_object(reply)
    feedback = reply.strip()
    if data is not None and isinstance(data.get("feedback"), str):
        feedback = data["feedback"]
    return Score(value, feedback)


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
        return Score(value, "; ".join(s.feedback for s in scores if s.feedback),
                     judged=all(s.judged for s in scores))

    async def score(self, req: ChatRequest, answer: str) -> Score:
        scores = await asyncio.gather(*(v.score(req, answer) for v in self.verifiers))
        return self.combine(scores)

    def cost_bound_usd(self, req: ChatRequest, answer_tokens: int) -> float:
        return sum(verifier_cost_bound_usd(v, req, answer_tokens) for v in self.verifiers)


def verifier_cost_bound_usd(verifier: Verifier, req: ChatRequest, answer_tokens: int) -> float:
    """The most one scoring can cost (0 for a verifier that does not say)."""
    bound = getattr(verifier, "cost_bound_usd", None)
    return float(bound(req, answer_tokens)) if bound is not None else 0.0


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
        return LlmJudge(ctx, spec.deployment, spec.rubric)
    assert isinstance(spec, AllOfSpec)
    return AllOf([build_verifier(s, ctx) for s in spec.of], spec.mode)


def _conversation_text(req: ChatRequest) -> str:
    lines = [f"{m.role}: {m.text()}" for m in req.messages if m.role in ("system", "user",
                                                                          "assistant")]
    return "\n".join(lines)
