"""Circuit breakers shared by every replica: open, skip, one half-open probe, close."""

from __future__ import annotations

import asyncio

import pytest

from tako.core.errors import CircuitOpen, UpstreamTransient
from tako.core.types import Principal
from tests.fakes.provider import Reply, ScriptedProvider, request
from tests.support.runtimes import RecordedEvents

ALICE = Principal("acme", "alice", "key-a")
FAIL = UpstreamTransient("provider flaky returned 500: boom")
BREAKER = {"failure_threshold": 3, "window_s": 30, "open_s": 0.3}
ONE_TRY = {"max_attempts": 1}


async def _call(runtime, providers):
    admission = await runtime.admit(ALICE, "m", 10, 0.0)
    guarded = runtime.alias_provider(
        admission, "alias", providers)
    response = await guarded.chat(request())
    return guarded.answered_by, response


async def test_failures_open_the_circuit_and_open_deployments_are_skipped(make_runtime):
    events = RecordedEvents()
    runtime = await make_runtime(events, breaker=BREAKER, retry=ONE_TRY)
    flaky = ScriptedProvider("flaky", default=FAIL)
    backup = ScriptedProvider("backup")
    for _ in range(3):
        answered, _ = await _call(runtime, [flaky, backup])
        assert answered == "backup"
    assert flaky.calls == 3
    assert events.breaker == [("flaky", "open")]
    for _ in range(4):
        answered, _ = await _call(runtime, [flaky, backup])
        assert answered == "backup"
    assert flaky.calls == 3  # skipped while open
    with pytest.raises(CircuitOpen):
        await _call(runtime, [flaky])


async def test_one_probe_cluster_wide_then_success_closes(make_runtime, backend):
    events = RecordedEvents()
    first = await make_runtime(events, breaker=BREAKER, retry=ONE_TRY)
    # on Redis a second runtime is a second replica; in memory the same process races
    second = await make_runtime(breaker=BREAKER, retry=ONE_TRY) if backend == "redis" else first
    flaky = ScriptedProvider("flaky", default=FAIL)
    for _ in range(3):
        with pytest.raises(UpstreamTransient):
            await _call(first, [flaky])
    assert await second.breakers.acquire("flaky") == "open"
    await asyncio.sleep(0.35)
    states = await asyncio.gather(*(rt.breakers.acquire("flaky")
                                    for rt in [first, second] * 10))
    assert sorted(states).count("probe") == 1
    assert set(states) == {"probe", "open"}
    await first.breakers.record("flaky", True, probe=True)
    assert await second.breakers.acquire("flaky") == "closed"
    assert ("flaky", "closed") in events.breaker


async def test_failed_probe_reopens(make_runtime):
    events = RecordedEvents()
    runtime = await make_runtime(events, breaker=BREAKER, retry=ONE_TRY)
    flaky = ScriptedProvider("flaky", default=FAIL)
    for _ in range(3):
        with pytest.raises(UpstreamTransient):
            await _call(runtime, [flaky])
    await asyncio.sleep(0.35)
    with pytest.raises(UpstreamTransient):
        await _call(runtime, [flaky])  # the probe, and it fails
    assert flaky.calls == 4
    with pytest.raises(CircuitOpen):
        await _call(runtime, [flaky])
    assert flaky.calls == 4
    assert events.breaker == [("flaky", "open"), ("flaky", "half_open"), ("flaky", "open")]
    await asyncio.sleep(0.35)
    flaky.default = Reply()
    answered, _ = await _call(runtime, [flaky])  # a good probe closes it
    assert answered == "flaky"
    assert events.breaker[-1] == ("flaky", "closed")
    answered, _ = await _call(runtime, [flaky])
    assert flaky.calls == 6


async def test_failure_ratio_needs_min_calls(make_runtime):
    runtime = await make_runtime(breaker={"failure_ratio": 0.5, "min_calls": 4,
                                          "failure_threshold": 1, "open_s": 5},
                                 retry=ONE_TRY)
    mixed = ScriptedProvider("mixed", [FAIL, Reply(), FAIL, FAIL])
    results = []
    for _ in range(4):
        try:
            await _call(runtime, [mixed])
            results.append("ok")
        except UpstreamTransient:
            results.append("fail")
    assert results == ["fail", "ok", "fail", "fail"]  # open only at 3 of 4
    with pytest.raises(CircuitOpen):
        await _call(runtime, [mixed])
    assert mixed.calls == 4


async def test_client_errors_do_not_count_against_the_deployment(make_runtime):
    from tako.core.errors import InvalidRequest

    runtime = await make_runtime(breaker=BREAKER, retry=ONE_TRY)
    picky = ScriptedProvider("picky", default=InvalidRequest("bad tool schema"))
    for _ in range(5):
        with pytest.raises(InvalidRequest):
            await _call(runtime, [picky])
    assert await runtime.breakers.acquire("picky") == "closed"


async def test_a_cancelled_probe_frees_the_probe_slot(make_runtime):
    runtime = await make_runtime(breaker=BREAKER, retry=ONE_TRY)
    flaky = ScriptedProvider("flaky", default=FAIL)
    for _ in range(3):
        with pytest.raises(UpstreamTransient):
            await _call(runtime, [flaky])
    await asyncio.sleep(0.35)
    flaky.default = Reply()
    flaky.delay_s = 10
    flaky.called.clear()
    probe = asyncio.create_task(_call(runtime, [flaky]))
    await asyncio.wait_for(flaky.called.wait(), 5)
    assert await runtime.breakers.acquire("flaky") == "open"  # the probe is in flight
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    assert await runtime.breakers.acquire("flaky") == "probe"


async def test_the_guard_is_an_llm_provider(make_runtime):
    from tako.core.protocols import LlmProvider

    runtime = await make_runtime()
    admission = await runtime.admit(ALICE, "m", 10, 0.0)
    guarded = runtime.alias_provider(
        admission, "alias", [ScriptedProvider("a", price_per_token=1e-6),
                                                 ScriptedProvider("b", price_per_token=3e-6)])
    assert isinstance(guarded, LlmProvider)
    assert guarded.estimate_cost_usd(100, 100) == pytest.approx(6e-4)  # the dearer one
    assert guarded.answered_by is None


async def test_a_probe_answered_with_a_client_error_closes_the_circuit(make_runtime):
    from tako.core.errors import InvalidRequest

    runtime = await make_runtime(breaker=BREAKER, retry=ONE_TRY)
    flaky = ScriptedProvider("flaky", [FAIL, FAIL, FAIL, InvalidRequest("bad schema")])
    for _ in range(3):
        with pytest.raises(UpstreamTransient):
            await _call(runtime, [flaky])
    await asyncio.sleep(0.35)
    with pytest.raises(InvalidRequest):
        await _call(runtime, [flaky])
    assert await runtime.breakers.acquire("flaky") == "closed"


async def test_another_replica_sees_an_opened_circuit_within_the_cache_time(make_runtime,
                                                                           backend):
    breaker = {**BREAKER, "open_s": 30, "closed_cache_s": 0.2}
    first = await make_runtime(breaker=breaker, retry=ONE_TRY)
    second = await make_runtime(breaker=breaker, retry=ONE_TRY)
    if backend == "memory":
        second = first  # one process: there is no other replica
    assert await second.breakers.acquire("flaky") == "closed"
    flaky = ScriptedProvider("flaky", default=FAIL)
    for _ in range(3):
        with pytest.raises(UpstreamTransient):
            await _call(first, [flaky])
    assert await first.breakers.acquire("flaky") == "open"
    await asyncio.sleep(0.25)
    assert await second.breakers.acquire("flaky") == "open"
