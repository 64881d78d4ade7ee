"""GCRA rate limits: exact bursts, smooth refill, tokens per minute, scopes, overrides."""

from __future__ import annotations

import asyncio

import pytest

from tako.core.errors import RateLimited
from tako.core.types import Principal

ALICE = Principal("acme", "alice", "key-a")


async def test_burst_of_limit_then_rejected_with_retry_after(make_runtime):
    runtime = await make_runtime(rate_limits=[{"scope": "key", "rpm": 20}])
    admitted = [await runtime.admit(ALICE, "m", 1, 0.0) for _ in range(20)]
    assert [a.headers["x-ratelimit-remaining-requests"] for a in admitted] == [
        str(n) for n in range(19, -1, -1)]
    assert admitted[0].headers["x-ratelimit-limit-requests"] == "20"
    with pytest.raises(RateLimited) as denied:
        await runtime.admit(ALICE, "m", 1, 0.0)
    # one request is earned back every 3 s
    assert denied.value.retry_after is not None and 2.9 < denied.value.retry_after <= 3.0
    headers = denied.value.response_headers()
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["retry-after"] == "3"


async def test_smooth_refill_earns_one_request_per_interval(make_runtime):
    runtime = await make_runtime(rate_limits=[{"scope": "key", "rpm": 120}])  # one per 500 ms
    for _ in range(120):
        await runtime.admit(ALICE, "m", 1, 0.0)
    with pytest.raises(RateLimited) as denied:
        await runtime.admit(ALICE, "m", 1, 0.0)
    assert denied.value.retry_after is not None and denied.value.retry_after <= 0.5
    await asyncio.sleep(denied.value.retry_after + 0.02)
    await runtime.admit(ALICE, "m", 1, 0.0)
    with pytest.raises(RateLimited):
        await runtime.admit(ALICE, "m", 1, 0.0)


async def test_tokens_per_minute_and_release_gives_tokens_back(make_runtime):
    runtime = await make_runtime(rate_limits=[{"scope": "user", "tpm": 1000}])
    first = await runtime.admit(ALICE, "m", 400, 0.0)
    assert first.headers["x-ratelimit-remaining-tokens"] == "600"
    second = await runtime.admit(ALICE, "m", 400, 0.0)
    with pytest.raises(RateLimited) as denied:
        await runtime.admit(ALICE, "m", 400, 0.0)
    assert "tokens per minute" in denied.value.message
    await runtime.release(first)
    await runtime.release(second)
    third = await runtime.admit(ALICE, "m", 400, 0.0)
    assert int(third.headers["x-ratelimit-remaining-tokens"]) >= 590


async def test_model_scope_counts_per_model_within_a_tenant(make_runtime):
    runtime = await make_runtime(rate_limits=[{"scope": "model", "rpm": 2}])
    bob = Principal("acme", "bob", "key-b")
    await runtime.admit(ALICE, "gpt", 1, 0.0)
    await runtime.admit(bob, "gpt", 1, 0.0)
    with pytest.raises(RateLimited):
        await runtime.admit(ALICE, "gpt", 1, 0.0)
    await runtime.admit(ALICE, "claude", 1, 0.0)
    await runtime.admit(Principal("other", "carol", "key-c"), "gpt", 1, 0.0)


async def test_scopes_are_separate_counters(make_runtime):
    runtime = await make_runtime(rate_limits=[{"scope": "key", "rpm": 1},
                                              {"scope": "tenant", "rpm": 3}])
    await runtime.admit(ALICE, "m", 1, 0.0)
    with pytest.raises(RateLimited):
        await runtime.admit(ALICE, "m", 1, 0.0)
    await runtime.admit(Principal("acme", "alice", "key-a2"), "m", 1, 0.0)
    await runtime.admit(Principal("acme", "bob", "key-b"), "m", 1, 0.0)
    with pytest.raises(RateLimited) as denied:
        await runtime.admit(Principal("acme", "dan", "key-d"), "m", 1, 0.0)
    assert "tenant" in denied.value.message


async def test_principal_override_replaces_the_configured_limit(make_runtime):
    runtime = await make_runtime(rate_limits=[{"scope": "key", "rpm": 100}])
    strict = Principal("acme", "eve", "key-e",
                       metadata={"rate_limits": [{"scope": "key", "rpm": 2}]})
    await runtime.admit(strict, "m", 1, 0.0)
    admission = await runtime.admit(strict, "m", 1, 0.0)
    assert admission.headers["x-ratelimit-limit-requests"] == "2"
    with pytest.raises(RateLimited):
        await runtime.admit(strict, "m", 1, 0.0)
    for _ in range(5):
        await runtime.admit(ALICE, "m", 1, 0.0)


async def test_a_denial_changes_no_counter(make_runtime):
    runtime = await make_runtime(rate_limits=[{"scope": "key", "rpm": 3},
                                              {"scope": "user", "rpm": 1}],
                                 budgets=[{"scope": "key", "period": "day", "usd": 10}])
    await runtime.admit(ALICE, "m", 1, 1.0)
    for _ in range(3):
        with pytest.raises(RateLimited) as denied:
            await runtime.admit(ALICE, "m", 1, 1.0)
        assert "user" in denied.value.message
    assert await runtime.spend("key", "key-a", "day", "acme") == pytest.approx(1.0)
    await runtime.admit(Principal("acme", "yan", "key-a"), "m", 1, 1.0)
    await runtime.admit(Principal("acme", "zed", "key-a"), "m", 1, 1.0)
    with pytest.raises(RateLimited) as denied:
        await runtime.admit(Principal("acme", "xi", "key-a"), "m", 1, 1.0)
    assert "key" in denied.value.message
    assert await runtime.spend("key", "key-a", "day", "acme") == pytest.approx(3.0)


async def test_memory_backend_forgets_full_buckets_and_past_periods():
    from tako.runtime.memory import PRUNE_EVERY_S, MemoryBackend
    from tako.runtime.plan import build_plan
    from tako.runtime.settings import RuntimeSettings

    now = [1_700_000_000.0]
    backend = MemoryBackend(clock=lambda: now[0])
    settings = RuntimeSettings(rate_limits=[{"scope": "key", "rpm": 60}],  # type: ignore[list-item]
                               budgets=[{"scope": "key", "period": "day", "usd": 1}])  # type: ignore[list-item]
    plan = build_plan(settings, ALICE, "m")
    assert (await backend.admit([(plan.rates[0], 1)], [(plan.budgets[0], 5)])).denied is None
    base = plan.budgets[0].base
    assert await backend.spend(base, "day") == 5
    now[0] += 3 * 86400 + PRUNE_EVERY_S
    await backend.admit([], [])
    assert backend._tat == {} and backend._counters == {}


async def test_changed_overrides_take_effect_for_the_same_key(make_runtime):
    runtime = await make_runtime(rate_limits=[{"scope": "key", "rpm": 100}])
    before = await runtime.admit(ALICE, "m", 1, 0.0)
    assert before.headers["x-ratelimit-limit-requests"] == "100"
    tightened = Principal("acme", "alice", "key-a",
                          metadata={"rate_limits": [{"scope": "key", "rpm": 7}]})
    after = await runtime.admit(tightened, "m", 1, 0.0)
    assert after.headers["x-ratelimit-limit-requests"] == "7"
