"""The azure-openai adapter against a loopback server speaking Azure OpenAI's API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from tako.core.errors import (
    ContentFiltered,
    ContextLengthExceeded,
    Overloaded,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamTransient,
)
from tako.core.specs import DeploymentSpec
from tako.core.types import ChatRequest, ChunkError, Delta, End
from tako.providers.vendors.azure import AzureOpenAI
from tests.fakes import azure as fake_api
from tests.support.providers import (
    assert_vendor_error,
    built,
    chat_for,
    collect,
)
from tests.support.upstreams import served

TOKEN_ENV = "TAKO_TEST_AZURE_ENTRA_TOKEN"


server = served(lambda: fake_api.make_app(deployments={"gpt-4o", "prod-4o"},
                                           api_key="azure-test-key",
                                           bearer_token="entra-test-token"), name="server")


def spec(url: str, **overrides: Any) -> DeploymentSpec:
    fields: dict[str, Any] = {
        "name": "azure-4o", "provider": "azure-openai", "model": "gpt-4o",
        "base_url": url, "api_key": "azure-test-key",
    }
    fields.update(overrides)
    return DeploymentSpec(**fields)


@pytest.fixture
async def azure(
    server: tuple[str, fake_api.FakeAzure],
) -> AsyncIterator[tuple[AzureOpenAI, fake_api.FakeAzure]]:
    url, fake = server
    fake.reset()
    async with built(spec(url), AzureOpenAI) as provider:
        yield provider, fake


chat = chat_for("azure-4o")


async def chat_with(url: str, req: ChatRequest, **overrides: Any) -> Any:
    async with built(spec(url, **overrides), AzureOpenAI) as provider:
        return await provider.chat(req)


WEATHER_TOOL = {
    "type": "function",
    "function": {"name": "get_weather",
                 "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
}


async def test_plain_chat_with_api_key(azure) -> None:
    provider, fake = azure
    answer = await provider.chat(chat([{"role": "user", "content": "hello"}]))
    assert answer.content == "echo: hello"
    assert answer.finish_reason == "stop"
    assert fake.last.path == "/openai/deployments/gpt-4o/chat/completions"
    assert fake.last.query == {"api-version": "2024-10-21"}
    assert fake.last.headers["api-key"] == "azure-test-key"
    assert "authorization" not in fake.last.headers
    assert fake.last.body["messages"] == [{"role": "user", "content": "hello"}]


async def test_deployment_and_api_version_options(server) -> None:
    url, fake = server
    fake.reset()
    await chat_with(url + "/openai/", chat([{"role": "user", "content": "hi"}]),
                    options={"deployment": "prod-4o", "api_version": "2025-01-01-preview"})
    assert fake.last.path == "/openai/deployments/prod-4o/chat/completions"
    assert fake.last.query == {"api-version": "2025-01-01-preview"}


async def test_entra_id_bearer_token_from_env(server, monkeypatch) -> None:
    url, fake = server
    fake.reset()
    monkeypatch.setenv(TOKEN_ENV, "entra-test-token")
    answer = await chat_with(url, chat([{"role": "user", "content": "hi"}]), api_key=None,
                             options={"bearer_token_env": TOKEN_ENV})
    assert answer.content == "echo: hi"
    assert fake.last.headers["authorization"] == "Bearer entra-test-token"
    assert "api-key" not in fake.last.headers

    monkeypatch.delenv(TOKEN_ENV)
    with pytest.raises(UpstreamError) as caught:
        await chat_with(url, chat([{"role": "user", "content": "hi"}]), api_key=None,
                        options={"bearer_token_env": TOKEN_ENV})
    assert caught.value.code == "upstream_auth_error"
    assert len(fake.requests) == 1  # refused before sending


async def test_history_tools_images_and_format_pass_in_openai_shape(azure) -> None:
    provider, fake = azure
    fake.push(fake_api.Reply(body=fake_api.completion(
        None, tool_calls=[("call_pWq1", "get_weather", '{"city":"Rome"}')])))
    image = "data:image/png;base64,iVBORw0KGgo="
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [
            {"type": "text", "text": "Where is this, and the weather there?"},
            {"type": "image_url", "image_url": {"url": image}},
            {"type": "image_url", "image_url": {"url": "https://example.com/x.jpg",
                                                "detail": "low"}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_a1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_a1", "content": "20C"},
    ]
    schema = {"name": "w", "schema": {"type": "object"}}
    answer = await provider.chat(chat(messages, tools=[WEATHER_TOOL], tool_choice="required",
                                      stop="END", temperature=0.2, seed=5,
                                      response_format={"type": "json_schema",
                                                       "json_schema": schema}))
    body = fake.last.body
    # the assistant turn's null content is left out, as OpenAI allows with tool_calls
    assert body["messages"] == [
        {k: v for k, v in m.items() if v is not None} for m in messages]
    assert body["tools"] == [WEATHER_TOOL] and body["tool_choice"] == "required"
    assert body["response_format"] == {"type": "json_schema", "json_schema": schema}
    assert (body["stop"], body["temperature"], body["seed"]) == ("END", 0.2, 5)
    assert answer.finish_reason == "tool_calls"
    assert answer.tool_calls is not None and answer.tool_calls[0].id == "call_pWq1"
    assert orjson.loads(answer.tool_calls[0].function.arguments) == {"city": "Rome"}


async def test_usage_cached_tokens_and_cost(azure) -> None:
    provider, fake = azure
    fake.push(fake_api.Reply(body=fake_api.completion(
        "ok", usage_=fake_api.usage(2000, 100, cached=1024))))
    answer = await provider.chat(chat([{"role": "user", "content": "hi"}]))
    usage = answer.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens) == (2000, 100, 1024)
    # gpt-4o: 2.5 in, 1.25 cached, 10.0 out per million
    assert usage.cost_usd == pytest.approx((976 * 2.5 + 1024 * 1.25 + 100 * 10.0) / 1e6)


@pytest.mark.parametrize(
    ("reply", "error_class", "code"),
    [
        (fake_api.error(429, "429", "Requests to the ChatCompletions_Create Operation have "
                        "exceeded token rate limit. Please retry after 6 seconds.",
                        {"retry-after": "6", "retry-after-ms": "5500"}),
         UpstreamRateLimited, "upstream_rate_limited"),
        (fake_api.error(400, "context_length_exceeded", "This model's maximum context length "
                        "is 128000 tokens. However, your messages resulted in 130017 tokens.",
                        type="invalid_request_error", param="messages"),
         ContextLengthExceeded, "context_length_exceeded"),
        (fake_api.content_filter_error(), ContentFiltered, "content_filter"),
        (fake_api.error(503, "ServiceUnavailable", "The service is temporarily unable to "
                        "process your request."), Overloaded, "upstream_overloaded"),
        (fake_api.error(500, "InternalServerError", "The server had an error while processing "
                        "your request."), UpstreamTransient, "upstream_error"),
    ],
)
async def test_vendor_errors_map_to_tako_errors(azure, reply, error_class, code) -> None:
    provider, fake = azure
    fake.push(reply, reply)
    await assert_vendor_error(provider, chat([{"role": "user", "content": "hi"}]), reply,
                              error_class, code, retry_after=5.5)


async def test_wrong_key_and_unknown_deployment(server) -> None:
    url, fake = server
    fake.reset()
    with pytest.raises(UpstreamError) as auth:
        await chat_with(url, chat([{"role": "user", "content": "hi"}]), api_key="wrong")
    assert auth.value.code == "upstream_auth_error"
    with pytest.raises(UpstreamError) as missing:
        await chat_with(url, chat([{"role": "user", "content": "hi"}]),
                        options={"deployment": "nope"})
    assert missing.value.code == "upstream_not_found"
    assert missing.value.details is not None
    assert missing.value.details["body"]["error"]["code"] == "DeploymentNotFound"


async def test_stream_usage_is_asked_for_unless_turned_off(azure, server) -> None:
    provider, fake = azure
    items = await collect(provider, chat([{"role": "user", "content": "a b"}]))
    assert fake.last.body["stream_options"] == {"include_usage": True}
    assert isinstance(items[-1], End) and items[-1].usage.prompt_tokens == 19
    url, _ = server
    async with built(spec(url, options={"stream_usage": False}), AzureOpenAI) as provider:
        items = await collect(provider, chat([{"role": "user", "content": "a b"}]))
    assert "stream_options" not in fake.last.body
    assert "".join(i.content or "" for i in items if isinstance(i, Delta)) == "echo: a b"
    # no usage came: it is counted from the request and the text, and marked estimated
    assert isinstance(items[-1], End) and items[-1].usage.estimated
    assert items[-1].usage.completion_tokens > 0


async def test_content_filter_finish_mid_stream(azure) -> None:
    provider, fake = azure
    fake.push(fake_api.Reply(chunks=fake_api.text_stream(["Here is"],
                                                         finish_reason="content_filter")))
    items = await collect(provider, chat([{"role": "user", "content": "hi"}]))
    assert isinstance(items[-1], End) and items[-1].finish_reason == "content_filter"
    assert not any(isinstance(i, ChunkError) for i in items)
