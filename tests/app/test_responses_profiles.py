"""Every orchestrator kind (conductor, trinity, selfcaller, abmcts) answers behind
``POST /v1/responses``: the scripted upstream and profiles of the chat end-to-end tests,
asked through the openai SDK's ``responses`` API, streamed with the opt-in events too."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import orjson
import pytest

from tests.fakes.openai import FakeOpenAI, serve_openai
from tests.support.gateway import TEST_KEY, Gateway, gateway
from tests.support.openai_schema import validate
from tests.support.orchestrator_scenario import CASES, SCRIPT, check_answer, orchestrator_config
from tests.support.responses_api import stream_events


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[str, FakeOpenAI]]:
    with serve_openai(SCRIPT) as served:
        yield served


@pytest.fixture(scope="module")
def gw(upstream: tuple[str, FakeOpenAI]) -> Iterator[Gateway]:
    with gateway(orchestrator_config(upstream[0])) as g:
        yield g


@pytest.fixture
def fake(upstream: tuple[str, FakeOpenAI]) -> FakeOpenAI:
    upstream[1].reset()
    return upstream[1]


@pytest.fixture
def client(gw: Gateway) -> openai.OpenAI:  # noqa: F811
    return openai.OpenAI(base_url=gw.base_url, api_key=TEST_KEY, max_retries=0, timeout=30)


@pytest.mark.parametrize("name", CASES)
def test_profile_answers_over_responses(name: str, client: openai.OpenAI,
                                        fake: FakeOpenAI) -> None:  # noqa: F811
    case = CASES[name]
    raw = client.responses.with_raw_response.create(model=case.profile, input=case.question)
    validate("Response", orjson.loads(raw.content))
    response = raw.parse()
    check_answer(name, case, response.output_text, fake)
    assert response.usage is not None
    assert response.usage.input_tokens == fake.usage_sum()[0]
    assert client.responses.retrieve(response.id).output_text == response.output_text


@pytest.mark.parametrize("name", CASES)
def test_profile_streams_over_responses_with_events(name: str, gw: Gateway,  # noqa: F811
                                                    fake: FakeOpenAI) -> None:  # noqa: F811
    case = CASES[name]
    events = stream_events(gw, {"model": case.profile, "input": case.question,
                                "tako": {"events": True}}, skip=("tako.event",))
    kinds = {e["event"]["kind"] for e in events if e["type"] == "tako.event"}
    assert case.events <= kinds
    assert events[-1]["type"] == "response.completed"
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    check_answer(name, case, text, fake)
    assert events[-1]["response"]["usage"]["input_tokens"] == fake.usage_sum()[0]
