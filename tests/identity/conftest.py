"""Key store tests run on the in-memory store and on a real throwaway Redis server."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from tako.app.identity.keystore import KeyStore, MemoryKeyStore, RedisKeyStore
from tests.support.redis_server import RedisProcess, redis_server

_prefixes = itertools.count()


@pytest.fixture(scope="session")
def identity_redis() -> Iterator[RedisProcess]:
    with redis_server() as proc:
        yield proc


@pytest.fixture
def key_prefix() -> str:
    return f"test{next(_prefixes)}:keys"


MakeRedisStore = Callable[[], RedisKeyStore]


@pytest.fixture
async def make_redis_store(identity_redis: RedisProcess, key_prefix: str
                           ) -> AsyncIterator[MakeRedisStore]:
    """Each call opens its own connection pool on one shared key prefix, as each replica
    of a gateway would."""
    made: list[RedisKeyStore] = []

    def make() -> RedisKeyStore:
        store = RedisKeyStore.from_url(identity_redis.url, prefix=key_prefix)
        made.append(store)
        return store

    yield make
    for store in made:
        await store.aclose()


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> KeyStore:
    if request.param == "memory":
        return MemoryKeyStore()
    make: MakeRedisStore = request.getfixturevalue("make_redis_store")
    return make()
