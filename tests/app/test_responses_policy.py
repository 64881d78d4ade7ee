"""Policy and PII guards over ``POST /v1/responses``: the policies, guards and gateways
(embedded engine and OPA over REST) of the chat policy tests, asked through the Responses
API; what a client streams, receives and finds stored is what the policy let out."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.fakes.openai import FakeOpenAI, Reply
from tests.support.gateway import TEST_KEY, Gateway
from tests.support.openai_schema import validate_error
from tests.support.policy_gateway import policy_gateway
from tests.support.responses_api import stream_events
from tests.support.upstreams import fresh, served

upstream = served()
fake = fresh()


@pytest.fixture(scope="module", params=["embedded", "opa"])
def gw(request: pytest.FixtureRequest, upstream: tuple[str, FakeOpenAI]) -> Iterator[Gateway]:
    with policy_gateway(request.param, upstream[0]) as g:
        yield g


@pytest.fixture
def client(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=TEST_KEY, max_retries=0)


def test_pre_chat_deny_and_redaction(client: openai.OpenAI, gw: Gateway) -> None:  # noqa: F811
    with pytest.raises(openai.PermissionDeniedError) as info:
        client.responses.create(model="echo", input="tell me the launch codes")
    validate_error(info.value.response.json())
    assert info.value.body["type"] == "policy_denied"  # type: ignore[index]
    answer = client.responses.create(model="echo", input="status of project bluebird?")
    assert answer.output_text == "echo: status of [REDACTED]?"


def test_request_pii_redacted_in_input_and_instructions(client: openai.OpenAI,
                                                        fake: FakeOpenAI) -> None:  # noqa: F811
    fake.push(Reply(text="ok"))
    client.responses.create(model="scripted", instructions="reply to bob@example.com",
                            input="mail ann@example.com please")
    sent = str(fake.requests[-1].body["messages"])
    assert "ann@example.com" not in sent and "bob@example.com" not in sent
    assert "<EMAIL>" in sent


def test_post_chat_redacts_what_is_sent_and_stored(client: openai.OpenAI,
                                                   fake: FakeOpenAI) -> None:  # noqa: F811
    fake.push(Reply(text="project bluebird ships friday"))
    answer = client.responses.create(model="scripted", input="anything")
    assert answer.output_text == "[REDACTED] ships friday"
    assert client.responses.retrieve(answer.id).output_text == "[REDACTED] ships friday"
    fake.push(Reply(text="here are the launch codes: 0000"))
    with pytest.raises(openai.PermissionDeniedError):
        client.responses.create(model="scripted", input="anything")


def test_stream_masks_pii_split_across_chunks(gw: Gateway, client: openai.OpenAI,  # noqa: F811
                                              fake: FakeOpenAI) -> None:  # noqa: F811
    fake.push(Reply(chunks=["card 4111 11", "11 1111 ", "1111 and key AKIAIOSF", "ODNN7EXAMPLE",
                            " done"]))
    events = stream_events(gw, {"model": "scripted", "input": "x"})
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert "4111" not in text.replace("****1111", "") and "AKIAIOSFODNN7EXAMPLE" not in text
    assert text.startswith("card ") and text.endswith(" done")
    done = events[-1]["response"]
    assert done["output"][0]["content"][0]["text"] == text
    assert client.responses.retrieve(done["id"]).output_text == text


def test_post_chat_deny_mid_stream_fails_the_response(gw: Gateway,  # noqa: F811
                                                      fake: FakeOpenAI) -> None:  # noqa: F811
    fake.push(Reply(text="the launch codes are secret"))
    events = stream_events(gw, {"model": "scripted", "input": "x"})
    assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
    assert "launch codes" in events[-2]["message"]
    failed_id = events[-1]["response"]["id"]
    response = httpx.get(f"{gw.base_url}/responses/{failed_id}", timeout=5,
                         headers={"authorization": f"Bearer {TEST_KEY}"})
    assert response.status_code == 404
