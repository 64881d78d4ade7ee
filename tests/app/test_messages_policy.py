"""Policy and PII guards behind ``POST /v1/messages``, as for chat: a denial is
Anthropic's 403, request PII is redacted before the model sees it, response PII is masked
in plain and streamed answers (the anthropic SDK against a real ``tako serve``)."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import pytest
from anthropic.types import ErrorResponse

from tests.support.gateway import TEST_KEY, Gateway, basic_config, gateway

AWS_KEY = "AKIAIOSFODNN7EXAMPLE"


@pytest.fixture(scope="module")
def gw() -> Iterator[Gateway]:
    config = basic_config()
    config["policy"] = {
        "mode": "embedded",
        "data": {"denied_phrases": ["launch codes"], "redaction_text": "[REDACTED]"},
        "pii": {"request": {"mode": "redact", "kinds": ["email"]},
                "response": {"mode": "mask", "kinds": ["aws_access_key_id"]}}}
    with gateway(config) as g:
        yield g


@pytest.fixture
def client(gw: Gateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=TEST_KEY, max_retries=0)


def test_denied_request_is_anthropic_403(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.PermissionDeniedError) as caught:
        client.messages.create(model="echo", max_tokens=64,
                               messages=[{"role": "user", "content": "the launch codes"}])
    error = ErrorResponse.model_validate(caught.value.response.json())
    assert error.error.type == "permission_error" and "policy" in error.error.message


def test_pii_redacted_and_masked(client: anthropic.Anthropic) -> None:
    message = client.messages.create(model="echo", max_tokens=64, messages=[
        {"role": "user", "content": f"mail ann@example.com about {AWS_KEY}"}])
    assert message.content[0].type == "text"
    text = message.content[0].text
    assert "ann@example.com" not in text and AWS_KEY not in text
    assert text.startswith("echo: mail ")


def test_streamed_answer_is_masked(client: anthropic.Anthropic) -> None:
    with client.messages.stream(model="echo", max_tokens=64, messages=[
            {"role": "user", "content": f"the key is {AWS_KEY} right"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert AWS_KEY not in text and text.startswith("echo: the key is ")
    assert final.stop_reason == "end_turn"
