"""The runtime and the admin key store through Redis Sentinel (one master, one replica,
three sentinels): admission, reconcile and spend reads across two replicas of the runtime,
and, after the master is killed and the sentinels promote its replica, the same runtime
keeps serving without a restart."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from tako.app.identity.keystore import KeySpecIn, RedisKeyResolver, RedisKeyStore
from tako.core.errors import AuthenticationFailed, QuotaExceeded, Unavailable
from tako.core.types import Principal
from tako.runtime import Runtime
from tests.fakes.provider import Reply, ScriptedProvider, request
from tests.support.redis_cluster import cli
from tests.support.redis_sentinel import RedisSentinelProcess, redis_sentinel
from tests.support.runtimes import fresh_key_prefix, started_runtime


@pytest.fixture
def sentinel() -> Iterator[RedisSentinelProcess]:
    with redis_sentinel(sentinels=3) as running:
        yield running


async def _runtimes(url: str, count: int) -> list[Runtime]:
    prefix = fresh_key_prefix("s")
    return [await started_runtime(
        "redis", url, prefix, budgets=[{"scope": "tenant", "period": "day", "usd": 1}],
        failure_mode="fail_closed", redis_timeout_s=1.0) for _ in range(count)]


async def _call(runtime: Runtime, tenant: str, usd: float) -> None:
    admission = await runtime.admit(Principal(tenant, "ann", f"key-{tenant}"), "m", 10, usd)
    await runtime.alias_provider(admission, "a", [ScriptedProvider("d", [Reply(usd=usd)])]
                                 ).chat(request())


async def test_admission_reconcile_spend_and_failover_through_sentinel(
        sentinel: RedisSentinelProcess) -> None:
    first, second = await _runtimes(sentinel.url, 2)
    store = RedisKeyStore.from_url(sentinel.url, prefix=fresh_key_prefix("sk") + ":keys")
    resolver = RedisKeyResolver(store, cache_ttl_s=1.0)  # only the notice drops an entry
    try:
        await _call(first, "acme", 0.25)
        assert await second.spend("tenant", "acme", "day", "acme") == pytest.approx(0.25)
        await _call(second, "acme", 0.5)
        with pytest.raises(QuotaExceeded):  # 0.75 settled, 0.3 more does not fit in $1
            await first.admit(Principal("acme", "ann", "key-acme"), "m", 10, 0.3)
        minted = await store.create(KeySpecIn(tenant_id="acme", user_id="ann"))
        assert {r.key_id for r in await store.list_keys()} == {minted.record.key_id}
        await resolver.start()
        assert await resolver.wait_subscribed(within_s=5)
        doomed = await store.create(KeySpecIn(tenant_id="acme", user_id="bo"))
        assert (await resolver.resolve(doomed.key)).user_id == "bo"
        await store.revoke(doomed.record.key_id)  # the pub/sub notice drops the cached copy
        await asyncio.sleep(0.3)
        with pytest.raises(AuthenticationFailed):
            await resolver.resolve(doomed.key)

        old = sentinel.master()
        new = sentinel.replica_port
        assert old == sentinel.master_port
        cli(old, "wait", "1", "2000")  # what was written so far reached the replica
        sentinel.kill(old)
        killed_at = time.monotonic()
        failed = 0
        while True:  # the failure mode's answer until the replica is promoted
            try:
                await _call(first, "globex", 0.01)
                break
            except Unavailable:
                failed += 1
                assert time.monotonic() - killed_at < 30, "no recovery after the failover"
                await asyncio.sleep(0.05)
        recovered_s = time.monotonic() - killed_at
        print(f"sentinel failover: {failed} calls refused, back after {recovered_s:.2f} s")
        assert sentinel.master() == new
        # the writes the old master had replicated are still there on the new one
        assert await second.spend("tenant", "acme", "day", "acme") == pytest.approx(0.75)
        await _call(second, "acme", 0.2)
        assert await first.spend("tenant", "acme", "day", "acme") == pytest.approx(0.95)
        assert await first.ready() and await second.ready()
        assert {r.key_id for r in await store.list_keys()} == \
            {minted.record.key_id, doomed.record.key_id}
    finally:
        for runtime in (first, second):
            await runtime.aclose()
        await resolver.aclose()
        await store.aclose()
