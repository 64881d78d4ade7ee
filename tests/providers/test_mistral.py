"""The mistral adapter against a loopback server speaking Mistral's chat completions API."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from tako.core.errors import (
    ContextLengthExceeded,
    InvalidRequest,
    Overloaded,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamTransient,
)
from tako.core.specs import DeploymentSpec
from tako.core.types import ChunkError, Delta, End
from tako.providers.vendors.mistral import MistralProvider, stream_error
from tests.fakes import mistral as fake_api
from tests.support.providers import (
    assert_vendor_error,
    built,
    chat_for,
    collect,
)
from tests.support.upstreams import served

server = served(lambda: fake_api.make_app(api_key="mistral-test-key"), name="server")


def spec(url: str, **overrides: Any) -> DeploymentSpec:
    fields: dict[str, Any] = {
        "name": "mistral", "provider": "mistral", "model": "mistral-large-latest",
        "base_url": url + "/v1", "api_key": "mistral-test-key",
    }
    fields.update(overrides)
    return DeploymentSpec(**fields)


@pytest.fixture
async def mistral(
    server: tuple[str, fake_api.FakeMistral],
) -> AsyncIterator[tuple[MistralProvider, fake_api.FakeMistral]]:
    url, fake = server
    fake.reset()
    async with built(spec(url), MistralProvider) as provider:
        yield provider, fake


chat = chat_for("mistral")


WEATHER_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Current weather",
                 "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
}


async def test_plain_chat(mistral) -> None:
    provider, fake = mistral
    answer = await provider.chat(chat([{"role": "user", "content": "bonjour"}]))
    assert answer.content == "echo: bonjour"
    assert answer.finish_reason == "stop"
    assert answer.id == "cmpl-e5cc70bb28c444948073e77776eb30ef"
    assert fake.last.path == "/v1/chat/completions"
    assert fake.last.headers["authorization"] == "Bearer mistral-test-key"
    assert fake.last.body == {"model": "mistral-large-latest",
                              "messages": [{"role": "user", "content": "bonjour"}]}


async def test_system_history_and_mistral_field_names(server) -> None:
    url, fake = server
    fake.reset()
    async with built(spec(url, options={"safe_prompt": True}), MistralProvider) as provider:
        await provider.chat(chat(
            [{"role": "system", "content": "Be brief."},
             {"role": "user", "content": "Hi"},
             {"role": "assistant", "content": "Hello"},
             {"role": "user", "content": "Bye"}],
            temperature=0.3, top_p=0.8, stop=["END"], max_completion_tokens=64, seed=42,
            user="alice", response_format={"type": "json_object"},
        ))
    body = fake.last.body
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "user"]
    assert body["messages"][0]["content"] == "Be brief."
    assert (body["temperature"], body["top_p"], body["stop"]) == (0.3, 0.8, ["END"])
    assert body["max_tokens"] == 64 and body["random_seed"] == 42
    assert body["response_format"] == {"type": "json_object"}
    assert body["safe_prompt"] is True
    for absent in ("seed", "user", "max_completion_tokens", "stream_options"):
        assert absent not in body


async def test_tool_call_round_trip_normalises_foreign_ids(mistral) -> None:
    provider, fake = mistral
    fake.push(fake_api.Reply(body=fake_api.completion(
        "", tool_calls=[("D681PevKs", "get_weather", '{"city": "Lyon"}')])))
    first = await provider.chat(chat([{"role": "user", "content": "Weather in Lyon?"}],
                                     tools=[WEATHER_TOOL], tool_choice="required"))
    assert fake.last.body["tool_choice"] == "any"
    assert fake.last.body["tools"] == [WEATHER_TOOL]
    assert first.finish_reason == "tool_calls"
    assert first.tool_calls is not None and first.tool_calls[0].id == "D681PevKs"
    assert orjson.loads(first.tool_calls[0].function.arguments) == {"city": "Lyon"}

    # a history that also holds a call made by another vendor (OpenAI-style id)
    history = [
        {"role": "user", "content": "Weather in Lyon and Nice?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "D681PevKs", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Lyon"}'}},
            {"id": "call_9fXzq2LkPq81", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Nice"}'}}]},
        {"role": "tool", "tool_call_id": "D681PevKs", "content": "21C"},
        {"role": "tool", "tool_call_id": "call_9fXzq2LkPq81", "content": "24C"},
    ]
    answer = await provider.chat(chat(history, tools=[WEATHER_TOOL]))
    assert answer.content == "echo: Weather in Lyon and Nice?"
    sent = fake.last.body["messages"]
    ids = [c["id"] for c in sent[1]["tool_calls"]]
    assert ids[0] == "D681PevKs"
    assert ids[1] != "call_9fXzq2LkPq81" and len(ids[1]) == 9 and ids[1].isalnum()
    assert [sent[2]["tool_call_id"], sent[3]["tool_call_id"]] == ids


@pytest.mark.parametrize("choice", ["auto", "none",
                                    {"type": "function", "function": {"name": "get_weather"}}])
async def test_other_tool_choices_pass_unchanged(mistral, choice) -> None:
    provider, fake = mistral
    await provider.chat(chat([{"role": "user", "content": "hi"}], tools=[WEATHER_TOOL],
                             tool_choice=choice))
    assert fake.last.body["tool_choice"] == choice


async def test_images_pass_through(mistral) -> None:
    provider, fake = mistral
    data_url = "data:image/jpeg;base64," + base64.b64encode(b"\xff\xd8\xffjpeg").decode()
    parts = [{"type": "text", "text": "What is this?"},
             {"type": "image_url", "image_url": {"url": data_url}},
             {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]
    await provider.chat(chat([{"role": "user", "content": parts}]))
    assert fake.last.body["messages"][0]["content"] == parts


async def test_model_length_and_chunked_content(mistral) -> None:
    provider, fake = mistral
    content = [{"type": "thinking", "thinking": [{"type": "text", "text": "hmm"}]},
               {"type": "text", "text": "Part one. "}, {"type": "text", "text": "Part two."}]
    fake.push(fake_api.Reply(body=fake_api.completion(content, finish_reason="model_length")))
    answer = await provider.chat(chat([{"role": "user", "content": "hi"}]))
    assert answer.content == "Part one. Part two."
    assert answer.finish_reason == "length"


@pytest.mark.parametrize(
    ("reply", "error_class", "code"),
    [
        (fake_api.error(429, "Requests rate limit exceeded", "rate_limited", "1300",
                        {"retry-after": "3"}), UpstreamRateLimited, "upstream_rate_limited"),
        (fake_api.error(400, "Prompt contains 40000 tokens and 0 draft tokens, too large for "
                        "model with 32768 maximum context length",
                        "invalid_request_message_error", "3051"),
         ContextLengthExceeded, "context_length_exceeded"),
        (fake_api.error(404, "Invalid model: mistral-nope", "invalid_model", "1500"),
         UpstreamError, "upstream_not_found"),
        (fake_api.error(503, "Service unavailable.", "service_unavailable"), Overloaded,
         "upstream_overloaded"),
        (fake_api.error(500, "Internal server error", "internal_server_error", "1000"),
         UpstreamTransient, "upstream_error"),
        (fake_api.error(422, {"detail": [{"msg": "Input should be a valid string"}]},
                        "invalid_request_error"), InvalidRequest, "upstream_invalid_request"),
    ],
)
async def test_vendor_errors_map_to_tako_errors(mistral, reply, error_class, code) -> None:
    provider, fake = mistral
    fake.push(reply, reply)
    await assert_vendor_error(provider, chat([{"role": "user", "content": "hi"}]), reply,
                              error_class, code, retry_after=3.0)


async def test_wrong_key_is_an_auth_error(server) -> None:
    url, fake = server
    fake.reset()
    async with built(spec(url, api_key="wrong"), MistralProvider) as provider:
        with pytest.raises(UpstreamError) as caught:
            await provider.chat(chat([{"role": "user", "content": "hi"}]))
    assert caught.value.code == "upstream_auth_error"
    assert caught.value.details is not None and caught.value.details["status"] == 401


@pytest.mark.parametrize(
    ("event", "error_class", "status"),
    [
        (fake_api.error_body("Service unavailable.", "service_unavailable", "3000"),
         Overloaded, 503),
        (fake_api.error_body("Requests rate limit exceeded", "rate_limited"),
         UpstreamRateLimited, 429),
        ({"error": {"message": "bad", "type": "invalid_request_error", "code": 400}},
         InvalidRequest, 400),
        (fake_api.error_body("Internal server error", "internal_server_error"),
         UpstreamTransient, 500),
    ],
)
def test_stream_error_events_map_by_status_or_kind(event, error_class, status) -> None:
    error = stream_error("mistral", event)
    assert type(error) is error_class
    assert error.details == {"provider": "mistral", "status": status, "body": event}


async def test_finish_reason_error_mid_stream(mistral) -> None:
    provider, fake = mistral
    fake.push(fake_api.Reply(chunks=fake_api.text_stream(["Hel"], finish_reason="error")))
    items = await collect(provider, chat([{"role": "user", "content": "hi"}]))
    assert isinstance(items[0], Delta) and items[0].content == "Hel"
    assert isinstance(items[1], ChunkError) and isinstance(items[1].error, UpstreamTransient)
    assert isinstance(items[2], End) and items[2].finish_reason == "error"
    assert items[2].usage.prompt_tokens == 16
