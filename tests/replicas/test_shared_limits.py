"""Budgets, rate limits and breakers hold across gateway replicas on one Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import httpx
import openai
import pytest

from tako.runtime import Runtime, RuntimeSettings
from tests.fakes.openai import FakeOpenAI, Reply, make_app
from tests.support.gateway import TEST_KEY, Gateway, gateway
from tests.support.net import serve_asgi
from tests.support.redis_server import RedisProcess
from tests.support.replicas import BODY, PRICE, config


@contextmanager
def replicas(cfg: dict[str, Any], n: int = 2) -> Iterator[list[Gateway]]:
    with ExitStack() as stack:
        yield [stack.enter_context(gateway(cfg)) for _ in range(n)]


async def flood(gws: list[Gateway], count: int, body: dict[str, Any]) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=64)) as client:
        async def one(i: int) -> httpx.Response:
            gw = gws[i % len(gws)]
            return await client.post(gw.base_url + "/chat/completions", json=body,
                                     headers={"authorization": f"Bearer {TEST_KEY}"})
        return await asyncio.gather(*(one(i) for i in range(count)))


async def spent(redis_url: str, prefix: str, scope: str, scope_id: str) -> float:
    rt = Runtime.from_settings(RuntimeSettings(backend="redis", redis_url=redis_url,
                                               key_prefix=prefix))
    await rt.start()
    try:
        return await rt.spend(scope, scope_id, "day", "acme")
    finally:
        await rt.aclose()




def test_budget_holds_across_replicas(redis_proc: RedisProcess, key_prefix: str) -> None:
    budget = 0.25
    cfg = config(redis_proc.url, key_prefix,
                 budgets=[{"scope": "tenant", "period": "day", "usd": budget}])
    with replicas(cfg) as gws:
        responses = asyncio.run(flood(gws, 120, BODY))
        ok = [r for r in responses if r.status_code == 200]
        rejected = [r for r in responses if r.status_code != 200]
        assert ok and rejected, "the flood must both fit and overflow the budget"
        for r in rejected:
            assert r.status_code == 429
            assert r.json()["error"]["type"] == "insufficient_quota"
            assert r.headers["x-should-retry"] == "false"
        total = asyncio.run(spent(redis_proc.url, key_prefix, "tenant", "acme"))
        assert 0 < total <= budget + 1e-9
        # each answered request was charged its actual cost, and nothing else was
        answered_cost = sum(
            (r.json()["usage"]["prompt_tokens"] + r.json()["usage"]["completion_tokens"])
            * 0.001 for r in ok)
        assert total == pytest.approx(answered_cost, rel=1e-6)


def test_rpm_limit_is_exact_across_replicas(redis_proc: RedisProcess, key_prefix: str) -> None:
    limit = 20
    cfg = config(redis_proc.url, key_prefix, rate_limits=[{"scope": "key", "rpm": limit}])
    with replicas(cfg) as gws:
        responses = asyncio.run(flood(gws, 60, BODY))
        ok = [r for r in responses if r.status_code == 200]
        limited = [r for r in responses if r.status_code == 429]
        assert len(ok) == limit, f"admitted {len(ok)} of a {limit} rpm limit"
        assert len(limited) == 60 - limit
        for r in limited:
            assert r.json()["error"]["type"] == "rate_limit_exceeded"
            assert float(r.headers["retry-after"]) > 0
        assert ok[0].headers["x-ratelimit-limit-requests"] == str(limit)
        assert {r.headers.get("x-ratelimit-remaining-requests") for r in ok} >= {"0"}


@pytest.fixture
def failing_upstream() -> Iterator[tuple[str, FakeOpenAI]]:
    app, fake = make_app()
    with serve_asgi(app) as url:
        yield url, fake


def test_breaker_opened_by_one_replica_is_skipped_by_the_other(
        redis_proc: RedisProcess, key_prefix: str,
        failing_upstream: tuple[str, FakeOpenAI]) -> None:
    url, fake = failing_upstream
    fake.push(*[Reply(status=500)] * 100)
    cfg = config(redis_proc.url, key_prefix,
                 breaker={"failure_threshold": 3, "window_s": 30, "open_s": 2},
                 retry={"max_attempts": 1})
    cfg["deployments"].append({"name": "flaky", "provider": "http-generic", "model": "m",
                               "base_url": url + "/v1"})
    cfg["aliases"] = {"smart": {"targets": ["flaky", "echo"]}}
    with replicas(cfg) as gws:
        a, b = (openai.OpenAI(base_url=g.base_url, api_key=TEST_KEY, max_retries=0)
                for g in gws)

        def ask(client: openai.OpenAI) -> str:
            raw = client.chat.completions.with_raw_response.create(
                model="smart", messages=[{"role": "user", "content": "hi"}])
            return raw.headers["x-tako-deployment"]

        assert [ask(a) for _ in range(3)] == ["echo"] * 3  # each fell back after a 500
        assert len(fake.requests) == 3
        assert [ask(b) for _ in range(5)] == ["echo"] * 5
        assert len(fake.requests) == 3, "replica B skipped the open deployment"
        time.sleep(2.3)

        async def burst(gws: list[Gateway] = gws) -> list[str]:
            clients = [openai.AsyncOpenAI(base_url=g.base_url, api_key=TEST_KEY,
                                          max_retries=0) for g in gws]
            results = await asyncio.gather(*(
                clients[i % 2].chat.completions.with_raw_response.create(
                    model="smart", messages=[{"role": "user", "content": "hi"}])
                for i in range(8)))
            return [r.headers["x-tako-deployment"] for r in results]

        assert asyncio.run(burst()) == ["echo"] * 8
        assert len(fake.requests) == 4, "exactly one half-open probe went upstream"


def test_client_disconnect_mid_stream_still_records_spend(
        redis_proc: RedisProcess, key_prefix: str,
        failing_upstream: tuple[str, FakeOpenAI]) -> None:
    url, fake = failing_upstream
    words = " ".join(f"w{i}" for i in range(60))
    fake.push(Reply(text=words, chunk_delay_s=0.05))
    cfg = config(redis_proc.url, key_prefix)  # no budget: spend is counted all the same
    cfg["deployments"].append({"name": "slow", "provider": "http-generic", "model": "m",
                               "base_url": url + "/v1", "price": PRICE})
    with gateway(cfg) as gw:
        with httpx.stream("POST", gw.base_url + "/chat/completions", timeout=30,
                          headers={"authorization": f"Bearer {TEST_KEY}"},
                          json={"model": "slow", "stream": True, "max_tokens": 100,
                                "messages": [{"role": "user", "content": "go"}]}) as resp:
            lines = resp.iter_lines()
            got = [next(lines) for _ in range(6)]
        assert any(line.startswith("data: ") for line in got)
        deadline = time.monotonic() + 10
        total = 0.0
        while time.monotonic() < deadline and total == 0.0:
            time.sleep(0.2)
            total = asyncio.run(spent(redis_proc.url, key_prefix, "key", "alpha"))
        assert total > 0, "the abandoned stream's spend was dropped"
