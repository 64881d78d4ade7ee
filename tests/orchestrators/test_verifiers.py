"""Verifiers: score parsing, rule checks, combination, streaming evaluation, LLM judge."""

from __future__ import annotations

import asyncio

import pytest

from tako.core.errors import ConfigError
from tako.core.types import ChatRequest
from tako.orchestrators.api import make_context
from tako.orchestrators.textparse import parse_score
from tako.orchestrators.verifiers import AllOf, LlmJudge, RuleVerifier, build_verifier
from tests.orchestrators.scripted import Scripted

REQ = ChatRequest(model="x", messages=[{"role": "user", "content": "Give me JSON."}])


@pytest.mark.parametrize("text, expected", [
    ("0.8", 0.8),
    ("Score: 8/10", 0.8),
    ("I'd give it 7 out of 10.", 0.7),
    ("80%", 0.8),
    ('{"score": 0.65, "feedback": "ok"}', 0.65),
    ('```json\n{"score": "9/10"}\n```', 0.9),
    ('{"score": 85}', 0.85),
    ("score: 7", 0.7),
    ("1.7", 0.17),
    ("-0.5", 0.0),
    ("150%", 1.0),
    ("excellent work", None),
])
def test_parse_score(text: str, expected: float | None) -> None:
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


def test_rule_streaming_evaluation_flags_early() -> None:
    evaluation = RuleVerifier(must=["done"], must_not=["as an ai"]).evaluate_streaming(REQ)
    assert evaluation.feed("Well, ") is None
    assert evaluation.result().value == 0.5
    flagged = evaluation.feed("as an AI model")
    assert flagged is not None and flagged.value == 0.0
    long = RuleVerifier(max_chars=10).evaluate_streaming(REQ)
    assert long.feed("12345") is None
    assert long.feed("678901") is not None


async def test_llm_judge_parses_clamps_and_fails_closed() -> None:
    judge = Scripted("judge", default=['{"score": 250, "feedback": "great"}',
                                       "Score: 3/10 - misses the point", "no idea"])
    ctx = make_context({"judge": judge})
    v = LlmJudge(ctx, "judge")
    first = await v.score(REQ, "answer one")
    assert (first.value, first.feedback) == (1.0, "great")
    assert (await v.score(REQ, "answer two")).value == pytest.approx(0.3)
    unreadable = await v.score(REQ, "answer three")
    assert unreadable.value == 0.0 and "could not be read" in unreadable.feedback
    assert "Give me JSON." in judge.prompts()[0] and "answer one" in judge.prompts()[0]
    assert ctx.usage.cost_usd == pytest.approx(0.003)


async def test_llm_judge_streaming_flags_a_bad_prefix() -> None:
    judge = Scripted("judge", default="0.1", delay=0.01)
    ctx = make_context({"judge": judge})
    evaluation = build_verifier({"kind": "llm", "deployment": "judge", "check_every": 10,
                                 "flag_below": 0.3}, ctx).evaluate_streaming(REQ)
    assert evaluation.feed("a" * 12) is None  # a prefix judgement starts in the background
    await asyncio.sleep(0.05)
    flagged = evaluation.feed("b")
    assert flagged is not None and flagged.value == pytest.approx(0.1)
    assert evaluation.result().value == pytest.approx(0.1)
    assert len(judge.requests) == 1
