"""What a circuit breaker counts: client calls (not retry attempts), failures that say the
deployment is unhealthy (5xx, timeouts, connection errors; never a 4xx), a failure rate
over a minimum number of calls; 429s cool a deployment down for its Retry-After on every
replica; refusals say when to come back, never after 0 seconds."""

from __future__ import annotations

import asyncio
import time

import pytest

from tako.core.errors import (
    CircuitOpen,
    RateLimited,
    UpstreamRateLimited,
    UpstreamTimeout,
    upstream_error_for,
)
from tako.core.types import Principal
from tako.runtime.settings import BreakerSettings
from tests.fakes.provider import Reply, ScriptedProvider, Stream, request

ALICE = Principal("acme", "alice", "key-a")
ONE_TRY = {"max_attempts": 1}
SERVER_ERROR = upstream_error_for("flaky", 500, {"error": {"message": "boom"}})
TOO_MANY = upstream_error_for("busy", 429, {"error": {"message": "slow down"}},
                              retry_after=2.0)
NOT_FOUND = upstream_error_for("picky", 404, {"error": {"message": "no such model"}})
AUTH = upstream_error_for("picky", 401, {"error": {"message": "bad key"}})
BAD_REQUEST = upstream_error_for("picky", 400, {"error": {"message": "bad tool schema"}})
RATIO = {"failure_ratio": 0.5, "min_calls": 4, "window_s": 30, "open_s": 5}


async def _outcome(runtime, providers) -> str:
    """``ok`` or the error class name of one client call through ``providers``."""
    admission = await runtime.admit(ALICE, "m", 10, 0.0)
    guarded = runtime.alias_provider(admission, "alias", providers)
    try:
        await guarded.chat(request())
    except Exception as error:  # noqa: BLE001 - the class name is what is compared
        return type(error).__name__
    return "ok"


def test_the_defaults_open_on_a_failure_rate_over_a_minimum_of_calls():
    defaults = BreakerSettings()
    assert (defaults.failure_ratio, defaults.min_calls, defaults.failure_threshold) == \
        (0.5, 10, None)
    legacy = BreakerSettings(failure_threshold=5)  # an older config keeps its meaning
    assert (legacy.failure_ratio, legacy.failure_threshold) == (None, 5)


async def test_two_failing_client_requests_do_not_open_a_circuit_with_the_defaults(
        make_runtime):
    runtime = await make_runtime()  # default breaker, three attempts per call
    flaky = ScriptedProvider("flaky", default=SERVER_ERROR)
    assert [await _outcome(runtime, [flaky]) for _ in range(2)] == ["UpstreamTransient"] * 2
    assert flaky.calls == 6  # six attempts, two client requests
    assert await runtime.breakers.acquire("flaky") == "closed"


async def test_retry_attempts_count_once_per_client_request(make_runtime):
    runtime = await make_runtime(breaker={**RATIO, "min_calls": 3},
                                 retry={"max_attempts": 3, "base_delay_s": 0.001})
    # each call fails twice and then answers: six failed attempts, three good requests
    flaky = ScriptedProvider("flaky", [SERVER_ERROR, SERVER_ERROR, Reply()] * 3)
    assert [await _outcome(runtime, [flaky]) for _ in range(3)] == ["ok"] * 3
    assert await runtime.breakers.acquire("flaky") == "closed"


async def test_client_errors_and_429s_never_open_a_circuit(make_runtime):
    runtime = await make_runtime(breaker={**RATIO, "min_calls": 2}, retry=ONE_TRY)
    picky = ScriptedProvider("picky", [BAD_REQUEST, NOT_FOUND, AUTH] * 7)
    outcomes = {await _outcome(runtime, [picky]) for _ in range(21)}
    assert outcomes == {"InvalidRequest", "UpstreamError"}
    assert await runtime.breakers.acquire("picky") == "closed"
    busy = ScriptedProvider("busy", default=UpstreamRateLimited("429", retry_after=0.05))
    for _ in range(6):
        await _outcome(runtime, [busy])
        await asyncio.sleep(0.06)  # past its cool-down, so every call reaches the vendor
    assert busy.calls == 6
    assert await runtime.breakers.acquire("busy") == "closed"


async def test_a_mix_opens_once_unhealthy_answers_reach_the_rate(make_runtime):
    runtime = await make_runtime(breaker=RATIO, retry=ONE_TRY)
    timeout = UpstreamTimeout("provider mixed did not answer")
    mixed = ScriptedProvider("mixed", [SERVER_ERROR, BAD_REQUEST, Reply(), NOT_FOUND,
                                       timeout, SERVER_ERROR])
    outcomes = [await _outcome(runtime, [mixed]) for _ in range(6)]
    assert outcomes == ["UpstreamTransient", "InvalidRequest", "ok", "UpstreamError",
                        "UpstreamTimeout", "UpstreamTransient"]
    # counted: 500, ok, timeout, 500 -> 3 of 4 failed, at least min_calls: open
    assert await runtime.breakers.acquire("mixed") == "open"
    assert await _outcome(runtime, [mixed]) == "CircuitOpen"
    assert mixed.calls == 6


async def test_below_min_calls_even_all_failures_keep_it_closed(make_runtime):
    runtime = await make_runtime(breaker=RATIO, retry=ONE_TRY)
    flaky = ScriptedProvider("flaky", default=SERVER_ERROR)
    for _ in range(3):
        await _outcome(runtime, [flaky])
    assert await runtime.breakers.acquire("flaky") == "closed"
    await _outcome(runtime, [flaky])
    assert await runtime.breakers.acquire("flaky") == "open"


async def test_a_429_cools_the_deployment_down_on_every_replica_for_its_retry_after(
        make_runtime, backend):
    first = await make_runtime(retry=ONE_TRY)
    second = await make_runtime(retry=ONE_TRY) if backend == "redis" else first
    busy = ScriptedProvider("busy", [TOO_MANY])
    backup = ScriptedProvider("backup")
    assert await _outcome(first, [busy]) == "UpstreamRateLimited"
    assert await second.breakers.acquire("busy") == "cool"
    assert await _outcome(second, [busy, backup]) == "ok"  # skipped: the backup answers
    assert (busy.calls, backup.calls) == (1, 1)
    admission = await second.admit(ALICE, "m", 10, 0.0)
    with pytest.raises(UpstreamRateLimited) as refused:
        await second.alias_provider(admission, "alias", [busy]).chat(request())
    assert refused.value.response_headers()["retry-after"] == "2"
    assert busy.calls == 1  # refused without calling the vendor
    await asyncio.sleep(2.05)
    assert await _outcome(second, [busy]) == "ok"


async def test_an_open_circuit_refuses_fast_saying_when_the_probe_is_due(make_runtime,
                                                                          backend):
    first = await make_runtime(breaker={**RATIO, "open_s": 7}, retry=ONE_TRY)
    second = await make_runtime(breaker={**RATIO, "open_s": 7}, retry=ONE_TRY) \
        if backend == "redis" else first
    flaky = ScriptedProvider("flaky", default=SERVER_ERROR)
    for _ in range(4):
        await _outcome(first, [flaky])
    admission = await second.admit(ALICE, "m", 10, 0.0)
    with pytest.raises(CircuitOpen) as refused:
        await second.alias_provider(admission, "alias", [flaky]).chat(request())
    assert refused.value.response_headers()["retry-after"] == "7"
    assert "due in 7s" in refused.value.message
    started = time.perf_counter()
    states = await asyncio.gather(*(second.breakers.acquire("flaky") for _ in range(300)))
    elapsed = time.perf_counter() - started
    assert set(states) == {"open"}
    assert elapsed < 0.05  # the deadline is known locally: no round trip per refusal
    assert flaky.calls == 4


async def test_a_rate_limit_refusal_never_says_retry_after_0(make_runtime):
    runtime = await make_runtime(rate_limits=[{"scope": "key", "rpm": 120}])
    refusals = []
    for _ in range(200):  # a burst of 120, then one request per half second
        try:
            await runtime.admit(ALICE, "m", 10, 0.0)
        except RateLimited as denied:
            refusals.append(denied)
            break
    assert refusals and refusals[0].retry_after is not None
    assert refusals[0].retry_after <= 0.5
    assert refusals[0].response_headers()["retry-after"] == "1"


async def test_a_stream_failing_mid_way_is_one_failed_call(make_runtime):
    runtime = await make_runtime(breaker={**RATIO, "failure_ratio": 0.6}, retry=ONE_TRY)
    broken = ScriptedProvider("broken", default=Stream(deltas=["a", "b", "c"], fail_after=2))
    for _ in range(4):  # each opened (a success so far), then broke: one failure each
        admission = await runtime.admit(ALICE, "m", 10, 0.0)
        guarded = runtime.alias_provider(admission, "alias", [broken])
        _ = [chunk async for chunk in guarded.stream(request())]
    assert await runtime.breakers.acquire("broken") == "open"  # 4 of 4, not 4 of 8


async def test_the_429_cool_down_can_be_turned_off(make_runtime):
    runtime = await make_runtime(breaker={"cool_down_on_429": False}, retry=ONE_TRY)
    busy = ScriptedProvider("busy", [TOO_MANY, Reply()])
    assert await _outcome(runtime, [busy]) == "UpstreamRateLimited"
    assert await _outcome(runtime, [busy]) == "ok"  # straight to the vendor again
