"""PII guards cover every field that carries text, through a real ``tako serve``: on the
request, message content, names, assistant tool-call arguments, tool and parameter
descriptions, ``user`` and ``metadata``; on the answer, content and tool-call arguments,
streamed (split across chunks) and not. Version numbers are not IP addresses, and a
corpus of benign texts has no finding at all."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tako.policies.pii import PiiFilter
from tako.policies.pii_stream import StreamRedactor
from tako.policies.settings import PiiFilterSettings
from tests.support.gateway import TEST_KEY, Gateway, basic_config, gateway
from tests.support.net import serve_asgi

EMAIL = "ann.lee@example.com"


class Upstream:
    """An OpenAI-compatible upstream that records what it is sent and answers with a
    tool call whose arguments are ``arguments``; streamed, in two halves (the middle of
    the text is cut)."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.arguments = "{}"

    def app(self) -> Starlette:
        async def chat(request: Request) -> Response:
            body = json.loads(await request.body())
            self.bodies.append(body)
            call = {"id": "call_9", "type": "function",
                    "function": {"name": "send_mail", "arguments": self.arguments}}
            if body.get("stream"):
                return Response(self.frames(call), media_type="text/event-stream")
            message = {"role": "assistant", "content": None, "tool_calls": [call]}
            return Response(json.dumps({
                "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
                "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}}),
                media_type="application/json")

        return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])

    def frames(self, call: dict[str, Any]) -> bytes:
        half = len(self.arguments) // 2
        deltas = [{"role": "assistant", "tool_calls": [{
            "index": 0, "id": call["id"], "type": "function",
            "function": {"name": "send_mail", "arguments": ""}}]}]
        deltas += [{"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
                   for piece in (self.arguments[:half], self.arguments[half:])]
        chunks = [{"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
                   "model": "m", "choices": [{"index": 0, "delta": d, "finish_reason": None}]}
                  for d in deltas]
        chunks.append({**chunks[0], "choices": [{"index": 0, "delta": {},
                                                 "finish_reason": "tool_calls"}]})
        return b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + \
            b"data: [DONE]\n\n"


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[str, Upstream]]:
    fake = Upstream()
    with serve_asgi(fake.app()) as base:
        yield base, fake


@pytest.fixture
def fake(upstream: tuple[str, Upstream]) -> Upstream:
    return upstream[1]

BENIGN = [
    "version 1.2.3.4 fixes the crash",
    "Version: 10.0.0.1 is the current release",
    "upgrade to v 2.10.4.1 today",
    "we ship v3.1.4.1 and ver. 1.0.0.2 next week",
    "set version=4.4.4.4 in the manifest",
    "the build 2024.10.3 went out at 14:05",
    "meeting in room 1.2.3 on floor 4",
    "Section 3.1.4 of RFC 9110 defines this",
    "pi is 3.14159 and e is 2.71828",
    "order #12345 ships in 3-5 days",
    "the ratio was 1:2:3 in 2023",
    "use python 3.11.7 with numpy 1.26.4",
    "call the function add(2, 3) to get 5",
    "the sha is 9f86d081884c7d65",
    "chapter 12, page 345, line 6",
    "temperatures of 21.5 to 23.0 degrees",
    "Kubernetes v1.29.2 and Helm 3.14.0",
    "tickets cost $12.50 or EUR 11.99",
    "the year 1999 and the year 2000",
    "a UUID like 123e4567-e89b-12d3-a456-426614174000",
]


def all_kinds_filter() -> PiiFilter:
    kinds = ["email", "phone", "ipv4", "ipv6", "credit_card", "us_ssn", "iban",
             "aws_access_key_id", "aws_secret_access_key", "openai_api_key", "github_token",
             "jwt", "private_key"]
    return PiiFilter(PiiFilterSettings(mode="redact", kinds=kinds))


def test_benign_corpus_has_no_false_positive() -> None:
    guard = all_kinds_filter()
    found = {text: guard.scan(text) for text in BENIGN}
    assert {text: f for text, f in found.items() if f} == {}


def test_benign_corpus_streams_unchanged_whatever_the_chunking() -> None:
    guard = all_kinds_filter()
    for text in BENIGN:
        for size in (1, 3, 7):
            redactor = StreamRedactor(guard)
            out = "".join(redactor.feed(text[i:i + size]) for i in range(0, len(text), size))
            assert out + redactor.flush() == text


@pytest.mark.parametrize("text", ["server 10.0.0.1 is down", "from 192.168.1.20 at noon"])
def test_addresses_are_still_found(text: str) -> None:
    assert [f.kind for f in all_kinds_filter().scan(text)] == ["ipv4"]


@pytest.fixture(scope="module")
def gw(upstream: tuple[str, Upstream]) -> Iterator[Gateway]:
    config = basic_config()
    config["deployments"].append({"name": "scripted", "provider": "http-generic",
                                  "model": "m", "base_url": upstream[0] + "/v1"})
    config["policy"] = {"pii": {"request": {"mode": "redact", "kinds": ["email"]},
                                "response": {"mode": "redact", "kinds": ["email"]}}}
    with gateway(config) as running:
        yield running


def post(gw: Gateway, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(gw.base_url + "/chat/completions", json=body, timeout=20,
                      headers={"authorization": f"Bearer {TEST_KEY}"})


def test_every_request_text_field_is_guarded(gw: Gateway, fake: Upstream) -> None:
    tool = {"type": "function", "function": {
        "name": "send_mail", "description": f"mails {EMAIL} by default",
        "parameters": {"type": "object", "properties": {
            "to": {"type": "string", "description": f"like {EMAIL}"}}}}}
    body = {"model": "scripted", "user": EMAIL, "metadata": {"owner": f"owner {EMAIL}"},
            "tools": [tool], "messages": [
                {"role": "user", "name": EMAIL, "content": f"write to {EMAIL}"},
                {"role": "assistant", "content": None, "tool_calls": [{
                    "id": "call_1", "type": "function", "function": {
                        "name": "send_mail", "arguments": json.dumps({"to": EMAIL})}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": f"sent to {EMAIL}"},
                {"role": "user", "content": [{"type": "text", "text": f"and {EMAIL}?"}]}]}
    assert post(gw, body).status_code == 200
    sent = fake.bodies[-1]
    assert EMAIL not in json.dumps(sent)
    messages = sent["messages"]
    assert messages[0]["name"] == "<EMAIL>" and "<EMAIL>" in messages[0]["content"]
    assert json.loads(messages[1]["tool_calls"][0]["function"]["arguments"]) == {
        "to": "<EMAIL>"}
    function = sent["tools"][0]["function"]
    assert function["description"] == "mails <EMAIL> by default"
    assert function["parameters"]["properties"]["to"]["description"] == "like <EMAIL>"
    assert sent["user"] == "<EMAIL>"
    assert sent["metadata"] == {"owner": "owner <EMAIL>"}


def test_tool_call_arguments_in_an_answer_are_guarded(gw: Gateway, fake: Upstream) -> None:
    fake.arguments = json.dumps({"to": EMAIL, "note": f"cc {EMAIL}"})
    answer = post(gw, {"model": "scripted", "messages": [{"role": "user", "content": "go"}],
                       "tools": [{"type": "function", "function": {"name": "send_mail"}}]})
    assert answer.status_code == 200, answer.text
    call = answer.json()["choices"][0]["message"]["tool_calls"][0]
    assert json.loads(call["function"]["arguments"]) == {"to": "<EMAIL>", "note": "cc <EMAIL>"}


def test_streamed_tool_call_arguments_split_across_chunks_are_guarded(
        gw: Gateway, fake: Upstream) -> None:
    # the upstream sends the arguments in two halves: the address is cut in two
    fake.arguments = json.dumps({"to": EMAIL})
    body = {"model": "scripted", "stream": True,
            "messages": [{"role": "user", "content": "go"}],
            "tools": [{"type": "function", "function": {"name": "send_mail"}}]}
    arguments, names = "", []
    with httpx.stream("POST", gw.base_url + "/chat/completions", json=body, timeout=20,
                      headers={"authorization": f"Bearer {TEST_KEY}"}) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            delta = json.loads(line[6:])["choices"][0]["delta"] if json.loads(
                line[6:]).get("choices") else {}
            for call in delta.get("tool_calls") or ():
                arguments += call.get("function", {}).get("arguments") or ""
                names += [call["function"]["name"]] if call.get("function", {}).get(
                    "name") else []
    assert names == ["send_mail"]
    assert json.loads(arguments) == {"to": "<EMAIL>"}
