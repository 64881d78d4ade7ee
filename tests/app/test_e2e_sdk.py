"""The foundation end to end: a real ``tako serve`` process, the official openai SDK."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest

from tests.fakes.openai import FakeOpenAI, Reply
from tests.support.gateway import TEST_KEY, Gateway, basic_config, gateway
from tests.support.openai_schema import (
    validate,
    validate_chunk,
    validate_completion,
    validate_error,
)
from tests.support.upstreams import fresh, served

upstream = served()
fake = fresh()


@pytest.fixture(scope="module")
def gw(upstream: tuple[str, FakeOpenAI]) -> Iterator[Gateway]:
    url = upstream[0] + "/v1"
    config = basic_config()
    config["deployments"] += [
        {"name": "upstream", "provider": "http-generic", "model": "served-model",
         "base_url": url, "api_key": "sk-upstream-secret"},
        {"name": "upstream-strict", "provider": "http-generic", "model": "served-model",
         "base_url": url, "timeout_s": 0.5},
    ]
    config["server"] = {"max_body_bytes": 20_000}
    with gateway(config) as g:
        yield g


@pytest.fixture
def client(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=TEST_KEY, max_retries=0)


def raw(gw: Gateway, method: str, path: str, key: str | None = TEST_KEY,
        **kw: Any) -> httpx.Response:
    headers = kw.pop("headers", {})
    if key:
        headers["authorization"] = f"Bearer {key}"
    return httpx.request(method, gw.url + path, headers=headers, timeout=10, **kw)


def test_models_list_and_retrieve(client: openai.OpenAI, gw: Gateway) -> None:
    listed = raw(gw, "GET", "/v1/models")
    validate("ListModelsResponse", listed.json())
    ids = {m.id for m in client.models.list()}
    assert {"echo", "echo-slow", "upstream", "echo-tools"} <= ids
    assert client.models.retrieve("echo-tools").id == "echo-tools"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


def test_models_filtered_by_principal(gw: Gateway) -> None:
    limited = openai.OpenAI(base_url=gw.base_url, api_key="sk-test-limited", max_retries=0)
    assert [m.id for m in limited.models.list()] == ["echo"]
    with pytest.raises(openai.NotFoundError):
        limited.chat.completions.create(model="upstream",
                                        messages=[{"role": "user", "content": "hi"}])


def test_chat_non_streaming(client: openai.OpenAI, gw: Gateway) -> None:
    resp = client.chat.completions.with_raw_response.create(
        model="echo", messages=[{"role": "system", "content": "s"},
                                {"role": "user", "content": "hello tako"}], temperature=0.2)
    body = orjson.loads(resp.content)
    validate_completion(body)
    completion = resp.parse()
    assert completion.choices[0].message.content == "echo: hello tako"
    assert completion.model == "echo"
    assert completion.usage and completion.usage.prompt_tokens > 0
    assert resp.headers["x-request-id"]
    assert float(resp.headers["x-tako-overhead-ms"]) >= 0


def test_chat_streaming_collects_deltas_and_usage(client: openai.OpenAI, gw: Gateway) -> None:
    resp = raw(gw, "POST", "/v1/chat/completions", json={
        "model": "echo", "stream": True, "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "one two three"}]})
    frames = [line[6:] for line in resp.text.splitlines() if line.startswith("data: ")]
    assert frames[-1] == "[DONE]"
    for frame in frames[:-1]:
        validate_chunk(orjson.loads(frame))
    stream = client.chat.completions.create(
        model="echo", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "one two three"}])
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: one two three"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices
                and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_image_parts_and_unknown_fields_reach_the_provider(client: openai.OpenAI,
                                                           fake: FakeOpenAI) -> None:
    client.chat.completions.create(
        model="upstream", user="end-user-7", max_completion_tokens=50, stop=["\n\n"],
        messages=[{"role": "user", "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}],
        extra_body={"logit_bias": {"50256": -100}, "vendor_knob": {"x": 1}})
    sent = fake.requests[-1]
    assert sent.body["model"] == "served-model"
    assert sent.body["messages"][0]["content"][1]["image_url"]["url"].endswith("cat.png")
    assert sent.body["logit_bias"] == {"50256": -100} and sent.body["vendor_knob"] == {"x": 1}
    assert sent.body["user"] == "end-user-7" and sent.body["max_completion_tokens"] == 50
    assert sent.headers["authorization"] == "Bearer sk-upstream-secret"


TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}]


def test_client_side_tool_call_round_trip(client: openai.OpenAI) -> None:
    messages: list[Any] = [{"role": "user", "content": "get_weather: Paris"}]
    first = client.chat.completions.create(model="echo", messages=messages, tools=TOOLS)
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather"
    assert orjson.loads(call.function.arguments) == {"city": "Paris"}
    messages += [first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21C"}]
    second = client.chat.completions.create(model="echo", messages=messages, tools=TOOLS)
    assert second.choices[0].message.content == "tool get_weather returned: sunny, 21C"


def test_client_side_tool_call_streamed_as_deltas(client: openai.OpenAI, gw: Gateway) -> None:
    body = {"model": "echo", "stream": True, "tools": TOOLS,
            "messages": [{"role": "user", "content": "get_weather: Oslo"}]}
    resp = raw(gw, "POST", "/v1/chat/completions", json=body)
    frames = [orjson.loads(line[6:]) for line in resp.text.splitlines()
              if line.startswith("data: {")]
    for frame in frames:
        validate_chunk(frame)
    stream = client.chat.completions.create(**body)
    args, name, call_id, finish = "", "", None, None
    for chunk in stream:
        for tc in chunk.choices[0].delta.tool_calls or ():
            call_id = call_id or tc.id
            name += (tc.function.name or "") if tc.function else ""
            args += (tc.function.arguments or "") if tc.function else ""
        finish = chunk.choices[0].finish_reason or finish
    assert (name, orjson.loads(args), finish) == ("get_weather", {"city": "Oslo"}, "tool_calls")
    assert call_id and call_id.startswith("call_")


def test_server_side_tool_runs_inside_the_loop(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(
        model="echo-tools", messages=[{"role": "user", "content": "calculator: 6*(3+4)"}])
    assert resp.choices[0].message.content == "tool calculator returned: 42"
    assert resp.choices[0].message.tool_calls is None
    stream = client.chat.completions.create(
        model="echo-tools", stream=True,
        messages=[{"role": "user", "content": "calculator: 2**10"}])
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "tool calculator returned: 1024"


def test_bad_key_and_missing_key_are_authentication_errors(gw: Gateway) -> None:
    bad = openai.OpenAI(base_url=gw.base_url, api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    resp = raw(gw, "GET", "/v1/models", key=None)
    assert resp.status_code == 401
    validate_error(resp.json())
    azure_style = raw(gw, "GET", "/v1/models", key=None, headers={"api-key": TEST_KEY})
    assert azure_style.status_code == 200


def test_unknown_model_is_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-99", messages=[{"role": "user", "content": "x"}])
    assert info.value.code == "model_not_found"


@pytest.mark.parametrize(("payload", "param"), [
    ({"model": "echo"}, "messages"),
    ({"model": "echo", "messages": []}, "messages"),
    ({"model": "echo", "messages": [{"role": "wizard", "content": "x"}]}, "messages.0"),
    ({"model": "echo", "messages": [{"role": "user", "content": "x"}], "n": 3}, "n"),
    ({"model": "echo", "messages": [{"role": "user", "content": "x"}], "temperature": 9},
     "temperature"),
])
def test_schema_violations_are_bad_requests(gw: Gateway, payload: dict[str, Any],
                                            param: str) -> None:
    resp = raw(gw, "POST", "/v1/chat/completions", json=payload)
    assert resp.status_code == 400
    validate_error(resp.json())
    assert resp.json()["error"]["type"] == "invalid_request_error"
    assert (resp.json()["error"]["param"] or "").startswith(param)


def test_sdk_sees_bad_request(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="echo", messages=[], temperature=0)


def test_malformed_json_and_oversized_body(gw: Gateway) -> None:
    resp = raw(gw, "POST", "/v1/chat/completions", content=b"{not json",
               headers={"content-type": "application/json"})
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_json"
    validate_error(resp.json())
    big = {"model": "echo", "messages": [{"role": "user", "content": "x" * 30_000}]}
    resp = raw(gw, "POST", "/v1/chat/completions", json=big)
    assert resp.status_code == 413
    validate_error(resp.json())


def test_upstream_5xx_is_502_with_vendor_details(client: openai.OpenAI, fake: FakeOpenAI) -> None:
    fake.push(*[Reply(status=500, body={"error": {"message": "kaboom"}})] * 5)
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="upstream",
                                       messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 502
    error = info.value.body
    assert isinstance(error, dict)
    assert error["details"]["status"] == 500
    assert error["details"]["body"] == {"error": {"message": "kaboom"}}
    assert "provider upstream" in error["message"]


def test_upstream_4xx_keeps_vendor_status_in_details(client: openai.OpenAI,
                                                     fake: FakeOpenAI) -> None:
    fake.push(Reply(status=400, body={"error": {"message": "bad tool schema"}}))
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="upstream",
                                       messages=[{"role": "user", "content": "x"}])
    assert info.value.body["details"]["status"] == 400  # type: ignore[index]


def test_upstream_timeout_is_504(client: openai.OpenAI, fake: FakeOpenAI) -> None:
    fake.push(*[Reply(delay_s=2.0)] * 5)
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="upstream-strict",
                                       messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 504


def test_failure_before_first_byte_is_an_http_error(gw: Gateway, fake: FakeOpenAI) -> None:
    fake.push(*[Reply(status=401, body={"error": {"message": "upstream key revoked"}})] * 5)
    resp = raw(gw, "POST", "/v1/chat/completions", json={
        "model": "upstream", "stream": True, "messages": [{"role": "user", "content": "x"}]})
    assert resp.status_code == 502
    validate_error(resp.json())


def test_failure_after_first_byte_ends_with_error_frame_then_done(
        client: openai.OpenAI, gw: Gateway, fake: FakeOpenAI) -> None:
    fake.push(Reply(text="alpha beta gamma delta", drop_after=3))
    resp = raw(gw, "POST", "/v1/chat/completions", json={
        "model": "upstream", "stream": True, "messages": [{"role": "user", "content": "x"}]})
    assert resp.status_code == 200
    frames = [line[6:] for line in resp.text.splitlines() if line.startswith("data: ")]
    assert frames[-1] == "[DONE]"
    error = orjson.loads(frames[-2])
    validate_error(error)
    assert orjson.loads(frames[1])["choices"][0]["delta"]["content"]
    fake.push(Reply(text="alpha beta gamma delta", drop_after=3))
    with pytest.raises(openai.APIError):
        for _ in client.chat.completions.create(
                model="upstream", stream=True, messages=[{"role": "user", "content": "x"}]):
            pass


def test_health_and_readiness(gw: Gateway) -> None:
    assert httpx.get(gw.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(gw.url + "/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


def test_concurrent_requests_do_not_block_the_event_loop(gw: Gateway) -> None:
    """10 parallel requests to a deployment that takes 200 ms finish in under 1.5x the
    time of one (connections are opened beforehand so only the gateway is measured)."""
    body = {"model": "echo-slow", "messages": [{"role": "user", "content": "zzz"}]}

    async def run() -> tuple[float, float]:
        async with httpx.AsyncClient(base_url=gw.base_url, timeout=10, headers={
                "authorization": f"Bearer {TEST_KEY}"}) as client:
            async def one() -> None:
                r = await client.post("/chat/completions", json=body)
                assert r.json()["choices"][0]["message"]["content"] == "echo: zzz"

            await asyncio.gather(*(one() for _ in range(10)))  # open 10 connections
            singles = []
            for _ in range(3):
                t0 = time.perf_counter()
                await one()
                singles.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            await asyncio.gather(*(one() for _ in range(10)))
            return sorted(singles)[1], time.perf_counter() - t0

    single, parallel = asyncio.run(run())
    assert single >= 0.2
    assert parallel < 1.5 * single, (single, parallel)
