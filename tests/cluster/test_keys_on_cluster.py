"""The admin key store on a real Redis Cluster: mint, list, rotate and revoke keys, and
revocations reach every replica's cache at once over pub/sub."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from tako.app.identity.keystore import KeySpecIn, RedisKeyResolver, RedisKeyStore
from tako.core.errors import AuthenticationFailed
from tests.support.redis_cluster import RedisClusterProcess

_prefixes = itertools.count()


async def _revoked_within(resolver: RedisKeyResolver, key: str, seconds: float) -> bool:
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        try:
            await resolver.resolve(key)
        except AuthenticationFailed:
            return True
        await asyncio.sleep(0.01)
    return False


async def test_keys_and_revocation_pub_sub_work_on_the_cluster(
        cluster: RedisClusterProcess) -> None:
    prefix = f"ck{next(_prefixes)}:keys"
    stores = [RedisKeyStore.from_url(cluster.url, prefix=prefix) for _ in range(2)]
    assert stores[0].prefix == f"{{{prefix}}}"  # a hash tag keeps each update in one slot
    # a cache longer than the test waits: only the pub/sub notice can drop the entry
    resolvers = [RedisKeyResolver(store, cache_ttl_s=1.0) for store in stores]
    try:
        for resolver in resolvers:
            await resolver.start()
            assert await resolver.wait_subscribed(within_s=5)
        minted = [await stores[0].create(KeySpecIn(tenant_id=t, user_id="ann"))
                  for t in ("acme", "globex", "initech")]
        assert {r.key_id for r in await stores[1].list_keys()} == \
            {m.record.key_id for m in minted}
        for resolver in resolvers:
            principal = await resolver.resolve(minted[0].key)
            assert principal is not None and principal.tenant_id == "acme"
        rotated = await stores[1].rotate(minted[1].record.key_id)
        assert (await resolvers[0].resolve(rotated.key)).tenant_id == "globex"
        await stores[1].revoke(minted[0].record.key_id)
        assert await _revoked_within(resolvers[0], minted[0].key, 0.5), \
            "the other replica's cached key was not dropped by the notice"
        with pytest.raises(AuthenticationFailed):
            await resolvers[1].resolve(minted[1].key)  # the rotated-out secret
    finally:
        for resolver in resolvers:
            await resolver.aclose()
        for store in stores:
            await store.aclose()
