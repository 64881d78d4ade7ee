"""Key store tests run on the in-memory store and on a real throwaway Redis server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tako.app.identity.keystore import KeyStore, MemoryKeyStore
from tests.support.keystores import MakeRedisStore, RedisStores, fresh_keys_prefix
from tests.support.redis_server import RedisProcess, redis_server


@pytest.fixture(scope="session")
def identity_redis() -> Iterator[RedisProcess]:
    with redis_server() as proc:
        yield proc


@pytest.fixture
def key_prefix() -> str:
    return fresh_keys_prefix()


@pytest.fixture
async def make_redis_store(identity_redis: RedisProcess, key_prefix: str
                           ) -> AsyncIterator[MakeRedisStore]:
    """Each call opens its own connection pool on one shared key prefix, as each replica
    of a gateway would."""
    stores = RedisStores(identity_redis.url, key_prefix)
    yield stores
    await stores.aclose()


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> KeyStore:
    if request.param == "memory":
        return MemoryKeyStore()
    make: MakeRedisStore = request.getfixturevalue("make_redis_store")
    return make()
