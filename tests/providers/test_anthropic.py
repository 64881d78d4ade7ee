"""The anthropic adapter against a loopback server speaking Anthropic's Messages API."""

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
from tako.core.types import ChunkError, End
from tako.providers.vendors.anthropic import AnthropicProvider, stream_error
from tests.fakes import anthropic as fake_api
from tests.support.providers import (
    WEATHER_TOOL,
    assert_vendor_error,
    built,
    chat_for,
    collect,
    tool_calls_by_index,
)
from tests.support.upstreams import served

PNG = b"\x89PNG\r\n\x1a\nfake-image-bytes"


server = served(lambda: fake_api.make_app(api_key="sk-ant-test"), name="server")


def spec(url: str, **overrides: Any) -> DeploymentSpec:
    fields: dict[str, Any] = {
        "name": "claude", "provider": "anthropic", "model": "claude-sonnet-4-5",
        "base_url": url, "api_key": "sk-ant-test", "options": {"default_max_tokens": 1000},
    }
    fields.update(overrides)
    return DeploymentSpec(**fields)


@pytest.fixture
async def claude(
    server: tuple[str, fake_api.FakeAnthropic],
) -> AsyncIterator[tuple[AnthropicProvider, fake_api.FakeAnthropic]]:
    url, fake = server
    fake.reset()
    async with built(spec(url), AnthropicProvider) as provider:
        yield provider, fake


chat = chat_for("claude")


# ---- requests and responses ----


async def test_plain_chat_sends_anthropic_request_and_parses_reply(claude) -> None:
    provider, fake = claude
    answer = await provider.chat(chat([{"role": "user", "content": "hi there"}]))

    assert answer.content == "echo: hi there"
    assert answer.finish_reason == "stop"
    assert answer.id == "msg_01XFDUDYJgAACzvnptvVoYEL"
    assert answer.provider_id == "claude"
    sent = fake.last
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == "sk-ant-test"
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.body == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 1000,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi there"}]}],
    }


async def test_system_history_and_sampling_fields(claude) -> None:
    provider, fake = claude
    await provider.chat(chat(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": "Answer in French."},
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Bonjour"},
            {"role": "user", "content": [{"type": "text", "text": "And goodbye?"}]},
        ],
        temperature=1.5, top_p=0.9, stop=["END"], max_tokens=50, user="alice", top_k=40,
        seed=7,
    ))
    body = fake.last.body
    assert body["system"] == "Be brief.\n\nAnswer in French."
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][1]["content"] == [{"type": "text", "text": "Bonjour"}]
    assert body["temperature"] == 1.0
    assert body["top_p"] == 0.9
    assert body["stop_sequences"] == ["END"]
    assert body["max_tokens"] == 50
    assert body["metadata"] == {"user_id": "alice"}
    assert body["top_k"] == 40
    assert "seed" not in body and "stop" not in body


async def test_tool_call_round_trip(claude) -> None:
    provider, fake = claude
    fake.push(fake_api.Reply(body=fake_api.message(
        "Let me check.",
        tool_uses=[("toolu_01A", "get_weather", {"city": "Paris"}),
                   ("toolu_01B", "get_weather", {"city": "Oslo"})],
    )))
    first = await provider.chat(chat(
        [{"role": "user", "content": "Weather in Paris and Oslo?"}],
        tools=[WEATHER_TOOL], tool_choice="required", parallel_tool_calls=True,
    ))
    assert fake.last.body["tools"] == [{
        "name": "get_weather",
        "description": "Current weather for a city",
        "input_schema": WEATHER_TOOL["function"]["parameters"],
    }]
    assert fake.last.body["tool_choice"] == {"type": "any"}
    assert first.finish_reason == "tool_calls"
    assert first.content == "Let me check."
    assert first.tool_calls is not None
    assert [c.id for c in first.tool_calls] == ["toolu_01A", "toolu_01B"]
    assert orjson.loads(first.tool_calls[1].function.arguments) == {"city": "Oslo"}

    history = [
        {"role": "user", "content": "Weather in Paris and Oslo?"},
        first.message().model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": "toolu_01A", "content": "18C sunny"},
        {"role": "tool", "tool_call_id": "toolu_01B", "content": "3C snow"},
        {"role": "user", "content": "Thanks, summarise."},
    ]
    await provider.chat(chat(history, tools=[WEATHER_TOOL]))
    turns = fake.last.body["messages"]
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert turns[1]["content"] == [
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "toolu_01A", "name": "get_weather",
         "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "toolu_01B", "name": "get_weather",
         "input": {"city": "Oslo"}},
    ]
    assert turns[2]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_01A",
         "content": [{"type": "text", "text": "18C sunny"}]},
        {"type": "tool_result", "tool_use_id": "toolu_01B",
         "content": [{"type": "text", "text": "3C snow"}]},
        {"type": "text", "text": "Thanks, summarise."},
    ]
    assert "tool_choice" not in fake.last.body


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("none", None, {"type": "none"}),
        ({"type": "function", "function": {"name": "get_weather"}}, None,
         {"type": "tool", "name": "get_weather"}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
    ],
)
async def test_tool_choice_maps_to_anthropic_shape(claude, choice, parallel, expected) -> None:
    provider, fake = claude
    fields: dict[str, Any] = {"tools": [WEATHER_TOOL]}
    if choice is not None:
        fields["tool_choice"] = choice
    if parallel is not None:
        fields["parallel_tool_calls"] = parallel
    await provider.chat(chat([{"role": "user", "content": "hi"}], **fields))
    assert fake.last.body["tool_choice"] == expected


async def test_images_as_data_url_and_http_url(claude) -> None:
    provider, fake = claude
    data_url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    await provider.chat(chat([{"role": "user", "content": [
        {"type": "text", "text": "Compare these"},
        {"type": "image_url", "image_url": {"url": data_url}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
    ]}]))
    blocks = fake.last.body["messages"][0]["content"]
    assert blocks[1] == {"type": "image", "source": {
        "type": "base64", "media_type": "image/png", "data": base64.b64encode(PNG).decode()}}
    assert blocks[2] == {"type": "image",
                         "source": {"type": "url", "url": "https://example.com/cat.jpg"}}


async def test_invalid_image_url_is_rejected_before_sending(claude) -> None:
    provider, fake = claude
    with pytest.raises(InvalidRequest):
        await provider.chat(chat([{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "ftp://example.com/cat.jpg"}}]}]))
    assert fake.requests == []


async def test_response_format_json(claude) -> None:
    provider, fake = claude
    await provider.chat(chat([{"role": "system", "content": "Be brief."},
                              {"role": "user", "content": "a person"}],
                             response_format={"type": "json_object"}))
    assert fake.last.body["system"].startswith("Be brief.\n\n")
    assert "JSON object" in fake.last.body["system"]

    schema = {"type": "object", "properties": {"name": {"type": "string"}}}
    await provider.chat(chat([{"role": "user", "content": "a person"}], response_format={
        "type": "json_schema", "json_schema": {"name": "person", "schema": schema}}))
    assert fake.last.body["output_config"] == {"format": {"type": "json_schema",
                                                          "schema": schema}}
    assert "system" not in fake.last.body


async def test_json_schema_by_instruction_when_configured(server) -> None:
    url, fake = server
    fake.reset()
    schema = {"type": "object", "properties": {"name": {"type": "string"}}}
    async with built(spec(url, options={"json_schema_mode": "prompt"}),
                     AnthropicProvider) as provider:
        await provider.chat(chat([{"role": "user", "content": "a person"}], response_format={
            "type": "json_schema", "json_schema": {"name": "person", "schema": schema}}))
    assert "output_config" not in fake.last.body
    assert orjson.dumps(schema).decode() in fake.last.body["system"]
    assert fake.last.body["max_tokens"] == 4096  # the default when no option or limit is set


async def test_usage_counts_cache_reads_and_prices_them(claude) -> None:
    provider, fake = claude
    fake.push(fake_api.Reply(body=fake_api.message(
        "cached", usage_=fake_api.usage(20, 10, cache_read=1000, cache_write=50))))
    answer = await provider.chat(chat([{"role": "user", "content": "hi"}]))
    usage = answer.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens) == (1070, 10, 1000)
    # claude-sonnet-4-5: input 3.0, cached 0.3, output 15.0 USD per million tokens
    assert usage.cost_usd == pytest.approx((70 * 3.0 + 1000 * 0.3 + 10 * 15.0) / 1e6)


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"),
     ("tool_use", "tool_calls"), ("refusal", "content_filter")],
)
async def test_stop_reasons_map_to_openai_finish_reasons(claude, stop_reason, finish) -> None:
    provider, fake = claude
    fake.push(fake_api.Reply(body=fake_api.message("x", stop_reason=stop_reason)))
    answer = await provider.chat(chat([{"role": "user", "content": "hi"}]))
    assert answer.finish_reason == finish


# ---- errors ----


@pytest.mark.parametrize(
    ("reply", "error_class", "code"),
    [
        (fake_api.error(429, "rate_limit_error", "Number of request tokens has exceeded",
                        {"retry-after": "7"}), UpstreamRateLimited, "upstream_rate_limited"),
        (fake_api.error(400, "invalid_request_error",
                        "prompt is too long: 210000 tokens > 200000 maximum"),
         ContextLengthExceeded, "context_length_exceeded"),
        (fake_api.error(404, "not_found_error", "model: claude-nope"), UpstreamError,
         "upstream_not_found"),
        (fake_api.error(403, "permission_error", "no access"), UpstreamError,
         "upstream_auth_error"),
        (fake_api.error(529, "overloaded_error", "Overloaded"), Overloaded,
         "upstream_overloaded"),
        (fake_api.error(500, "api_error", "Internal server error"), UpstreamTransient,
         "upstream_error"),
    ],
)
async def test_vendor_errors_map_to_tako_errors(claude, reply, error_class, code) -> None:
    provider, fake = claude
    fake.push(reply, reply)
    await assert_vendor_error(provider, chat([{"role": "user", "content": "hi"}]), reply,
                              error_class, code, retry_after=7.0)


async def test_wrong_api_key_is_an_auth_error(server) -> None:
    url, fake = server
    fake.reset()
    async with built(spec(url, api_key="sk-ant-wrong"), AnthropicProvider) as provider:
        with pytest.raises(UpstreamError) as caught:
            await provider.chat(chat([{"role": "user", "content": "hi"}]))
    assert caught.value.code == "upstream_auth_error"
    assert caught.value.details is not None and caught.value.details["status"] == 401


# ---- streaming ----


async def test_streamed_usage_counts_cache_reads_and_prices_them(claude) -> None:
    provider, fake = claude
    fake.push(fake_api.Reply(events=fake_api.text_stream(
        ["Hel", "lo", " world"], input_tokens=25, output_tokens=9, cache_read=5)))
    items = await collect(provider, chat([{"role": "user", "content": "hi"}]))
    assert fake.last.body["stream"] is True
    end = items[-1]
    assert isinstance(end, End) and end.finish_reason == "stop"
    assert (end.usage.prompt_tokens, end.usage.completion_tokens, end.usage.cached_tokens) == (
        30, 9, 5)
    assert end.usage.cost_usd == pytest.approx((25 * 3.0 + 5 * 0.3 + 9 * 15.0) / 1e6)


async def test_streamed_tool_call_without_input_gets_empty_arguments(claude) -> None:
    provider, fake = claude
    events = [
        fake_api.message_start(),
        *fake_api.tool_block(0, "toolu_01A", "get_weather", ['{"ci', 'ty": "Pa', 'ris"}']),
        *fake_api.tool_block(1, "toolu_01B", "get_time", [""]),
        *fake_api.message_end("tool_use", 40),
    ]
    fake.push(fake_api.Reply(events=events))
    items = await collect(provider, chat([{"role": "user", "content": "hi"}],
                                         tools=[WEATHER_TOOL]))
    calls = tool_calls_by_index(items)
    assert orjson.loads(calls[0]["arguments"]) == {"city": "Paris"}
    assert calls[1] == {"id": "toolu_01B", "name": "get_time", "arguments": "{}"}
    end = items[-1]
    assert isinstance(end, End) and end.finish_reason == "tool_calls"
    assert end.usage.completion_tokens == 40


@pytest.mark.parametrize(
    ("kind", "error_class", "status"),
    [("overloaded_error", Overloaded, 529), ("api_error", UpstreamTransient, 500),
     ("rate_limit_error", UpstreamRateLimited, 429), ("no_such_error", UpstreamTransient, 500)],
)
def test_stream_error_events_map_by_type(kind, error_class, status) -> None:
    event = fake_api.stream_error_event(kind, "boom")
    error = stream_error("claude", event)
    assert type(error) is error_class
    assert error.details == {"provider": "claude", "status": status, "body": event}


async def test_prompt_tokens_of_message_start_survive_a_mid_stream_failure(claude) -> None:
    provider, fake = claude
    fake.push(fake_api.Reply(events=[fake_api.message_start(input_tokens=12),
                                     *fake_api.text_block(0, ["partial"])[:2],
                                     fake_api.stream_error_event()]))
    items = await collect(provider, chat([{"role": "user", "content": "hi"}]))
    end = items[-1]
    assert isinstance(items[-2], ChunkError)
    assert isinstance(end, End) and end.finish_reason == "error"
    assert end.usage.prompt_tokens == 12


async def test_stream_cut_before_message_stop_is_an_error(claude) -> None:
    provider, fake = claude
    events = fake_api.text_stream(["one", " two"])[:-2]  # no message_delta / message_stop
    fake.push(fake_api.Reply(events=events))
    items = await collect(provider, chat([{"role": "user", "content": "hi"}]))
    assert isinstance(items[-2], ChunkError)
    assert "message_stop" in items[-2].error.message
    assert isinstance(items[-1], End) and items[-1].finish_reason == "error"
