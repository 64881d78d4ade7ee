"""The vertex adapter against a loopback server speaking Vertex AI's Gemini API, with
tokens from a loopback OAuth endpoint signed for by a service-account key made here."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tako.core.errors import (
    ContextLengthExceeded,
    InvalidRequest,
    Overloaded,
    TakoError,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamTransient,
)
from tako.core.specs import DeploymentSpec
from tako.core.types import ChunkError, Delta, End
from tako.providers.vendors.vertex import VertexProvider
from tests.fakes import vertex as fake_api
from tests.support.net import serve_asgi
from tests.support.providers import built, chat_for, collect, tool_calls_by_index, weather_tool

MODEL = "gemini-2.0-flash"  # $0.10 / $0.40 per million tokens, cached $0.025
PROJECT = "tako-proj"
CLIENT_EMAIL = f"tako-gateway@{PROJECT}.iam.gserviceaccount.com"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 24


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any, Path]]:
    app, fake = fake_api.make_app()
    with serve_asgi(app) as url:
        yield url, fake, fake.service_account_file(tmp_path_factory.mktemp("gcp") / "sa.json",
                                                   url, PROJECT)


def spec(url: str, credentials_file: Path, **options: Any) -> DeploymentSpec:
    opts: dict[str, Any] = {"location": "europe-west4",
                            "credentials_file": str(credentials_file)}
    opts.update(options)
    return DeploymentSpec(name="gemini", provider="vertex", model=MODEL, base_url=url,
                          options=opts)


@pytest.fixture
async def vertex(
    server: tuple[str, fake_api.FakeVertex, Path],
) -> AsyncIterator[tuple[VertexProvider, fake_api.FakeVertex]]:
    url, fake, path = server
    fake.reset()
    fake.token_lifetime_s = 3600
    async with built(spec(url, path), VertexProvider) as provider:
        yield provider, fake


chat = chat_for("gemini")


WEATHER_TOOL = weather_tool(additionalProperties=False)


# ---- requests, responses, tokens ----


async def test_plain_chat_with_a_service_account_token(
    vertex: tuple[VertexProvider, fake_api.FakeVertex],
) -> None:
    provider, fake = vertex
    fake.push(fake_api.Turn(text="Bonjour!", usage={
        "promptTokenCount": 2000, "candidatesTokenCount": 500, "cachedContentTokenCount": 1000,
        "totalTokenCount": 2500}))
    answer = await provider.chat(chat([{"role": "user", "content": "Say hi"}], max_tokens=64,
                                      temperature=0.3, top_p=0.8, stop="END", seed=7))
    assert answer.content == "Bonjour!"
    assert answer.finish_reason == "stop"
    assert answer.model == fake_api.MODEL_VERSION
    usage = answer.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens) == (2000, 500, 1000)
    assert usage.cost_usd == pytest.approx((1000 * 0.1 + 1000 * 0.025 + 500 * 0.4) / 1e6)

    sent = fake.requests[0]
    assert (sent.method, sent.project, sent.location, sent.model) == (
        "generateContent", PROJECT, "europe-west4", MODEL)
    assert sent.headers["authorization"] == f"Bearer {fake.issued[-1]}"
    claims = fake.token_requests[-1]
    assert claims["iss"] == CLIENT_EMAIL
    assert claims["aud"].endswith("/token")
    assert "https://www.googleapis.com/auth/cloud-platform" in claims["scope"].split()
    assert sent.body == {
        "contents": [{"role": "user", "parts": [{"text": "Say hi"}]}],
        "generationConfig": {"temperature": 0.3, "topP": 0.8, "maxOutputTokens": 64,
                             "stopSequences": ["END"], "seed": 7},
    }


async def test_token_is_reused_until_it_nears_expiry(
    server: tuple[str, fake_api.FakeVertex, Path],
) -> None:
    url, fake, path = server
    fake.reset()
    fake.token_requests.clear()
    fake.token_lifetime_s = 3600
    async with built(spec(url, path), VertexProvider) as lasting:
        for _ in range(3):
            await lasting.chat(chat([{"role": "user", "content": "hi"}]))
    assert len(fake.token_requests) == 1
    assert len({r.headers["authorization"] for r in fake.requests}) == 1

    # A token within google-auth's refresh margin is replaced before each use.
    fake.token_lifetime_s = 60
    async with built(spec(url, path), VertexProvider) as short:
        for _ in range(2):
            await short.chat(chat([{"role": "user", "content": "hi"}]))
    assert len(fake.token_requests) == 3
    assert fake.requests[-1].headers["authorization"] != fake.requests[-2].headers[
        "authorization"]


async def test_a_rejected_service_account_key_is_an_auth_error(
    server: tuple[str, fake_api.FakeVertex, Path], tmp_path: Path,
) -> None:
    url, fake, _ = server
    fake.reset()
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    path = fake_api.write_service_account(tmp_path / "other.json", stranger, f"{url}/token")
    async with built(spec(url, path), VertexProvider) as provider:
        with pytest.raises(UpstreamError) as caught:
            await provider.chat(chat([{"role": "user", "content": "hi"}]))
    assert caught.value.code == "upstream_auth_error"
    assert "invalid_grant" in caught.value.message
    assert fake.requests == []


async def test_system_history_and_json_mode(
    vertex: tuple[VertexProvider, fake_api.FakeVertex],
) -> None:
    provider, fake = vertex
    await provider.chat(chat([
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "List two colours as JSON."},
    ], response_format={"type": "json_object"}))
    body = fake.requests[0].body
    assert body["systemInstruction"] == {"parts": [{"text": "Be terse."}]}
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "Hi"}]},
        {"role": "model", "parts": [{"text": "Hello."}]},
        {"role": "user", "parts": [{"text": "List two colours as JSON."}]},
    ]
    assert body["generationConfig"] == {"responseMimeType": "application/json"}
    assert "tools" not in body


async def test_tool_call_round_trip(vertex: tuple[VertexProvider, fake_api.FakeVertex]) -> None:
    provider, fake = vertex
    fake.push(fake_api.Turn(response_id="rA1", tool_calls=[
        ("get_weather", {"city": "Lyon"}), ("get_weather", {"city": "Nantes"})]))
    first = await provider.chat(chat([{"role": "user", "content": "Lyon and Nantes?"}],
                                     tools=[WEATHER_TOOL]))
    assert first.finish_reason == "tool_calls"
    assert first.content is None
    assert first.tool_calls is not None
    assert [c.id for c in first.tool_calls] == ["call_rA1_0", "call_rA1_1"]
    assert [orjson.loads(c.function.arguments) for c in first.tool_calls] == [
        {"city": "Lyon"}, {"city": "Nantes"}]
    body = fake.requests[0].body
    assert body["tools"] == [{"functionDeclarations": [{
        "name": "get_weather", "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]}}]}]
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "AUTO"}}

    fake.push(fake_api.Turn(text="Lyon is sunny, Nantes is rainy."))
    second = await provider.chat(chat([
        {"role": "user", "content": "Lyon and Nantes?"},
        first.message().model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": "call_rA1_0", "content": '{"sky": "sunny"}'},
        {"role": "tool", "tool_call_id": "call_rA1_1", "content": "rainy"},
    ], tools=[WEATHER_TOOL], tool_choice={"type": "function", "function": {"name": "get_weather"}}))
    assert second.content == "Lyon is sunny, Nantes is rainy."
    body = fake.requests[1].body
    assert body["contents"][1] == {"role": "model", "parts": [
        {"functionCall": {"name": "get_weather", "args": {"city": "Lyon"}}},
        {"functionCall": {"name": "get_weather", "args": {"city": "Nantes"}}},
    ]}
    assert body["contents"][2] == {"role": "user", "parts": [
        {"functionResponse": {"name": "get_weather", "response": {"sky": "sunny"}}},
        {"functionResponse": {"name": "get_weather", "response": {"content": "rainy"}}},
    ]}
    assert body["toolConfig"] == {"functionCallingConfig": {
        "mode": "ANY", "allowedFunctionNames": ["get_weather"]}}

    for choice, mode in (("none", "NONE"), ("required", "ANY")):
        await provider.chat(chat([{"role": "user", "content": "hi"}], tools=[WEATHER_TOOL],
                                 tool_choice=choice))
        assert fake.requests[-1].body["toolConfig"]["functionCallingConfig"] == {"mode": mode}

    with pytest.raises(InvalidRequest):
        await provider.chat(chat([
            {"role": "user", "content": "x"},
            {"role": "tool", "tool_call_id": "call_unknown", "content": "y"},
        ]))


async def test_images_inline_and_by_reference(
    vertex: tuple[VertexProvider, fake_api.FakeVertex],
) -> None:
    provider, fake = vertex
    data_url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    await provider.chat(chat([{"role": "user", "content": [
        {"type": "text", "text": "Compare"},
        {"type": "image_url", "image_url": {"url": data_url}},
        {"type": "image_url", "image_url": {"url": "https://img.example.com/a/cat.webp?s=2"}},
        {"type": "image_url", "image_url": {"url": "https://img.example.com/render"}},
    ]}]))
    parts = fake.requests[0].body["contents"][0]["parts"]
    assert parts[0] == {"text": "Compare"}
    assert parts[1]["inlineData"]["mimeType"] == "image/png"
    assert base64.b64decode(parts[1]["inlineData"]["data"]) == PNG
    assert parts[2] == {"fileData": {"mimeType": "image/webp",
                                     "fileUri": "https://img.example.com/a/cat.webp?s=2"}}
    assert parts[3] == {"fileData": {"mimeType": "image/jpeg",
                                     "fileUri": "https://img.example.com/render"}}


# ---- streaming ----


async def test_stream_text_skips_thoughts_and_counts_them(
    vertex: tuple[VertexProvider, fake_api.FakeVertex],
) -> None:
    provider, fake = vertex
    fake.push(fake_api.Turn(text="Gemini streams text.", pieces=4, thought="Let me think.",
                            usage={"promptTokenCount": 30, "candidatesTokenCount": 10,
                                   "thoughtsTokenCount": 40, "totalTokenCount": 80}))
    items = await collect(provider, chat([{"role": "user", "content": "go"}]))
    deltas = [i for i in items if isinstance(i, Delta)]
    assert len(deltas) == 4
    assert "".join(d.content or "" for d in deltas) == "Gemini streams text."
    end = items[-1]
    assert isinstance(end, End) and sum(isinstance(i, End) for i in items) == 1
    assert end.finish_reason == "stop"
    assert (end.usage.prompt_tokens, end.usage.completion_tokens,
            end.usage.reasoning_tokens) == (30, 50, 40)
    assert end.usage.cost_usd == pytest.approx((30 * 0.1 + 50 * 0.4) / 1e6)
    sent = fake.requests[0]
    assert (sent.method, sent.query) == ("streamGenerateContent", "alt=sse")
    assert sent.headers["authorization"] == f"Bearer {fake.issued[-1]}"


async def test_stream_tool_calls_keep_the_non_stream_ids(
    vertex: tuple[VertexProvider, fake_api.FakeVertex],
) -> None:
    provider, fake = vertex
    turn = fake_api.Turn(response_id="rB2", text="Checking.", tool_calls=[
        ("get_weather", {"city": "Lyon", "note": 'a "quoted" word'}),
        ("get_weather", {"city": "Nantes"})])
    fake.push(turn)
    items = await collect(provider, chat([{"role": "user", "content": "?"}],
                                         tools=[WEATHER_TOOL]))
    calls = tool_calls_by_index(items)
    assert sorted(calls) == [0, 1]
    assert orjson.loads(calls[0]["arguments"]) == {"city": "Lyon", "note": 'a "quoted" word'}
    assert orjson.loads(calls[1]["arguments"]) == {"city": "Nantes"}
    end = items[-1]
    assert isinstance(end, End) and end.finish_reason == "tool_calls"

    fake.push(turn)
    answer = await provider.chat(chat([{"role": "user", "content": "?"}], tools=[WEATHER_TOOL]))
    assert answer.tool_calls is not None
    assert [c.id for c in answer.tool_calls] == [calls[0]["id"], calls[1]["id"]]
    assert answer.content == "Checking."


# ---- errors ----


@pytest.mark.parametrize(
    ("code", "status", "message", "expected", "tako_code"),
    [
        (429, "RESOURCE_EXHAUSTED", "Resource exhausted. Please try again later.",
         UpstreamRateLimited, "upstream_rate_limited"),
        (400, "INVALID_ARGUMENT", "The input token count (1200000) exceeds the maximum "
         "number of tokens allowed (1048576).", ContextLengthExceeded, "context_length_exceeded"),
        (400, "INVALID_ARGUMENT", "Unable to submit request because it has an empty text "
         "parameter.", InvalidRequest, "upstream_invalid_request"),
        (403, "PERMISSION_DENIED", "Permission 'aiplatform.endpoints.predict' denied.",
         UpstreamError, "upstream_auth_error"),
        (404, "NOT_FOUND", "Publisher Model `gemini-9` was not found.", UpstreamError,
         "upstream_not_found"),
        (503, "UNAVAILABLE", "The service is currently unavailable.", Overloaded,
         "upstream_overloaded"),
        (500, "INTERNAL", "Internal error encountered.", UpstreamTransient, "upstream_error"),
        (504, "DEADLINE_EXCEEDED", "Deadline exceeded.", UpstreamTimeout, "upstream_timeout"),
    ],
)
async def test_vendor_errors_map_to_tako_errors(
    vertex: tuple[VertexProvider, fake_api.FakeVertex], code: int, status: str, message: str,
    expected: type[TakoError], tako_code: str,
) -> None:
    provider, fake = vertex
    fake.push(fake_api.Failure(code, status, message))
    with pytest.raises(expected) as caught:
        await provider.chat(chat([{"role": "user", "content": "hi"}]))
    error = caught.value
    assert type(error) is expected
    assert error.code == tako_code
    assert message in error.message and status in error.message and "gemini" in error.message
    assert error.details is not None
    assert error.details["status"] == code
    assert error.details["error_status"] == status
    assert error.details["body"] == fake_api.error_body(code, status, message)


async def test_stream_failure_before_the_first_chunk_raises(
    vertex: tuple[VertexProvider, fake_api.FakeVertex],
) -> None:
    provider, fake = vertex
    fake.push(fake_api.Failure(429, "RESOURCE_EXHAUSTED", "Quota exceeded.",
                               headers={"retry-after": "2"}))
    with pytest.raises(UpstreamRateLimited) as caught:
        await collect(provider, chat([{"role": "user", "content": "hi"}]))
    assert caught.value.retry_after == 2
    fake.push(fake_api.Turn(text="never", error_after=0,
                            error=(503, "UNAVAILABLE", "Model overloaded.")))
    with pytest.raises(Overloaded):
        await collect(provider, chat([{"role": "user", "content": "hi"}]))


async def test_prompt_tokens_reported_before_a_mid_stream_failure_are_kept(
    vertex: tuple[VertexProvider, fake_api.FakeVertex],
) -> None:
    provider, fake = vertex
    fake.push(fake_api.Turn(text="abcdefghi", pieces=3, error_after=2))
    items = await collect(provider, chat([{"role": "user", "content": "hi"}]))
    end = items[-1]
    assert isinstance(items[-2], ChunkError)
    assert isinstance(end, End) and end.finish_reason == "error"
    assert end.usage.prompt_tokens == 11  # from the chunks before the error


async def test_a_malformed_key_file_is_an_auth_error(
    server: tuple[str, fake_api.FakeVertex, Path], tmp_path: Path,
) -> None:
    url, fake, _ = server
    fake.reset()
    broken = tmp_path / "broken.json"
    broken.write_text('{"type": "service_account", "client_email": "x@y"}')
    async with built(spec(url, broken), VertexProvider) as provider:
        with pytest.raises(UpstreamError) as caught:
            await provider.chat(chat([{"role": "user", "content": "hi"}]))
    assert caught.value.code == "upstream_auth_error"
    assert fake.requests == []
