"""Key stores on a real Redis for the identity tests: each one made by ``RedisStores``
opens its own connection pool on one shared key prefix, as each replica of a gateway
would."""

from __future__ import annotations

import itertools
from collections.abc import Callable

from tako.app.identity.keystore import RedisKeyStore

_prefixes = itertools.count()

MakeRedisStore = Callable[[], RedisKeyStore]


def fresh_keys_prefix() -> str:
    """A key prefix no other test in this process uses."""
    return f"test{next(_prefixes)}:keys"


class RedisStores:
    """Calling it makes another store on ``redis_url`` under ``prefix``; ``aclose`` closes
    every store it made."""

    def __init__(self, redis_url: str, prefix: str) -> None:
        self.redis_url = redis_url
        self.prefix = prefix
        self.made: list[RedisKeyStore] = []

    def __call__(self) -> RedisKeyStore:
        store = RedisKeyStore.from_url(self.redis_url, prefix=self.prefix)
        self.made.append(store)
        return store

    async def aclose(self) -> None:
        for store in self.made:
            await store.aclose()
