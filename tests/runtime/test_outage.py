"""Redis going away and coming back: the failure mode decides, recovery needs no restart."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from tako.core.errors import Unavailable
from tako.core.types import Principal
from tako.runtime import Runtime, RuntimeSettings
from tests.fakes.provider import Reply, ScriptedProvider, request
from tests.support.redis_server import RedisProcess, redis_server
from tests.support.runtimes import RecordedEvents

ALICE = Principal("acme", "alice", "key-a")


@pytest.fixture
def own_redis() -> Iterator[RedisProcess]:
    with redis_server(owned=True) as proc:
        yield proc


def _settings(url: str, mode: str) -> RuntimeSettings:
    return RuntimeSettings(backend="redis", redis_url=url, failure_mode=mode,  # type: ignore[arg-type]
                           redis_timeout_s=0.5,
                           budgets=[{"scope": "tenant", "period": "day", "usd": 10}],  # type: ignore[list-item]
                           rate_limits=[{"scope": "key", "rpm": 1000}])  # type: ignore[list-item]


async def test_fail_closed_refuses_while_down_and_recovers(own_redis):
    events = RecordedEvents()
    runtime = Runtime.from_settings(_settings(own_redis.url, "fail_closed"), events)
    await runtime.start()
    try:
        await runtime.admit(ALICE, "m", 10, 1.0)
        assert await runtime.ready()
        own_redis.stop()
        with pytest.raises(Unavailable) as refused:
            await runtime.admit(ALICE, "m", 10, 1.0)
        assert refused.value.status == 503 and "Redis" in refused.value.message
        assert events.rejections == ["unavailable"]
        assert not await runtime.ready()
        own_redis.start()  # an empty server: the scripts must be loaded again
        admission = await runtime.admit(ALICE, "m", 10, 1.0)
        assert await runtime.ready()
        assert admission.headers["x-ratelimit-remaining-requests"] == "999"
        guarded = runtime.alias_provider(
        admission, "a", [ScriptedProvider("d", [Reply(usd=0.25)])])
        await guarded.chat(request())
        assert await runtime.spend("tenant", "acme", "day", "acme") == pytest.approx(0.25)
        assert events.unaccounted == []
    finally:
        await runtime.aclose()


async def test_fail_open_admits_and_reports_unaccounted_spend(own_redis, caplog):
    caplog.set_level(logging.WARNING, logger="tako.runtime")
    events = RecordedEvents()
    runtime = Runtime.from_settings(_settings(own_redis.url, "fail_open"), events)
    await runtime.start()
    try:
        own_redis.stop()
        admission = await runtime.admit(ALICE, "m", 10, 1.0)
        assert admission.unaccounted
        guarded = runtime.alias_provider(
        admission, "a", [ScriptedProvider("d", default=Reply(usd=0.25))])
        await guarded.chat(request())
        await guarded.chat(request())  # a later call of the same request
        assert events.unaccounted == [0.25, 0.25]
        warnings = [r.getMessage() for r in caplog.records if r.name == "tako.runtime"]
        assert warnings and "Redis unreachable" in warnings[0] and "fail_open" in warnings[0]
        assert not any("key-a" in w for w in warnings)
        own_redis.start()
        admission = await runtime.admit(ALICE, "m", 10, 1.0)
        assert not admission.unaccounted
        assert await runtime.spend("tenant", "acme", "day", "acme") == pytest.approx(1.0)
    finally:
        await runtime.aclose()


async def test_redis_lost_after_admission_reports_spend_beyond_the_reservation(own_redis):
    events = RecordedEvents()
    runtime = Runtime.from_settings(_settings(own_redis.url, "fail_open"), events)
    await runtime.start()
    try:
        admission = await runtime.admit(ALICE, "m", 10, 0.25)
        own_redis.stop()
        guarded = runtime.alias_provider(
        admission, "a", [ScriptedProvider("d", default=Reply(usd=1.0))])
        await guarded.chat(request())
        assert events.unaccounted == [pytest.approx(0.75)]
    finally:
        await runtime.aclose()
