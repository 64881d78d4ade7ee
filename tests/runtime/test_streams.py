"""Streams settle their reservation at End, on failure, and when closed early."""

from __future__ import annotations

import asyncio

import pytest

from tako.core.errors import UpstreamTransient
from tako.core.types import ChunkError, Delta, End, Principal
from tests.fakes.provider import ScriptedProvider, Stream, request

ALICE = Principal("acme", "alice", "key-a")
BUDGET = [{"scope": "tenant", "period": "day", "usd": 100}]


async def _spent(runtime) -> float:
    return await runtime.spend("tenant", "acme", "day", "acme")


async def test_stream_settles_at_end_with_the_reported_usage(make_runtime):
    runtime = await make_runtime(budgets=BUDGET)
    admission = await runtime.admit(ALICE, "m", 100, 0.5)
    guarded = runtime.alias_provider(
        admission, "a", [ScriptedProvider("d", default=Stream(usd=0.02))])
    chunks = [c async for c in guarded.stream(request())]
    assert isinstance(chunks[-1], End)
    assert await _spent(runtime) == pytest.approx(0.02)
    assert guarded.answered_by == "d"


async def test_mid_stream_failure_charges_what_was_used(make_runtime):
    runtime = await make_runtime(budgets=BUDGET)
    admission = await runtime.admit(ALICE, "m", 100, 0.5)
    broken = ScriptedProvider("d", default=Stream(deltas=["a", "b", "c"], fail_after=2,
                                                 usd=0.03))
    guarded = runtime.alias_provider(
        admission, "a", [broken])
    chunks = [c async for c in guarded.stream(request())]
    assert [type(c) for c in chunks] == [Delta, Delta, ChunkError, End]
    assert await _spent(runtime) == pytest.approx(0.03)


async def test_failure_before_any_chunk_charges_nothing(make_runtime):
    runtime = await make_runtime(budgets=BUDGET, retry={"max_attempts": 2,
                                                        "base_delay_s": 0.001})
    admission = await runtime.admit(ALICE, "m", 100, 0.5)
    down = ScriptedProvider("d", default=UpstreamTransient("500"))
    guarded = runtime.alias_provider(
        admission, "a", [down])
    with pytest.raises(UpstreamTransient):
        async for _ in guarded.stream(request()):
            pass
    assert await _spent(runtime) == 0


async def test_early_close_charges_what_was_streamed_not_the_reservation(make_runtime):
    runtime = await make_runtime(budgets=BUDGET)
    admission = await runtime.admit(ALICE, "m", 100, 0.5)
    endless = ScriptedProvider("d", default=Stream(deltas=["a"] * 10, usd=0.01))
    guarded = runtime.alias_provider(
        admission, "a", [endless])
    stream = guarded.stream(request())
    first = await anext(stream)
    assert isinstance(first, Delta)
    await stream.aclose()
    # the prompt (8 tokens estimated) and one token seen, at 1e-6 USD a token
    assert await _spent(runtime) == pytest.approx(9e-6)
    assert admission.estimated.total_tokens == 9


async def test_early_close_never_charges_more_than_the_reservation(make_runtime):
    runtime = await make_runtime(budgets=BUDGET)
    admission = await runtime.admit(ALICE, "m", 10_000, 0.0001)
    # 3000 characters seen at 1e-4 USD per token: far beyond the tiny reservation
    chatty = ScriptedProvider("d", default=Stream(deltas=["x" * 1000] * 5),
                              price_per_token=1e-4)
    guarded = runtime.alias_provider(
        admission, "a", [chatty])
    stream = guarded.stream(request())
    for _ in range(3):
        await anext(stream)
    await stream.aclose()
    assert await _spent(runtime) == pytest.approx(0.0001)


async def test_cancelled_stream_is_charged_what_it_streamed(make_runtime):
    runtime = await make_runtime(budgets=BUDGET)
    admission = await runtime.admit(ALICE, "m", 100, 0.5)
    hanging = ScriptedProvider("d", default=Stream(deltas=["a"], end=False))
    guarded = runtime.alias_provider(
        admission, "a", [hanging])
    first_chunk = asyncio.Event()

    async def consume() -> None:
        async for _ in guarded.stream(request()):
            first_chunk.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first_chunk.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await _spent(runtime) == pytest.approx(9e-6)  # 8 prompt tokens and one seen


async def test_later_stream_calls_reserve_their_own_estimate(make_runtime):
    runtime = await make_runtime(budgets=[{"scope": "tenant", "period": "day", "usd": 1}])
    admission = await runtime.admit(ALICE, "m", 100, 0.1)
    worker = ScriptedProvider("d", default=Stream(usd=0.3), price_per_token=1e-3)
    guarded = runtime.alias_provider(
        admission, "a", [worker])
    from tako.core.errors import QuotaExceeded

    with pytest.raises(QuotaExceeded):
        for _ in range(5):
            async for _ in guarded.stream(request(max_tokens=100)):
                pass
    # 0.3 per call; the 4th call would need 0.9 + 0.108
    assert worker.calls == 3
    assert await _spent(runtime) == pytest.approx(0.9)


async def test_cancelled_before_the_first_chunk_is_charged_the_prompt(make_runtime):
    runtime = await make_runtime(budgets=BUDGET)
    admission = await runtime.admit(ALICE, "m", 100, 0.5)
    slow = ScriptedProvider("d", default=Stream(), delay_s=10)
    guarded = runtime.alias_provider(
        admission, "a", [slow])

    async def consume() -> None:
        async for _ in guarded.stream(request()):
            pass

    task = asyncio.create_task(consume())
    await asyncio.wait_for(slow.called.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await _spent(runtime) == pytest.approx(8e-6)  # the prompt's 8 tokens


async def test_an_upstream_stream_without_end_still_ends_with_one(make_runtime):
    runtime = await make_runtime(budgets=BUDGET)
    admission = await runtime.admit(ALICE, "m", 100, 0.5)
    abrupt = ScriptedProvider("d", default=Stream(deltas=["x" * 30], end=False, hang=False),
                              price_per_token=1e-3)
    guarded = runtime.alias_provider(
        admission, "a", [abrupt])
    chunks = [c async for c in guarded.stream(request())]
    assert [type(c) for c in chunks] == [Delta, End]
    # charged what was seen: 8 prompt + 10 completion tokens at 1e-3
    assert await _spent(runtime) == pytest.approx(0.018)
