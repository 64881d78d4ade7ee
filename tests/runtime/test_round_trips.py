"""The Redis hot path: one script call to admit and one to reconcile; the breaker is
asked at most every ``closed_cache_s``."""

from __future__ import annotations

from redis.asyncio import Redis

from tako.core.types import Principal
from tako.runtime import Runtime, RuntimeSettings
from tests.fakes.provider import Reply, ScriptedProvider, request

ALICE = Principal("acme", "alice", "key-a")


# commands the scripts run inside the server; commandstats counts those too
INSIDE_SCRIPTS = {"get", "set", "incrby", "ttl", "expire", "hget", "hset", "pexpire", "del",
                  "time"}


async def _commands(client: Redis) -> int:
    """Commands sent by clients so far (the INFO call that asks included)."""
    stats = await client.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items()
               if k.startswith("cmdstat_") and k.removeprefix("cmdstat_") not in INSIDE_SCRIPTS)


async def test_single_call_request_round_trips(redis_proc):
    runtime = Runtime.from_settings(RuntimeSettings.model_validate({
        "backend": "redis", "redis_url": redis_proc.url, "key_prefix": "round-trips",
        "rate_limits": [{"scope": "key", "rpm": 100, "tpm": 100000},
                        {"scope": "model", "rpm": 100}],
        "budgets": [{"scope": "tenant", "period": "day", "usd": 10},
                    {"scope": "user", "period": "month", "usd": 10, "tokens": 10**6}]}))
    await runtime.start()
    probe = Redis.from_url(redis_proc.url)
    try:
        await runtime.admit(ALICE, "m", 10, 0.01)  # connections warm
        before = await _commands(probe)
        admission = await runtime.admit(ALICE, "m", 100, 0.5)
        after_admit = await _commands(probe)
        guarded = runtime.alias_provider(admission, "a", [ScriptedProvider("d", [Reply(usd=0.1)])])
        await guarded.chat(request())
        after_call = await _commands(probe)
        spent = await runtime.spend("tenant", "acme", "day", "acme")
        # the next request finds the circuit closed in the replica's short-lived cache
        second = await runtime.admit(ALICE, "m", 100, 0.5)
        await runtime.alias_provider(second, "a", [ScriptedProvider("d", [Reply(usd=0.1)])]).chat(
            request())
        after_second = await _commands(probe)
    finally:
        await probe.aclose()
        await runtime.aclose()
    # each count includes the INFO call that read it
    assert after_admit - before - 1 == 1  # admit: one EVALSHA
    assert after_call - after_admit - 1 == 2  # breaker check + reconcile
    assert after_second - after_call - 1 - 1 == 2  # admit + reconcile (spend() was one)
    assert abs(spent - 0.11) < 1e-9
