"""The ``openai`` / ``http-generic`` adapters against an OpenAI wire-format server."""

from __future__ import annotations

import orjson
import pytest

from tako.core.errors import (
    ContextLengthExceeded,
    Overloaded,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamTransient,
)
from tako.core.specs import DeploymentSpec, Price
from tako.core.types import ChatRequest, ChunkError, Delta, End
from tako.orchestrators.base import collect
from tako.providers.registry import build
from tests.fakes.openai import Reply
from tests.support.upstreams import fresh, served

upstream = served()
fake = fresh()


def provider(url: str, kind: str = "http-generic", **kw: object):  # type: ignore[no-untyped-def]
    spec = DeploymentSpec(name="dep", provider=kind, model="gpt-4o", base_url=url + "/v1",
                          api_key="sk-upstream", price=Price(input=1.0, output=2.0,
                                                             cached_input=0.5), **kw)
    return build(spec)


def request(**kw: object) -> ChatRequest:
    return ChatRequest.model_validate({"model": "alias", "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "hello"},
                                     {"type": "image_url",
                                      "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]},
    ], **kw})


async def test_chat_sends_openai_body_and_parses_usage_and_cost(upstream, fake) -> None:
    p = provider(upstream[0], "openai")
    resp = await p.chat(request(temperature=0.3, stop=["x"], user="u1", logit_bias={"1": 2}))
    assert resp.content == "echo: hello"
    sent = fake.requests[0]
    assert sent.headers["authorization"] == "Bearer sk-upstream"
    assert sent.body["model"] == "gpt-4o"
    assert sent.body["temperature"] == 0.3 and sent.body["stop"] == ["x"]
    assert sent.body["logit_bias"] == {"1": 2}, "unknown fields pass through"
    assert sent.body["messages"][1]["content"][1]["image_url"]["url"].startswith("data:image")
    assert "stream" not in sent.body
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (12, 5)
    assert resp.usage.cached_tokens == 2 and resp.usage.reasoning_tokens == 1
    assert resp.usage.cost_usd == pytest.approx((10 * 1.0 + 2 * 0.5 + 5 * 2.0) / 1e6)
    await p.aclose()


async def test_tool_calls_are_parsed(upstream, fake) -> None:
    fake.push(Reply(tool_calls=[{"id": "call_1", "type": "function",
                                 "function": {"name": "lookup", "arguments": '{"q": 1}'}}]))
    p = provider(upstream[0])
    resp = await p.chat(request(tools=[{"type": "function", "function": {"name": "lookup"}}]))
    assert resp.finish_reason == "tool_calls"
    assert resp.tool_calls and resp.tool_calls[0].id == "call_1"
    assert orjson.loads(resp.tool_calls[0].function.arguments) == {"q": 1}
    await p.aclose()


async def test_stream_yields_deltas_then_one_end_with_usage(upstream, fake) -> None:
    p = provider(upstream[0])
    items = [i async for i in p.stream(request())]
    assert isinstance(items[-1], End) and sum(isinstance(i, End) for i in items) == 1
    text = "".join(i.content or "" for i in items if isinstance(i, Delta))
    assert text == "echo: hello"
    assert items[-1].usage.prompt_tokens == 12
    assert fake.requests[0].body["stream_options"] == {"include_usage": True}
    await p.aclose()


async def test_stream_tool_call_fragments_reassemble(upstream, fake) -> None:
    fake.push(Reply(tool_calls=[{"id": "call_9", "type": "function",
                                 "function": {"name": "f", "arguments": '{"a": [1, 2]}'}}]))
    p = provider(upstream[0])
    resp = await collect(p.stream(request()), "m")
    assert resp.tool_calls and resp.tool_calls[0].id == "call_9"
    assert orjson.loads(resp.tool_calls[0].function.arguments) == {"a": [1, 2]}
    assert resp.finish_reason == "tool_calls"
    await p.aclose()


@pytest.mark.parametrize(("status", "body", "cls"), [
    (429, {"error": {"message": "slow down"}}, UpstreamRateLimited),
    (400, {"error": {"message": "This model's maximum context length is 8192 tokens",
                     "code": "context_length_exceeded"}}, ContextLengthExceeded),
    (401, {"error": {"message": "bad key"}}, UpstreamError),
    (500, {"error": {"message": "oops"}}, UpstreamTransient),
    (503, {"error": {"message": "overloaded"}}, Overloaded),
])
async def test_upstream_errors_keep_status_and_body(upstream, fake, status, body, cls) -> None:
    fake.push(Reply(status=status, body=body, headers={"retry-after": "3"}))
    p = provider(upstream[0])
    with pytest.raises(cls) as info:
        await p.chat(request())
    assert info.value.details == {"provider": "dep", "status": status, "body": body}
    assert "provider dep" in info.value.message
    if status == 429:
        assert info.value.retry_after == 3.0
    await p.aclose()


async def test_stream_error_before_first_chunk_raises(upstream, fake) -> None:
    fake.push(Reply(status=500))
    p = provider(upstream[0])
    with pytest.raises(UpstreamTransient):
        async for _ in p.stream(request()):
            pass
    await p.aclose()


async def test_connection_reset_mid_stream_ends_with_error_then_end(upstream, fake) -> None:
    fake.push(Reply(text="one two three four", drop_after=3))
    p = provider(upstream[0])
    items = [i async for i in p.stream(request())]
    kinds = [type(i).__name__ for i in items]
    assert kinds[-2:] == ["ChunkError", "End"] and kinds.count("End") == 1
    assert any(isinstance(i, Delta) and i.content for i in items)
    err = items[-2]
    assert isinstance(err, ChunkError) and err.error.retryable
    await p.aclose()


async def test_in_stream_error_event_becomes_chunk_error(upstream, fake) -> None:
    fake.push(Reply(text="a b c d e f", stream_error={"message": "model crashed"}))
    p = provider(upstream[0])
    items = [i async for i in p.stream(request())]
    assert isinstance(items[-2], ChunkError) and "model crashed" in items[-2].error.message
    assert isinstance(items[-1], End) and items[-1].finish_reason == "error"
    await p.aclose()


async def test_slow_upstream_times_out(upstream, fake) -> None:
    fake.push(Reply(delay_s=1.0))
    p = provider(upstream[0], timeout_s=0.3)
    with pytest.raises(UpstreamTimeout):
        await p.chat(request())
    await p.aclose()


async def test_unreachable_upstream_is_a_transient_connection_error() -> None:
    from tests.support.net import free_port

    p = provider(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(UpstreamTransient) as info:
        await p.chat(request())
    assert info.value.retryable
    await p.aclose()
