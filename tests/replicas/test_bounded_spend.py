"""Spend stays within its reservations through real gateways on one Redis: a request
without max_tokens reaches the upstream with the cap it reserved for, and streams from an
upstream that ignores the cap are cut at it, across replicas, without overspending."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest

from tako.runtime import Runtime, RuntimeSettings
from tests.fakes.openai import FakeOpenAI, Reply, make_app
from tests.support.gateway import TEST_KEY, Gateway, gateway
from tests.support.net import serve_asgi
from tests.support.redis_server import RedisProcess
from tests.support.replicas import PRICE, config

LONG_ANSWER = ["word "] * 400  # 2,000 characters, far past a 20-token cap
REPLICAS = 3


@pytest.fixture
def careless_upstream() -> Iterator[tuple[str, FakeOpenAI]]:
    app, fake = make_app()
    with serve_asgi(app) as url:
        yield url, fake


def _config(redis_url: str, prefix: str, upstream: str, **runtime: Any) -> dict[str, Any]:
    cfg = config(redis_url, prefix, **runtime)
    cfg["deployments"].append({"name": "careless", "provider": "http-generic", "model": "m",
                               "base_url": upstream + "/v1", "price": PRICE})
    return cfg


async def _spent(redis_url: str, prefix: str) -> float:
    rt = Runtime.from_settings(RuntimeSettings(backend="redis", redis_url=redis_url,
                                               key_prefix=prefix))
    await rt.start()
    try:
        return await rt.spend("tenant", "acme", "day", "acme")
    finally:
        await rt.aclose()


async def _stream(client: httpx.AsyncClient, gw: Gateway, max_tokens: int) -> dict[str, Any]:
    """The finish reason of one streamed request, or its error status."""
    body = {"model": "careless", "stream": True, "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": "go"}]}
    async with client.stream("POST", gw.base_url + "/chat/completions", json=body,
                             headers={"authorization": f"Bearer {TEST_KEY}"}) as resp:
        if resp.status_code != 200:
            await resp.aread()
            return {"status": resp.status_code}
        finish = None
        async for line in resp.aiter_lines():
            if line.startswith("data: {"):
                for choice in json.loads(line[6:]).get("choices", []):
                    finish = choice.get("finish_reason") or finish
        return {"status": 200, "finish": finish}


def test_the_cap_reaches_the_upstream_and_streams_past_it_are_cut_across_replicas(
        redis_proc: RedisProcess, key_prefix: str,
        careless_upstream: tuple[str, FakeOpenAI]) -> None:
    url, fake = careless_upstream
    budget = 1.2  # $0.001 a token: 1,024 tokens fit once; 20-token streams reserve ~$0.03
    fake.push(Reply(text="short"))
    fake.push(*[Reply(chunks=LONG_ANSWER, usage={"prompt_tokens": 5,
                                                 "completion_tokens": 400,
                                                 "total_tokens": 405})] * 60)
    cfg = _config(redis_proc.url, key_prefix, url,
                  budgets=[{"scope": "tenant", "period": "day", "usd": budget}])
    with ExitStack() as stack:
        gws = [stack.enter_context(gateway(cfg)) for _ in range(REPLICAS)]
        answer = httpx.post(gws[0].base_url + "/chat/completions", timeout=30,
                            headers={"authorization": f"Bearer {TEST_KEY}"},
                            json={"model": "careless",
                                  "messages": [{"role": "user", "content": "hi"}]})
        assert answer.status_code == 200
        assert fake.last.body["max_tokens"] == 1024  # the client sent none

        async def flood() -> list[dict[str, Any]]:
            async with httpx.AsyncClient(timeout=30) as client:
                return await asyncio.gather(*(_stream(client, gws[i % REPLICAS], 20)
                                              for i in range(60)))

        outcomes = asyncio.run(flood())
    answered = [o for o in outcomes if o["status"] == 200]
    assert answered and len(answered) < 60, "the flood must both fit and overflow the budget"
    assert {o["finish"] for o in answered} == {"length"}
    assert {o["status"] for o in outcomes} <= {200, 429}
    assert asyncio.run(_spent(redis_proc.url, key_prefix)) <= budget + 1e-9


def test_an_open_circuit_is_refused_at_once_with_retry_after(
        redis_proc: RedisProcess, key_prefix: str,
        careless_upstream: tuple[str, FakeOpenAI]) -> None:
    url, fake = careless_upstream
    fake.push(*[Reply(status=500)] * 3)
    cfg = _config(redis_proc.url, key_prefix, url, retry={"max_attempts": 1},
                  breaker={"failure_ratio": 1.0, "min_calls": 3, "open_s": 30})
    with gateway(cfg) as gw:
        async def timed(model: str, count: int) -> list[tuple[httpx.Response, float]]:
            body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
            limits = httpx.Limits(max_connections=count)
            async with httpx.AsyncClient(timeout=60, limits=limits) as client:
                async def one() -> tuple[httpx.Response, float]:
                    started = time.perf_counter()
                    response = await client.post(
                        gw.base_url + "/chat/completions", json=body,
                        headers={"authorization": f"Bearer {TEST_KEY}"})
                    return response, time.perf_counter() - started
                return [await one() for _ in range(count)] if count < 10 else \
                    await asyncio.gather(*(one() for _ in range(count)))

        tripped = asyncio.run(timed("careless", 3))
        assert [r.status_code for r, _ in tripped] == [502] * 3
        refusals = asyncio.run(timed("careless", 300))
        answers = asyncio.run(timed("echo", 300))
    assert len(fake.requests) == 3, "an open circuit sends nothing upstream"
    assert {r.status_code for r, _ in refusals} == {503}
    assert {r.json()["error"]["code"] for r, _ in refusals} == {"circuit_open"}
    waits = {int(r.headers["retry-after"]) for r, _ in refusals}
    assert min(waits) >= 1 and max(waits) <= 30  # when the probe is due
    refused_p50 = sorted(t for _, t in refusals)[150]
    answered_p50 = sorted(t for _, t in answers)[150]
    print(f"\n300 concurrent requests: circuit_open refusals p50 {refused_p50 * 1000:.0f} ms, "
          f"echo answers p50 {answered_p50 * 1000:.0f} ms")
    assert refused_p50 <= answered_p50 * 1.5 + 0.05  # no slower than an answer


async def _complete(client: httpx.AsyncClient, gw: Gateway) -> int:
    response = await client.post(gw.base_url + "/chat/completions",
                                 headers={"authorization": f"Bearer {TEST_KEY}"},
                                 json={"model": "careless", "max_tokens": 20,
                                       "messages": [{"role": "user", "content": "go"}]})
    return response.status_code


def test_a_non_streamed_flood_across_three_replicas_never_overspends(
        redis_proc: RedisProcess, key_prefix: str,
        careless_upstream: tuple[str, FakeOpenAI]) -> None:
    url, fake = careless_upstream
    budget = 0.5  # each answer costs what it reserved: 5 + 20 tokens at $0.001
    fake.push(*[Reply(text="twenty tokens of answer", usage={
        "prompt_tokens": 5, "completion_tokens": 20, "total_tokens": 25})] * 90)
    cfg = _config(redis_proc.url, key_prefix, url,
                  budgets=[{"scope": "tenant", "period": "day", "usd": budget}])
    with ExitStack() as stack:
        gws = [stack.enter_context(gateway(cfg)) for _ in range(REPLICAS)]

        async def flood() -> list[int]:
            async with httpx.AsyncClient(timeout=30) as client:
                return await asyncio.gather(*(_complete(client, gws[i % REPLICAS])
                                              for i in range(90)))

        statuses = asyncio.run(flood())
    assert 200 in statuses and 429 in statuses, "the flood must both fit and overflow"
    assert set(statuses) <= {200, 429}
    spent = asyncio.run(_spent(redis_proc.url, key_prefix))
    assert spent <= budget + 1e-9
    assert spent == pytest.approx(statuses.count(200) * 25 * 0.001)
