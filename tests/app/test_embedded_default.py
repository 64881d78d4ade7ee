"""The no-config start: `tako serve` with no file answers with the demo key."""

from __future__ import annotations

import json
from collections.abc import Iterator

import openai
import pytest

from tako.app.config import DEMO_KEY
from tests.support.gateway import Gateway, start_gateway


@pytest.fixture(scope="module")
def gw() -> Iterator[Gateway]:
    env = {k: "" for k in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "MISTRAL_API_KEY",
                           "AZURE_OPENAI_API_KEY", "AWS_ACCESS_KEY_ID", "OLLAMA_HOST",
                           "GOOGLE_CLOUD_PROJECT")}
    g = start_gateway(None, env=env)
    try:
        yield g
    finally:
        g.kill()


def test_embedded_default_serves_echo_and_demo_profiles(gw: Gateway) -> None:
    client = openai.OpenAI(base_url=gw.base_url, api_key=DEMO_KEY, max_retries=0)
    ids = {m.id for m in client.models.list()}
    assert ids == {"echo", "echo-tools", "echo-selfcaller", "echo-conductor"}
    reply = client.chat.completions.create(model="echo",
                                           messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "echo: hi"
    calc = client.chat.completions.create(
        model="echo-selfcaller", messages=[{"role": "user", "content": "calculator: 6*7"}])
    assert calc.choices[0].message.content == "tool calculator returned: 42"
    workflow = [{"worker": "echo", "subtask": "draft"},
                {"worker": "echo", "subtask": "polish", "access": [0]}]
    conducted = client.chat.completions.create(
        model="echo-conductor", messages=[{"role": "user", "content": json.dumps(workflow)}])
    assert conducted.choices[0].message.content == "echo: polish"


def test_embedded_default_refuses_other_keys(gw: Gateway) -> None:
    client = openai.OpenAI(base_url=gw.base_url, api_key="sk-not-the-demo", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.models.list()
