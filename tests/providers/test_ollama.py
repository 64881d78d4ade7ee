"""The ollama adapter against a loopback server speaking Ollama's /api/chat wire format."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tako.core.errors import InvalidRequest, TakoError, UpstreamError, UpstreamTransient
from tako.core.protocols import LlmProvider
from tako.core.specs import DeploymentSpec, Price
from tako.core.types import ChatChunk, ChatRequest, ChunkError, Delta, End
from tako.providers.registry import build
from tako.providers.vendors.ollama import OllamaProvider
from tests.fakes import ollama as fake
from tests.support import providers as support
from tests.support.images import PNG
from tests.support.net import serve_asgi
from tests.support.providers import WEATHER_TOOL


async def cat(request: Request) -> Response:
    return Response(PNG, media_type="image/png")


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[str, fake.FakeOllama, str]]:
    app, controller = fake.make_app()
    images = Starlette(routes=[Route("/cat.png", cat)])
    with serve_asgi(app) as ollama_url, serve_asgi(images) as image_url:
        yield ollama_url, controller, image_url


@pytest.fixture
def ollama(servers: tuple[str, fake.FakeOllama, str]) -> fake.FakeOllama:
    servers[1].reset()
    return servers[1]


@pytest.fixture
def image_base(servers: tuple[str, fake.FakeOllama, str]) -> str:
    return servers[2]


def spec(base_url: str, **overrides: Any) -> DeploymentSpec:
    values: dict[str, Any] = {
        "name": "local-llama",
        "provider": "ollama",
        "model": "llama3.2",
        "base_url": base_url,
        "options": {"image_fetch": {"allowlist": ["127.0.0.1/32"]}},
    }
    values.update(overrides)
    return DeploymentSpec(**values)


@pytest.fixture
async def provider(servers: tuple[str, fake.FakeOllama, str]) -> AsyncIterator[OllamaProvider]:
    async with support.built(spec(servers[0]), OllamaProvider) as ollama_provider:
        yield ollama_provider


def request(*messages: dict[str, Any], **fields: Any) -> ChatRequest:
    return ChatRequest(model="local-llama", messages=list(messages), **fields)


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


async def collect(stream: AsyncIterator[ChatChunk]) -> list[ChatChunk]:
    return [item async for item in stream]


PARIS = ("get_weather", {"city": "Paris"})
OSLO = ("get_weather", {"city": "Oslo"})
ROME = ("get_weather", {"city": "Rome"})


# ---- non-streaming ----


async def test_plain_chat(provider: OllamaProvider, ollama: fake.FakeOllama) -> None:
    ollama.push(fake.text("Hello ", "there!", prompt=9, completion=3))
    answer = await provider.chat(request(user("Hi")))
    assert answer.content == "Hello there!"
    assert answer.finish_reason == "stop"
    assert answer.tool_calls is None
    assert answer.provider_id == "local-llama"
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (9, 3)
    sent = ollama.last
    assert sent.path == "/api/chat"
    assert sent.body == {
        "model": "llama3.2",
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": False,
    }
    body = answer.to_openai()
    assert body["choices"][0]["message"]["content"] == "Hello there!"


async def test_system_history_and_sampling_options(
    servers: tuple[str, fake.FakeOllama, str], ollama: fake.FakeOllama
) -> None:
    options = {"keep_alive": "10m", "model_options": {"num_ctx": 8192, "temperature": 0.1}}
    provider = OllamaProvider(spec(servers[0], options=options))
    try:
        await provider.chat(
            request(
                {"role": "system", "content": "Be terse."},
                {"role": "developer", "content": "Answer in French."},
                user("What is 2+2?"),
                {"role": "assistant", "content": "4"},
                user([{"type": "text", "text": "And 3+3?"}]),
                temperature=0.7, top_p=0.9, max_tokens=64, stop=["\n\n"], seed=42,
                response_format={"type": "json_object"},
            )
        )
    finally:
        await provider.aclose()
    body = ollama.last.body
    assert body["messages"] == [
        {"role": "system", "content": "Be terse."},
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3+3?"},
    ]
    assert body["options"] == {
        "num_ctx": 8192, "temperature": 0.7, "top_p": 0.9, "num_predict": 64,
        "stop": ["\n\n"], "seed": 42,
    }
    assert body["format"] == "json"
    assert body["keep_alive"] == "10m"


async def test_json_schema_response_format_becomes_format(
    provider: OllamaProvider, ollama: fake.FakeOllama
) -> None:
    schema = {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}
    ollama.push(fake.text('{"age": 22}'))
    answer = await provider.chat(
        request(user("How old?"), max_completion_tokens=20,
                response_format={"type": "json_schema",
                                 "json_schema": {"name": "age", "schema": schema}})
    )
    assert answer.content == '{"age": 22}'
    assert ollama.last.body["format"] == schema
    assert ollama.last.body["options"] == {"num_predict": 20}


async def test_length_finish(provider: OllamaProvider, ollama: fake.FakeOllama) -> None:
    ollama.push(fake.text("cut", done_reason="length"))
    answer = await provider.chat(request(user("Tell me everything"), max_tokens=1))
    assert answer.finish_reason == "length"


async def test_tool_call_round_trip(provider: OllamaProvider, ollama: fake.FakeOllama) -> None:
    ollama.push(fake.tool_calls(PARIS, OSLO))
    first = await provider.chat(request(user("Weather in Paris and Oslo?"), tools=[WEATHER_TOOL]))
    assert ollama.last.body["tools"] == [WEATHER_TOOL]
    assert first.finish_reason == "tool_calls"
    assert first.content is None
    assert first.tool_calls is not None and len(first.tool_calls) == 2
    paris, oslo = first.tool_calls
    assert paris.function.name == "get_weather"
    assert orjson.loads(paris.function.arguments) == {"city": "Paris"}
    assert orjson.loads(oslo.function.arguments) == {"city": "Oslo"}
    assert paris.id.startswith("call_") and paris.id != oslo.id

    # The same answer replayed gets the same ids (stable), so clients can match results.
    ollama.push(fake.tool_calls(PARIS, OSLO))
    again = await provider.chat(request(user("Weather in Paris and Oslo?"), tools=[WEATHER_TOOL]))
    assert [c.id for c in again.tool_calls or ()] == [paris.id, oslo.id]

    ollama.push(fake.text("Paris is sunny, Oslo is cold."))
    final = await provider.chat(
        request(
            user("Weather in Paris and Oslo?"),
            first.message().model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": paris.id, "content": "sunny, 24C"},
            {"role": "tool", "tool_call_id": oslo.id, "content": "cold, 2C"},
            tools=[WEATHER_TOOL],
        )
    )
    assert final.content == "Paris is sunny, Oslo is cold."
    assert final.finish_reason == "stop"
    messages = ollama.last.body["messages"]
    assert messages[1] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
            {"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}},
        ],
    }
    assert messages[2] == {"role": "tool", "content": "sunny, 24C", "tool_name": "get_weather"}
    assert messages[3] == {"role": "tool", "content": "cold, 2C", "tool_name": "get_weather"}


async def test_tool_choice_none_sends_no_tools(
    provider: OllamaProvider, ollama: fake.FakeOllama
) -> None:
    await provider.chat(request(user("hi"), tools=[WEATHER_TOOL], tool_choice="none"))
    assert "tools" not in ollama.last.body


async def test_invalid_tool_arguments_are_refused(
    provider: OllamaProvider, ollama: fake.FakeOllama
) -> None:
    bad_call = {"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{not json"}}
    with pytest.raises(InvalidRequest, match="not JSON"):
        await provider.chat(
            request(user("x"), {"role": "assistant", "tool_calls": [bad_call]},
                    {"role": "tool", "tool_call_id": "call_1", "content": "r"})
        )
    assert ollama.requests == []


# ---- images ----


def image_message(url: str) -> dict[str, Any]:
    return user([{"type": "text", "text": "What is in this picture?"},
                 {"type": "image_url", "image_url": {"url": url}}])


async def test_data_url_image_is_sent_as_base64(
    provider: OllamaProvider, ollama: fake.FakeOllama
) -> None:
    data_url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    await provider.chat(request(image_message(data_url)))
    message = ollama.last.body["messages"][0]
    assert message["content"] == "What is in this picture?"
    assert [base64.b64decode(i) for i in message["images"]] == [PNG]


async def test_http_image_is_fetched_through_the_guard(
    provider: OllamaProvider, ollama: fake.FakeOllama, image_base: str
) -> None:
    await provider.chat(request(image_message(f"{image_base}/cat.png")))
    images = ollama.last.body["messages"][0]["images"]
    assert [base64.b64decode(i) for i in images] == [PNG]


async def test_http_image_outside_the_allowlist_is_refused(
    servers: tuple[str, fake.FakeOllama, str], ollama: fake.FakeOllama, image_base: str
) -> None:
    guarded = OllamaProvider(spec(servers[0], options={}))
    try:
        with pytest.raises(InvalidRequest, match="loopback") as info:
            await guarded.chat(request(image_message(f"{image_base}/cat.png")))
        assert info.value.param == "messages"
        with pytest.raises(InvalidRequest):
            await collect(guarded.stream(request(image_message(f"{image_base}/cat.png"))))
    finally:
        await guarded.aclose()
    assert ollama.requests == []  # nothing reached the model


async def test_non_image_data_url_is_refused(
    provider: OllamaProvider, ollama: fake.FakeOllama
) -> None:
    with pytest.raises(InvalidRequest, match="not an image"):
        await provider.chat(request(image_message("data:text/plain;base64,aGk=")))
    assert ollama.requests == []


# ---- streaming ----


async def test_streaming_tool_calls(provider: OllamaProvider, ollama: fake.FakeOllama) -> None:
    ollama.push(fake.tool_calls(PARIS, ROME, content="Let me check."))
    items = await collect(provider.stream(request(user("Paris and Rome?"), tools=[WEATHER_TOOL])))
    deltas = [i for i in items if isinstance(i, Delta)]
    assert deltas[0].content == "Let me check."
    calls = [c for d in deltas for c in d.tool_calls or ()]
    assert [c.index for c in calls] == [0, 1]
    assert [orjson.loads(c.arguments or "") for c in calls] == [{"city": "Paris"}, {"city": "Rome"}]
    assert all(c.name == "get_weather" and (c.id or "").startswith("call_") for c in calls)
    end = items[-1]
    assert isinstance(end, End) and end.finish_reason == "tool_calls"

    # Streaming and non-streaming give the same call ids for the same answer.
    ollama.push(fake.tool_calls(PARIS, ROME, content="Let me check."))
    answer = await provider.chat(request(user("Paris and Rome?"), tools=[WEATHER_TOOL]))
    assert [c.id for c in answer.tool_calls or ()] == [c.id for c in calls]


# ---- usage and cost ----


async def test_cost_from_price_override(
    servers: tuple[str, fake.FakeOllama, str], ollama: fake.FakeOllama
) -> None:
    priced = OllamaProvider(spec(servers[0], price=Price(input=1.0, output=2.0)))
    try:
        ollama.push(fake.text("a", prompt=1_000, completion=500))
        answer = await priced.chat(request(user("hi")))
        ollama.push(fake.text("a", "b", prompt=2_000, completion=1_000))
        items = await collect(priced.stream(request(user("hi"))))
    finally:
        await priced.aclose()
    assert answer.usage.cost_usd == pytest.approx(0.002)
    end = items[-1]
    assert isinstance(end, End) and end.usage.cost_usd == pytest.approx(0.004)
    assert priced.estimate_cost_usd(1_000_000, 0) == pytest.approx(1.0)


async def test_local_model_costs_nothing_by_default(
    provider: OllamaProvider, ollama: fake.FakeOllama
) -> None:
    ollama.push(fake.text("free", prompt=5_000, completion=5_000))
    answer = await provider.chat(request(user("hi")))
    assert answer.usage.total_tokens == 10_000
    assert answer.usage.cost_usd == 0.0


# ---- errors ----


@pytest.mark.parametrize(
    ("status", "message", "error_class", "code"),
    [
        (404, "model 'llama9' not found, try pulling it", UpstreamError, "upstream_not_found"),
        (400, "invalid options", InvalidRequest, "upstream_invalid_request"),
        (500, "llama runner process has terminated", UpstreamTransient, "upstream_error"),
    ],
)
async def test_http_errors_are_mapped(
    provider: OllamaProvider,
    ollama: fake.FakeOllama,
    status: int,
    message: str,
    error_class: type[TakoError],
    code: str,
) -> None:
    for call in ("chat", "stream"):
        ollama.push(fake.error(status, message))
        with pytest.raises(error_class) as info:
            if call == "chat":
                await provider.chat(request(user("hi")))
            else:
                await collect(provider.stream(request(user("hi"))))
        error = info.value
        assert error.code == code
        assert message in error.message and "local-llama" in error.message
        assert error.details is not None and error.details["status"] == status
        assert error.details["body"] == {"error": message}
        assert error.retryable is (status >= 500)


async def test_stream_ending_without_done_is_an_error(
    provider: OllamaProvider, ollama: fake.FakeOllama
) -> None:
    first = {"model": "llama3.2", "created_at": fake.CREATED_AT,
             "message": {"role": "assistant", "content": "Half"}, "done": False}
    ollama.push(fake.Reply(lines=[first]))
    items = await collect(provider.stream(request(user("hi"))))
    assert isinstance(items[1], ChunkError)
    assert items[1].error.code == "upstream_stream_incomplete"
    assert isinstance(items[2], End) and len(items) == 3


async def test_dropped_connection_before_first_chunk_raises(
    provider: OllamaProvider, ollama: fake.FakeOllama
) -> None:
    reply = fake.text("never sent")
    reply.drop_after = 0
    ollama.push(reply)
    with pytest.raises(UpstreamTransient):
        await collect(provider.stream(request(user("hi"))))


async def test_registered_and_satisfies_the_provider_protocol(
    servers: tuple[str, fake.FakeOllama, str],
) -> None:
    built = build(spec(servers[0], options={}))
    try:
        assert isinstance(built, OllamaProvider) and isinstance(built, LlmProvider)
        assert built.url == servers[0] + "/api/chat"
        assert OllamaProvider(spec(None)).url == "http://127.0.0.1:11434/api/chat"
    finally:
        await built.aclose()
