"""The ``openai`` / ``http-generic`` adapters against an OpenAI wire-format server."""

from __future__ import annotations

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
from tako.core.types import ChatRequest
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


async def test_slow_upstream_times_out(upstream, fake) -> None:
    fake.push(Reply(delay_s=1.0), Reply(delay_s=1.0), Reply(text="a b c", chunk_delay_s=1.0))
    p = provider(upstream[0], timeout_s=0.3)
    with pytest.raises(UpstreamTimeout):
        await p.chat(request())
    with pytest.raises(UpstreamTimeout):  # no answer at all
        [i async for i in p.stream(request())]
    with pytest.raises(UpstreamTimeout):  # an answer whose body stalls
        [i async for i in p.stream(request())]
    await p.aclose()
