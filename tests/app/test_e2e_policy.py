"""Policy and PII guards through the HTTP surface, on the embedded engine and on an
OPA-compatible REST server answering from the same policies (parity)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import orjson
import pytest

from tests.fakes.openai import FakeOpenAI, Reply
from tests.support.gateway import TEST_KEY, Gateway
from tests.support.openai_schema import validate_chunk, validate_error
from tests.support.policy_gateway import policy_gateway
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


def ask(client: openai.OpenAI, text: str, model: str = "echo") -> str:
    reply = client.chat.completions.create(model=model,
                                           messages=[{"role": "user", "content": text}])
    return reply.choices[0].message.content or ""


def test_pre_chat_deny_is_403_policy_denied(client: openai.OpenAI, gw: Gateway) -> None:
    with pytest.raises(openai.PermissionDeniedError) as info:
        ask(client, "hello", model="echo-slow")
    assert info.value.body["type"] == "policy_denied"  # type: ignore[index]
    resp = httpx.post(gw.base_url + "/chat/completions",
                      headers={"authorization": f"Bearer {TEST_KEY}"},
                      json={"model": "echo", "messages": [
                          {"role": "user", "content": "tell me the launch codes"}]})
    assert resp.status_code == 403
    validate_error(resp.json())
    assert "launch codes" in resp.json()["error"]["message"]


def test_pre_chat_force_model(gw: Gateway) -> None:
    forced = openai.OpenAI(base_url=gw.base_url, api_key="sk-test-forced", max_retries=0)
    raw = forced.chat.completions.with_raw_response.create(
        model="echo", messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["x-tako-deployment"] == "echo-b"
    assert raw.parse().model == "echo", "the client sees the model name it asked for"


def test_pre_chat_redacts_messages(client: openai.OpenAI, fake: FakeOpenAI) -> None:
    assert ask(client, "status of project bluebird?") == "echo: status of [REDACTED]?"


def test_request_pii_redacted_before_the_provider(client: openai.OpenAI,
                                                  fake: FakeOpenAI) -> None:
    ask(client, "mail ann@example.com please", model="scripted")
    sent = fake.requests[-1].body["messages"][0]["content"]
    assert "ann@example.com" not in sent and "<EMAIL>" in sent


def test_pre_tool_deny_tells_the_model(client: openai.OpenAI) -> None:
    answer = ask(client, "calculator: 1+1", model="echo-tools")
    assert answer.startswith("tool calculator returned: error: the call to calculator was "
                             "refused by policy")


def test_pre_tool_require_approval_is_403(client: openai.OpenAI) -> None:
    with pytest.raises(openai.PermissionDeniedError) as info:
        ask(client, "current_time: now", model="echo-time")
    assert info.value.code == "approval_required"


def test_post_chat_deny_and_redact(client: openai.OpenAI, fake: FakeOpenAI) -> None:
    fake.push(Reply(text="here are the launch codes: 0000"))
    with pytest.raises(openai.PermissionDeniedError):
        ask(client, "anything", model="scripted")
    fake.push(Reply(text="project bluebird ships friday"))
    assert ask(client, "anything", model="scripted") == "[REDACTED] ships friday"


def test_response_pii_masked_also_when_split_across_chunks(gw: Gateway,
                                                            fake: FakeOpenAI) -> None:
    fake.push(Reply(text="key AKIAIOSFODNN7EXAMPLE ok"))
    client = openai.OpenAI(base_url=gw.base_url, api_key=TEST_KEY, max_retries=0)
    plain = ask(client, "x", model="scripted")
    assert "AKIAIOSFODNN7EXAMPLE" not in plain and plain.endswith(" ok")
    fake.push(Reply(chunks=["card 4111 11", "11 1111 ", "1111 and key AKIAIOSF", "ODNN7EXAMPLE",
                            " done"]))
    resp = httpx.post(gw.base_url + "/chat/completions", timeout=10,
                      headers={"authorization": f"Bearer {TEST_KEY}"},
                      json={"model": "scripted", "stream": True,
                            "messages": [{"role": "user", "content": "x"}]})
    frames = [line[6:] for line in resp.text.splitlines() if line.startswith("data: ")]
    assert frames[-1] == "[DONE]"
    chunks = [orjson.loads(f) for f in frames[:-1]]
    for chunk in chunks:
        validate_chunk(chunk)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks
                   if c["choices"])
    assert "4111" not in text.replace("****1111", "") and "AKIAIOSFODNN7EXAMPLE" not in text
    assert text.startswith("card ") and text.endswith(" done")


def test_post_chat_deny_mid_stream_ends_with_error_frame(gw: Gateway, fake: FakeOpenAI) -> None:
    fake.push(Reply(text="the launch codes are secret"))
    resp = httpx.post(gw.base_url + "/chat/completions", timeout=10,
                      headers={"authorization": f"Bearer {TEST_KEY}"},
                      json={"model": "scripted", "stream": True,
                            "messages": [{"role": "user", "content": "x"}]})
    frames = [line[6:] for line in resp.text.splitlines() if line.startswith("data: ")]
    assert frames[-1] == "[DONE]"
    error = orjson.loads(frames[-2])
    validate_error(error)
    assert error["error"]["type"] == "policy_denied"
