"""The bedrock adapter against a loopback server speaking Bedrock's Converse wire format."""

from __future__ import annotations

import base64
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from botocore.credentials import Credentials
from botocore.eventstream import EventStreamBuffer
from opentelemetry.sdk.trace import TracerProvider

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
from tako.core.types import Delta
from tako.providers.eventstream import EventStreamDecoder, EventStreamError
from tako.providers.registry import build
from tako.providers.vendors.bedrock import BedrockProvider, sign_request
from tests.fakes import bedrock as fake_api
from tests.support.providers import WEATHER_TOOL, built, chat_for, collect
from tests.support.upstreams import served

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"  # $0.25 / $1.25 per million tokens
ACCESS_KEY = "AKIDTAKOTEST"
SECRET_KEY = "tako/secret+key/for/loopback/tests"
SESSION_TOKEN = "session-token-from-the-profile"
REGION = "eu-west-3"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 24


server = served(fake_api.make_app, name="server")


@pytest.fixture(scope="module")
def credentials_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("aws") / "credentials"
    path.write_text(
        "[tako-test]\n"
        f"aws_access_key_id = {ACCESS_KEY}\n"
        f"aws_secret_access_key = {SECRET_KEY}\n"
        f"aws_session_token = {SESSION_TOKEN}\n"
    )
    return path


def spec(url: str, credentials_file: Path, **options: Any) -> DeploymentSpec:
    opts: dict[str, Any] = {"endpoint_url": url, "region": REGION, "profile": "tako-test",
                            "credentials_file": str(credentials_file)}
    opts.update(options)
    return DeploymentSpec(name="haiku", provider="bedrock", model=MODEL, options=opts)


@pytest.fixture
async def bedrock(
    server: tuple[str, fake_api.FakeBedrock], credentials_file: Path,
) -> AsyncIterator[tuple[BedrockProvider, fake_api.FakeBedrock]]:
    url, fake = server
    fake.reset()
    async with built(spec(url, credentials_file), BedrockProvider) as provider:
        yield provider, fake


chat = chat_for("haiku")


# ---- signing and framing ----


def test_signer_reproduces_the_published_sigv4_test_vectors() -> None:
    # AWS Signature Version 4 test suite: get-vanilla and post-vanilla.
    creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    when = datetime(2015, 8, 30, 12, 36, tzinfo=UTC)
    scope = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
    expected = {
        "GET": "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        "POST": "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
    }
    for method, signature in expected.items():
        headers = sign_request(creds, "us-east-1", method, "https://example.amazonaws.com/",
                               {}, b"", service="service", when=when)
        assert headers["X-Amz-Date"] == "20150830T123600Z"
        assert headers["Authorization"] == (
            scope + f"SignedHeaders=host;x-amz-date, Signature={signature}")


def test_event_stream_frames_decode_in_any_split_and_agree_with_botocore() -> None:
    frames = b"".join(fake_api.event_frame(kind, body)
                      for kind, body in fake_api.stream_events(
                          fake_api.Turn(text="héllo wörld", tool_calls=[("t1", "f", {"a": 1})])))
    ours = EventStreamDecoder()
    decoded = []
    rng = random.Random(7)
    pos = 0
    while pos < len(frames):
        step = rng.randint(1, 40)
        decoded.extend(ours.feed(frames[pos : pos + step]))
        pos += step
    assert ours.pending == 0
    reference = EventStreamBuffer()
    reference.add_data(frames)
    theirs = list(reference)
    assert len(decoded) == len(theirs) == 12
    for mine, other in zip(decoded, theirs, strict=True):
        assert mine.headers == other.headers
        assert mine.payload == other.payload
    assert decoded[1].event_type == "contentBlockDelta"
    corrupted = bytearray(frames)
    corrupted[20] ^= 0xFF
    with pytest.raises(EventStreamError):
        EventStreamDecoder().feed(bytes(corrupted))


# ---- requests and responses ----


async def test_plain_chat_is_signed_and_priced(bedrock: tuple[BedrockProvider, Any]) -> None:
    provider, fake = bedrock
    fake.push(fake_api.Turn(text="Bonjour!", usage={"inputTokens": 1000, "outputTokens": 400,
                                                    "totalTokens": 1400}))
    answer = await provider.chat(chat([{"role": "user", "content": "Say hi"}], max_tokens=64,
                                      temperature=0.2, top_p=0.9, stop=["END"]))
    assert answer.content == "Bonjour!"
    assert answer.finish_reason == "stop"
    assert answer.tool_calls is None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (1000, 400)
    assert answer.usage.cost_usd == pytest.approx((1000 * 0.25 + 400 * 1.25) / 1e6)

    sent = fake.requests[0]
    assert sent.action == "converse"
    assert sent.raw_path == f"/model/{MODEL}/converse"
    assert sent.headers["authorization"].startswith(
        f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/")
    assert f"/{REGION}/bedrock/aws4_request" in sent.headers["authorization"]
    assert sent.headers["x-amz-security-token"] == SESSION_TOKEN
    assert fake_api.signature_ok(sent, SECRET_KEY, REGION)
    assert not fake_api.signature_ok(sent, SECRET_KEY + "x", REGION)
    assert sent.body == {
        "messages": [{"role": "user", "content": [{"text": "Say hi"}]}],
        "inferenceConfig": {"maxTokens": 64, "temperature": 0.2, "topP": 0.9,
                            "stopSequences": ["END"]},
    }


async def test_cached_tokens_count_in_the_prompt_and_price_lower(
    bedrock: tuple[BedrockProvider, Any],
) -> None:
    provider, fake = bedrock
    fake.push(fake_api.Turn(text="ok", usage={"inputTokens": 100, "outputTokens": 10,
                                              "cacheReadInputTokens": 900,
                                              "totalTokens": 1010}))
    answer = await provider.chat(chat([{"role": "user", "content": "hi"}]))
    assert answer.usage.prompt_tokens == 1000
    assert answer.usage.cached_tokens == 900


async def test_system_and_history_alternate_roles(bedrock: tuple[BedrockProvider, Any]) -> None:
    provider, fake = bedrock
    await provider.chat(chat([
        {"role": "system", "content": "Be terse."},
        {"role": "developer", "content": "Answer in French."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Salut."},
        {"role": "user", "content": [{"type": "text", "text": "And"},
                                     {"type": "text", "text": " again?"}]},
    ]))
    body = fake.requests[0].body
    assert body["system"] == [{"text": "Be terse."}, {"text": "Answer in French."}]
    assert body["messages"] == [
        {"role": "user", "content": [{"text": "Hi"}]},
        {"role": "assistant", "content": [{"text": "Salut."}]},
        {"role": "user", "content": [{"text": "And"}, {"text": " again?"}]},
    ]
    assert "toolConfig" not in body


async def test_tool_call_round_trip(bedrock: tuple[BedrockProvider, Any]) -> None:
    provider, fake = bedrock
    fake.push(fake_api.Turn(text="Let me check.",
                            tool_calls=[("tooluse_abc123", "get_weather", {"city": "Lyon"})]))
    first = await provider.chat(chat([{"role": "user", "content": "Weather in Lyon?"}],
                                     tools=[WEATHER_TOOL], tool_choice="required"))
    assert first.finish_reason == "tool_calls"
    assert first.content == "Let me check."
    assert first.tool_calls is not None and len(first.tool_calls) == 1
    call = first.tool_calls[0]
    assert (call.id, call.function.name) == ("tooluse_abc123", "get_weather")
    assert orjson.loads(call.function.arguments) == {"city": "Lyon"}
    tool_config = fake.requests[0].body["toolConfig"]
    assert tool_config == {
        "tools": [{"toolSpec": {"name": "get_weather", "description": "Current weather for a city",
                                "inputSchema": {"json": WEATHER_TOOL["function"]["parameters"]}}}],
        "toolChoice": {"any": {}},
    }

    fake.push(fake_api.Turn(text="Sunny, 21°C."))
    second = await provider.chat(chat([
        {"role": "user", "content": "Weather in Lyon?"},
        first.message().model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": "tooluse_abc123", "content": "sunny, 21C"},
        {"role": "user", "content": "Thanks, and in one word?"},
    ], tools=[WEATHER_TOOL], tool_choice={"type": "function", "function": {"name": "get_weather"}}))
    assert second.content == "Sunny, 21°C."
    body = fake.requests[1].body
    assert body["toolConfig"]["toolChoice"] == {"tool": {"name": "get_weather"}}
    assert body["messages"][1] == {"role": "assistant", "content": [
        {"text": "Let me check."},
        {"toolUse": {"toolUseId": "tooluse_abc123", "name": "get_weather",
                     "input": {"city": "Lyon"}}},
    ]}
    # The tool result and the next user text merge into one user turn.
    assert body["messages"][2] == {"role": "user", "content": [
        {"toolResult": {"toolUseId": "tooluse_abc123", "content": [{"text": "sunny, 21C"}],
                        "status": "success"}},
        {"text": "Thanks, and in one word?"},
    ]}
    assert len(body["messages"]) == 3

    await provider.chat(chat([{"role": "user", "content": "hi"}], tools=[WEATHER_TOOL],
                             tool_choice="none"))
    assert "toolConfig" not in fake.requests[2].body


async def test_image_from_a_data_url(bedrock: tuple[BedrockProvider, Any]) -> None:
    provider, fake = bedrock
    data_url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    await provider.chat(chat([{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": data_url}},
    ]}]))
    image = fake.requests[0].body["messages"][0]["content"][1]["image"]
    assert image["format"] == "png"
    assert base64.b64decode(image["source"]["bytes"]) == PNG


async def test_image_url_is_fetched_through_the_guard(
    server: tuple[str, fake_api.FakeBedrock], credentials_file: Path,
) -> None:
    url, fake = server
    fake.reset()
    fake.images["cat.png"] = ("image/png", PNG)
    message = [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": f"{url}/images/cat.png"}}]}]
    guarded = build(spec(url, credentials_file))
    try:
        with pytest.raises(InvalidRequest):  # loopback is blocked by default
            await guarded.chat(chat(message))
        assert fake.requests == []
    finally:
        await guarded.aclose()
    allowed = build(spec(url, credentials_file, image_fetch={"allowlist": ["127.0.0.1/32"]}))
    try:
        await allowed.chat(chat(message))
    finally:
        await allowed.aclose()
    image = fake.requests[0].body["messages"][0]["content"][0]["image"]
    assert image["format"] == "png"
    assert base64.b64decode(image["source"]["bytes"]) == PNG


# ---- streaming ----


async def test_stream_request_is_signed(bedrock: tuple[BedrockProvider, Any]) -> None:
    provider, fake = bedrock
    fake.push(fake_api.Turn(text="Streaming from Bedrock works."))
    items = await collect(provider, chat([{"role": "user", "content": "go"}]))
    assert "".join(i.content or "" for i in items if isinstance(i, Delta)) == (
        "Streaming from Bedrock works.")
    sent = fake.requests[0]
    assert sent.action == "converse-stream"
    assert sent.raw_path == f"/model/{MODEL}/converse-stream"
    assert sent.headers["accept"] == "application/vnd.amazon.eventstream"
    assert fake_api.signature_ok(sent, SECRET_KEY, REGION)
    assert not fake_api.signature_ok(sent, SECRET_KEY + "x", REGION)


async def test_a_traced_request_carries_its_traceparent_and_stays_signed(
    bedrock: tuple[BedrockProvider, Any],
) -> None:
    provider, fake = bedrock
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("tako.provider.chat") as span:
        await provider.chat(chat([{"role": "user", "content": "hi"}]))
    sent = fake.requests[0]
    trace_id = format(span.get_span_context().trace_id, "032x")
    assert sent.headers["traceparent"].split("-")[1] == trace_id
    assert fake_api.signature_ok(sent, SECRET_KEY, REGION)


# ---- errors ----


@pytest.mark.parametrize(
    ("status", "error_type", "message", "expected", "code"),
    [
        (429, "ThrottlingException", "Too many requests, please wait before trying again.",
         UpstreamRateLimited, "upstream_rate_limited"),
        (400, "ValidationException", "Input is too long for requested model.",
         ContextLengthExceeded, "context_length_exceeded"),
        (400, "ValidationException", "temperature: must be between 0 and 1",
         InvalidRequest, "upstream_invalid_request"),
        (403, "AccessDeniedException",
         "You don't have access to the model with the specified model ID.",
         UpstreamError, "upstream_auth_error"),
        (404, "ResourceNotFoundException", "Could not resolve the foundation model.",
         UpstreamError, "upstream_not_found"),
        (503, "ServiceUnavailableException", "Service is temporarily unavailable.",
         Overloaded, "upstream_overloaded"),
        (429, "ModelNotReadyException", "Model is not ready to serve inference requests.",
         Overloaded, "upstream_overloaded"),
        (408, "ModelTimeoutException", "Model timed out.", UpstreamTimeout, "upstream_timeout"),
        (500, "InternalServerException", "Internal server error", UpstreamTransient,
         "upstream_error"),
    ],
)
async def test_vendor_errors_map_to_tako_errors(
    bedrock: tuple[BedrockProvider, Any], status: int, error_type: str, message: str,
    expected: type[TakoError], code: str,
) -> None:
    provider, fake = bedrock
    fake.push(fake_api.Failure(status, error_type, message))
    with pytest.raises(expected) as caught:
        await provider.chat(chat([{"role": "user", "content": "hi"}]))
    error = caught.value
    assert type(error) is expected
    assert error.code == code
    assert message in error.message and error_type in error.message
    assert "haiku" in error.message
    assert error.details is not None
    assert error.details["status"] == status
    assert error.details["error_type"] == error_type
    assert error.details["body"] == {"message": message}


async def test_stream_failure_before_the_first_chunk_raises(
    bedrock: tuple[BedrockProvider, Any],
) -> None:
    provider, fake = bedrock
    fake.push(fake_api.Failure(429, "ThrottlingException", "Too many requests",
                               headers={"retry-after": "3"}))
    with pytest.raises(UpstreamRateLimited) as caught:
        await collect(provider, chat([{"role": "user", "content": "hi"}]))
    assert caught.value.retry_after == 3
    # An exception frame before any content also raises, so fallbacks can act.
    fake.push(fake_api.Turn(text="never sent", exception_after=1,
                            exception=("throttlingException", "Too many tokens")))
    with pytest.raises(UpstreamRateLimited):
        await collect(provider, chat([{"role": "user", "content": "hi"}]))


async def test_credentials_from_the_environment(
    server: tuple[str, fake_api.FakeBedrock], monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, fake = server
    fake.reset()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDFROMENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.setenv("AWS_REGION", "ap-south-1")
    provider = build(DeploymentSpec(name="nova", provider="bedrock", model=MODEL,
                                    options={"endpoint_url": url}))
    try:
        answer = await provider.chat(chat([{"role": "user", "content": "hi"}]))
    finally:
        await provider.aclose()
    assert answer.content == "Hello from Bedrock"
    sent = fake.requests[0]
    assert "Credential=AKIDFROMENV/" in sent.headers["authorization"]
    assert "x-amz-security-token" not in sent.headers
    assert fake_api.signature_ok(sent, "env-secret", "ap-south-1")


async def test_an_unknown_profile_is_an_auth_error_before_any_request(
    server: tuple[str, fake_api.FakeBedrock], credentials_file: Path,
) -> None:
    url, fake = server
    fake.reset()
    no_profile = spec(url, credentials_file, profile="no-such-profile")
    async with built(no_profile, BedrockProvider) as provider:
        with pytest.raises(UpstreamError) as caught:
            await provider.chat(chat([{"role": "user", "content": "hi"}]))
    assert caught.value.code == "upstream_auth_error"
    assert "no-such-profile" in caught.value.message
    assert fake.requests == []


# ---- Anthropic fields: Claude models only ----


async def test_anthropic_fields_reach_only_claude_models(
    server: tuple[str, fake_api.FakeBedrock], credentials_file: Path,
) -> None:
    """top_k, thinking, thinking_blocks and cache_control become Converse fields for a
    Claude model id; another model (Nova) is sent none of them."""
    url, fake = server
    request = {"top_k": 5, "thinking": {"type": "enabled", "budget_tokens": 1024},
               "tools": [{"type": "function", "function": {**WEATHER_TOOL["function"],
                                                           "cache_control": {"type": "x"}}}]}
    messages = [{"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello.",
                 "thinking_blocks": [{"type": "redacted_thinking", "data": "opaque"}]},
                {"role": "user", "content": [{"type": "text", "text": "Weather?",
                                              "cache_control": {"type": "ephemeral"}}]}]
    sent = {}
    for model in (MODEL, "us.amazon.nova-pro-v1:0"):
        fake.reset()
        deployment = spec(url, credentials_file).model_copy(update={"model": model})
        async with built(deployment, BedrockProvider) as provider:
            await provider.chat(chat(messages, **request))
        sent[model] = fake.requests[0].body
    claude, nova = sent[MODEL], sent["us.amazon.nova-pro-v1:0"]
    assert claude["additionalModelRequestFields"] == {"top_k": 5, "thinking": request[
        "thinking"]}
    assert claude["messages"][1]["content"][0] == {
        "reasoningContent": {"redactedContent": "opaque"}}
    assert claude["messages"][2]["content"][-1] == {"cachePoint": {"type": "default"}}
    assert claude["toolConfig"]["tools"][-1] == {"cachePoint": {"type": "default"}}
    assert "additionalModelRequestFields" not in nova
    assert b"reasoningContent" not in orjson.dumps(nova)
    assert b"cachePoint" not in orjson.dumps(nova)
