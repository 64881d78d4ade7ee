"""Retry with full jitter on transient errors only, fallback order, bounded time."""

from __future__ import annotations

import random
import time

import pytest

from tako.core.errors import (
    InvalidRequest,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamTransient,
)
from tako.core.types import Principal
from tako.runtime.fallback import attempt_order
from tako.runtime.retry import backoff_s
from tako.runtime.settings import RetrySettings
from tests.fakes.provider import Reply, ScriptedProvider, request
from tests.support.runtimes import RecordedEvents

ALICE = Principal("acme", "alice", "key-a")


async def _guard(runtime, providers, weights=None):
    admission = await runtime.admit(ALICE, "m", 10, 0.0)
    return runtime.alias_provider(admission, "alias", providers, weights)


async def test_transient_errors_are_retried_then_succeed(make_runtime):
    events = RecordedEvents()
    runtime = await make_runtime(events, retry={"max_attempts": 3, "base_delay_s": 0.001})
    flaky = ScriptedProvider("flaky", [UpstreamTransient("500"), UpstreamTransient("502")])
    guarded = await _guard(runtime, [flaky])
    response = await guarded.chat(request())
    assert response.content == "hello world"
    assert flaky.calls == 3
    assert events.retries == ["flaky", "flaky"]
    assert guarded.answered_by == "flaky"


async def test_attempts_are_bounded_then_the_next_deployment_answers(make_runtime):
    runtime = await make_runtime(retry={"max_attempts": 2, "base_delay_s": 0.001})
    down = ScriptedProvider("down", default=UpstreamTransient("503"))
    backup = ScriptedProvider("backup")
    guarded = await _guard(runtime, [down, backup])
    await guarded.chat(request())
    assert (down.calls, backup.calls, guarded.answered_by) == (2, 1, "backup")
    lone = await _guard(runtime, [ScriptedProvider("down2", default=UpstreamTransient("503"))])
    with pytest.raises(UpstreamTransient):
        await lone.chat(request())


async def test_non_transient_errors_are_not_retried(make_runtime):
    runtime = await make_runtime()
    auth = ScriptedProvider("auth", [UpstreamError("provider auth returned 401")])
    backup = ScriptedProvider("backup")
    guarded = await _guard(runtime, [auth, backup])
    await guarded.chat(request())
    assert (auth.calls, backup.calls) == (1, 1)  # falls back, no retry

    bad = ScriptedProvider("bad", [InvalidRequest("context too long")])
    other = ScriptedProvider("other")
    guarded = await _guard(runtime, [bad, other])
    with pytest.raises(InvalidRequest):
        await guarded.chat(request())
    assert (bad.calls, other.calls) == (1, 0)  # a bad request fails everywhere


async def test_retry_after_is_honoured(make_runtime):
    runtime = await make_runtime(retry={"max_attempts": 2, "base_delay_s": 0.001})
    limited = ScriptedProvider("limited", [UpstreamRateLimited("429", retry_after=0.3)])
    guarded = await _guard(runtime, [limited])
    started = time.monotonic()
    await guarded.chat(request())
    assert time.monotonic() - started >= 0.3
    assert limited.calls == 2


async def test_retry_after_beyond_the_deadline_moves_on(make_runtime):
    runtime = await make_runtime(retry={"max_attempts": 3, "total_timeout_s": 0.5})
    limited = ScriptedProvider("limited", default=UpstreamRateLimited("429", retry_after=30))
    backup = ScriptedProvider("backup")
    guarded = await _guard(runtime, [limited, backup])
    started = time.monotonic()
    await guarded.chat(request())
    assert time.monotonic() - started < 0.3
    assert (limited.calls, guarded.answered_by) == (1, "backup")


async def test_total_time_is_bounded(make_runtime):
    runtime = await make_runtime(retry={"max_attempts": 5, "total_timeout_s": 0.3})
    slow = ScriptedProvider("slow", delay_s=5)
    backup = ScriptedProvider("backup", delay_s=5)
    guarded = await _guard(runtime, [slow, backup])
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        await guarded.chat(request())
    assert time.monotonic() - started < 1.0
    assert guarded.admission.upstream_seconds == pytest.approx(0.3, abs=0.1)


def test_full_jitter_stays_under_the_growing_cap():
    settings = RetrySettings(base_delay_s=0.1, max_delay_s=0.5)
    rng = random.Random(7)
    for attempt, cap in [(1, 0.1), (2, 0.2), (3, 0.4), (6, 0.5)]:
        delays = [backoff_s(attempt, settings, None, rng) for _ in range(200)]
        assert 0 <= min(delays) and max(delays) <= cap
        assert max(delays) > cap * 0.8 and min(delays) < cap * 0.2  # spread, not fixed
    assert backoff_s(1, settings, 2.0, rng) == 2.0


async def test_no_retry_after_the_first_stream_chunk(make_runtime):
    from tako.core.types import ChunkError, End
    from tests.fakes.provider import Stream

    runtime = await make_runtime(retry={"max_attempts": 3, "base_delay_s": 0.001})
    broken = ScriptedProvider("broken", [Stream(deltas=["a", "b", "c"], fail_after=2)],
                              default=Stream())
    backup = ScriptedProvider("backup", default=Stream())
    guarded = await _guard(runtime, [broken, backup])
    chunks = [c async for c in guarded.stream(request())]
    assert isinstance(chunks[-2], ChunkError) and isinstance(chunks[-1], End)
    assert (broken.calls, backup.calls) == (1, 0)


async def test_stream_failure_before_the_first_chunk_is_retried(make_runtime):
    from tako.core.types import Delta
    from tests.fakes.provider import Stream

    runtime = await make_runtime(retry={"max_attempts": 3, "base_delay_s": 0.001})
    flaky = ScriptedProvider("flaky", [UpstreamTransient("500")], default=Stream(deltas=["x"]))
    guarded = await _guard(runtime, [flaky])
    chunks = [c async for c in guarded.stream(request())]
    assert isinstance(chunks[0], Delta) and chunks[0].content == "x"
    assert flaky.calls == 2


async def test_fallback_follows_the_listed_order(make_runtime):
    runtime = await make_runtime(retry={"max_attempts": 1})
    a = ScriptedProvider("a", default=UpstreamTransient("500"))
    b = ScriptedProvider("b", default=UpstreamTransient("500"))
    c = ScriptedProvider("c", default=Reply())
    guarded = await _guard(runtime, [a, b, c])
    await guarded.chat(request())
    assert (a.calls, b.calls, c.calls, guarded.answered_by) == (1, 1, 1, "c")


def test_weighted_order_puts_heavier_deployments_first_in_proportion():
    rng = random.Random(1)
    firsts = {"a": 0, "b": 0, "c": 0}
    for _ in range(4000):
        order = attempt_order(["a", "b", "c"], [6, 3, 1], rng)
        assert sorted(order) == ["a", "b", "c"]
        firsts[order[0]] += 1
    assert 2250 < firsts["a"] < 2550  # 60%
    assert 1050 < firsts["b"] < 1350  # 30%
    assert 300 < firsts["c"] < 500  # 10%
    assert attempt_order(["a", "b"], [0, 1], rng) == ["b", "a"]


async def test_weighted_guard_spreads_calls(make_runtime):
    runtime = await make_runtime()
    heavy, light = ScriptedProvider("heavy"), ScriptedProvider("light")
    for _ in range(200):
        guarded = await _guard(runtime, [heavy, light], weights=[3, 1])
        await guarded.chat(request())
    assert heavy.calls + light.calls == 200
    assert 120 < heavy.calls < 180
