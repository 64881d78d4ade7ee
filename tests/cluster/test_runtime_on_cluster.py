"""The runtime on a real Redis Cluster (3 masters, 3 replicas): admission, reconcile,
spend reads, rate limits and breakers, for tenants whose keys live on different masters."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tako.core.errors import QuotaExceeded, RateLimited, UpstreamTransient
from tako.core.types import Principal
from tako.runtime import Runtime
from tako.runtime import keys as runtime_keys
from tests.fakes.provider import Reply, ScriptedProvider, request
from tests.support.redis_cluster import RedisClusterProcess
from tests.support.runtimes import fresh_key_prefix, started_runtime

TENANTS = [f"tenant-{i}" for i in range(12)]


@pytest.fixture
async def replicas(cluster: RedisClusterProcess) -> AsyncIterator[list[Runtime]]:
    prefix = fresh_key_prefix("c")
    made = [await started_runtime(
        "redis", cluster.url, prefix,
        budgets=[{"scope": "tenant", "period": "day", "usd": 1}],
        rate_limits=[{"scope": "user", "rpm": 3}],
        breaker={"failure_ratio": 0.5, "min_calls": 2, "open_s": 30},
        retry={"max_attempts": 1}) for _ in range(2)]
    yield made
    for runtime in made:
        await runtime.aclose()


async def test_budgets_limits_and_breakers_hold_across_the_cluster(
        cluster: RedisClusterProcess, replicas: list[Runtime]) -> None:
    first, second = replicas
    prefix = first.settings.key_prefix
    homes = {cluster.master_of(runtime_keys.tenant_prefix(prefix, t)) for t in TENANTS}
    assert len(homes) == 3, "the tenants' keys are spread over every master"
    for i, tenant in enumerate(TENANTS):
        runtime = replicas[i % 2]
        principal = Principal(tenant, "ann", f"key-{tenant}")
        admission = await runtime.admit(principal, "m", 100, 0.6)
        await runtime.alias_provider(admission, "a", [ScriptedProvider("d", [Reply(usd=0.25)])]
                                     ).chat(request())
        other = replicas[(i + 1) % 2]
        assert await other.spend("tenant", tenant, "day", tenant) == pytest.approx(0.25)
        await other.admit(principal, "m", 100, 0.7)  # 0.25 + 0.7 fits in $1
        with pytest.raises(QuotaExceeded):
            await runtime.admit(principal, "m", 100, 0.1)
        await other.admit(Principal(tenant, "ann", "another-key"), "m", 1, 0.0)
        with pytest.raises(RateLimited):  # the user's three requests a minute are used up
            await runtime.admit(Principal(tenant, "ann", "another-key"), "m", 1, 0.0)

    flaky = ScriptedProvider("flaky", default=UpstreamTransient("provider flaky returned 500"))
    for runtime in replicas:
        admission = await runtime.admit(Principal("acme", "bo", "k"), "m", 1, 0.0)
        with pytest.raises(UpstreamTransient):
            await runtime.alias_provider(admission, "a", [flaky]).chat(request())
    assert await second.breakers.acquire("flaky") == "open"
    assert await first.breakers.acquire("flaky") == "open"
    assert await first.ready() and await second.ready()
