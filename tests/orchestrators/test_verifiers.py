"""Verifiers: strict score parsing, rule checks, combination, LLM judge."""

from __future__ import annotations

import pytest

from tako.core.errors import ConfigError
from tako.core.types import ChatRequest
from tako.orchestrators.api import make_context
from tako.orchestrators.textparse import parse_score
from tako.orchestrators.verifiers import AllOf, LlmJudge, RuleVerifier, build_verifier
from tests.fakes.provider import ScriptedProvider

REQ = ChatRequest(model="x", messages=[{"role": "user", "content": "Give me JSON."}])


@pytest.mark.parametrize("text, expected", [
    ('{"score": 0.65, "feedback": "ok"}', 0.65),
    ('```json\n{"score": "0.9"}\n```', 0.9),
    ('Here is my grade: {"score": 0.4, "feedback": "thin"}', 0.4),
    ("SCORE: 0.8", 0.8),
    ("The answer is fine.\n**Score:** 8/10\nMinor gaps.", 0.8),
    ("SCORE: 80%", 0.8),
    ('{"score": 85}', None),
    ('{"score": true}', None),
    ("SCORE: 7", None),
    ("391", None),
    ("0.8", None),
    ("Step 1: think about the question.", None),
    ("$56$", None),
    ("I'd give it 7 out of 10.", None),
    ("The score should be 0.9 once the units are fixed.", None),
    ("excellent work", None),
])
def test_scores_come_only_from_a_field_or_a_score_line(text: str,
                                                       expected: float | None) -> None:
    value = parse_score(text)
    if expected is None:
        assert value is None
    else:
        assert value == pytest.approx(expected)


async def test_rules_score_is_the_fraction_of_checks_passed() -> None:
    v = RuleVerifier(must=[r"\bparis\b"], must_not=[r"i don't know"], min_chars=5,
                     max_chars=40)
    assert (await v.score(REQ, "The capital is Paris.")).value == 1.0
    score = await v.score(REQ, "I don't know, maybe Lyon? " * 3)
    assert score.value == pytest.approx(1 / 4)
    assert "missing required pattern" in score.feedback and "forbidden" in score.feedback
    assert "longer than 40" in score.feedback


async def test_json_schema_check() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    v = RuleVerifier(json_schema=schema)
    assert (await v.score(REQ, '{"n": 3}')).value == 1.0
    assert (await v.score(REQ, 'Here: ```json\n{"n": 3}\n```')).value == 1.0
    bad = await v.score(REQ, '{"n": "three"}')
    assert bad.value == 0.0 and "schema" in bad.feedback
    assert (await v.score(REQ, "no json")).feedback == "not valid JSON"
    with pytest.raises(ConfigError, match="json_schema"):
        RuleVerifier(json_schema={"type": "nonsense"})


async def test_combined_verifiers() -> None:
    a, b = RuleVerifier(must=["x"]), RuleVerifier(must=["y"])
    assert (await AllOf([a, b]).score(REQ, "x")).value == 0.0
    assert (await AllOf([a, b], mode="mean").score(REQ, "x")).value == 0.5
    built = build_verifier([{"kind": "rules", "must": ["x"]}, {"kind": "rules",
                                                               "max_chars": 3}], make_context({}))
    assert (await built.score(REQ, "xx")).value == 1.0
    assert (await built.score(REQ, "xxxx")).value == 0.0
    with pytest.raises(ConfigError, match="verifier.kind: unknown verifier kind 'astrology'"):
        build_verifier({"kind": "astrology"}, make_context({}))


async def test_llm_judge_reads_strictly_and_marks_no_score() -> None:
    judge = ScriptedProvider("judge", default=['{"score": 0.9, "feedback": "great"}',
                                       "Mostly right.\nSCORE: 3/10", "391", "Step 1: think"])
    ctx = make_context({"judge": judge})
    v = LlmJudge(ctx, "judge")
    first = await v.score(REQ, "answer one")
    assert (first.value, first.feedback, first.judged) == (0.9, "great", True)
    assert (await v.score(REQ, "answer two")).value == pytest.approx(0.3)
    for answer in ("answer three", "answer four"):
        unreadable = await v.score(REQ, answer)
        assert (unreadable.value, unreadable.judged) == (0.0, False)
        assert unreadable.feedback.startswith("no score")
    assert "Give me JSON." in judge.prompts()[0] and "answer one" in judge.prompts()[0]
    assert ctx.usage.cost_usd == pytest.approx(0.004)
    sent = judge.requests[0]
    assert (sent.temperature, sent.max_tokens) == (0.0, 512)
