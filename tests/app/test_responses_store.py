"""Stored responses shared by two real ``tako serve`` replicas on one throwaway Redis (keys
per tenant, with a TTL), and the memory store's bounds."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest
import redis

from tako.app.ingress import response_store
from tako.app.ingress.response_store import MemoryResponseStore
from tests.support.gateway import TEST_KEY, Gateway, gateway
from tests.support.redis_server import RedisProcess, redis_server
from tests.support.responses_api import OTHER_TENANT_KEY, responses_config, stream_events

PREFIX = "resp-e2e"


@pytest.fixture(scope="module")
def redis_proc() -> Iterator[RedisProcess]:
    with redis_server() as proc:
        yield proc


@pytest.fixture(scope="module")
def replicas(redis_proc: RedisProcess) -> Iterator[tuple[Gateway, Gateway]]:
    config = responses_config()
    config["runtime"] = {"backend": "redis", "redis_url": redis_proc.url, "key_prefix": PREFIX}
    with gateway(config) as a, gateway(config) as b:
        yield a, b


def sdk(gw: Gateway, key: str = TEST_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0)


def stored_keys(redis_proc: RedisProcess) -> dict[str, int]:
    """The stored-response keys in Redis and their TTLs in seconds."""
    client = redis.Redis.from_url(redis_proc.url)
    try:
        return {k.decode(): int(client.ttl(k)) for k in client.scan_iter(f"{PREFIX}:*:resp:*")}
    finally:
        client.close()


def test_replicas_share_stored_responses(replicas: tuple[Gateway, Gateway],
                                         redis_proc: RedisProcess) -> None:
    a, b = (sdk(g) for g in replicas)
    first = a.responses.create(model="echo", input="kept in redis")
    assert b.responses.retrieve(first.id).output_text == "echo: kept in redis"
    key = f"{PREFIX}:{{acme}}:resp:{first.id}"
    ttl = stored_keys(redis_proc)[key]
    assert 0 < ttl <= response_store.TTL_S
    # continued on the other replica, streamed, and read back on the first
    events = stream_events(replicas[1], {"model": "echo", "input": "and on b",
                                         "previous_response_id": first.id})
    second_id = events[-1]["response"]["id"]
    second = a.responses.retrieve(second_id)
    assert second.previous_response_id == first.id
    assert [i.type for i in a.responses.input_items.list(second_id).data] == ["message"]
    # another tenant sees none of it on either replica
    for gw in replicas:
        with pytest.raises(openai.NotFoundError):
            sdk(gw, OTHER_TENANT_KEY).responses.retrieve(first.id)
    # deleted on one, gone on both
    b.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        a.responses.retrieve(first.id)
    assert key not in stored_keys(redis_proc)


def test_store_false_writes_nothing_to_redis(replicas: tuple[Gateway, Gateway],
                                             redis_proc: RedisProcess) -> None:
    before = set(stored_keys(redis_proc))
    response = sdk(replicas[0]).responses.create(model="echo", input="x", store=False)
    stream_events(replicas[1], {"model": "echo", "input": "y", "store": False})
    assert set(stored_keys(redis_proc)) == before
    with pytest.raises(openai.NotFoundError):
        sdk(replicas[1]).responses.retrieve(response.id)


async def test_memory_store_is_bounded() -> None:
    store = MemoryResponseStore(max_entries=3, max_bytes=10_000)
    record: dict[str, Any] = {"response": {"output": []}, "items": [], "history": []}
    for i in range(5):
        assert await store.put("acme", f"resp_{i}", record)
    assert [await store.get("acme", f"resp_{i}") is not None for i in range(5)] == [
        False, False, True, True, True]
    assert await store.get("globex", "resp_4") is None  # ids are per tenant
    # by bytes too: a record over the whole budget is refused, others push out the oldest
    assert not await store.put("acme", "huge", {"blob": "x" * 20_000})
    big = {"blob": "x" * 4_000}
    for i in range(3):
        assert await store.put("acme", f"big_{i}", big)
    assert store.size <= 10_000 and await store.get("acme", "big_0") is None
    assert await store.delete("acme", "big_2") and not await store.delete("acme", "big_2")
