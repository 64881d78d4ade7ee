"""Backpressure and cancellation of the bounded producer/consumer channel."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tako.core.errors import UpstreamError
from tako.core.protocols import RunContext
from tako.core.types import ChatRequest, ChunkError, Delta, End, OrchEvent
from tako.orchestrators.api import make_context
from tako.orchestrators.channel import bounded
from tako.orchestrators.flow import Answer, Orchestration, Sink


async def test_slow_consumer_blocks_the_producer_at_the_bound() -> None:
    produced = 0

    async def numbers() -> AsyncIterator[int]:
        nonlocal produced
        for i in range(1000):
            produced += 1
            yield i

    consumed = 0
    gaps = []
    async for _ in bounded(numbers, maxsize=64):
        consumed += 1
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        gaps.append(produced - consumed)
        if consumed == 200:
            break
    # the queue holds at most 64, plus the one item the producer waits to put
    assert max(gaps) <= 65
    assert max(gaps) >= 60  # the producer did run ahead up to the bound
    assert produced < 1000


async def test_consumer_leaving_cancels_the_producer() -> None:
    finished = asyncio.Event()
    cancelled = asyncio.Event()

    async def endless() -> AsyncIterator[int]:
        try:
            i = 0
            while True:
                yield i
                i += 1
        except (asyncio.CancelledError, GeneratorExit):
            cancelled.set()
            raise
        finally:
            finished.set()

    stream = bounded(endless, maxsize=4)
    async for i in stream:
        if i == 10:
            break
    await stream.aclose()  # type: ignore[attr-defined]
    await asyncio.wait_for(finished.wait(), 1)
    assert cancelled.is_set()


async def test_producer_error_reaches_the_consumer_after_its_items() -> None:
    async def failing() -> AsyncIterator[int]:
        yield 1
        yield 2
        raise UpstreamError("broke")

    got = []
    with pytest.raises(UpstreamError):
        async for i in bounded(failing):
            got.append(i)
    assert got == [1, 2]


class Chatty(Orchestration):
    kind = "chatty"

    def __init__(self, n: int) -> None:
        self.n = n
        self.sent = 0

    async def run(self, ctx: RunContext, req: ChatRequest, sink: Sink) -> Answer:
        for i in range(self.n):
            await sink.event("step_start", step=i)
            await sink.delta("x")
            self.sent += 2
        return Answer("x" * self.n, streamed=True)


async def test_orchestrator_stream_applies_backpressure_and_ends_once() -> None:
    chatty = Chatty(500)
    ctx = make_context({}, emit_events=True)
    req = ChatRequest(model="chatty", messages=[{"role": "user", "content": "hi"}])
    items = []
    lag = []
    async for item in chatty.stream(ctx, req):
        items.append(item)
        await asyncio.sleep(0)
        lag.append(chatty.sent - len(items))
    assert max(lag) <= 66
    assert len([i for i in items if isinstance(i, Delta)]) == 500
    assert items[0].__class__ is OrchEvent
    assert sum(isinstance(i, End) for i in items) == 1 and isinstance(items[-1], End)
    assert not any(isinstance(i, ChunkError) for i in items)


async def test_events_stay_off_unless_the_client_opted_in() -> None:
    ctx = make_context({}, emit_events=False)
    req = ChatRequest(model="chatty", messages=[{"role": "user", "content": "hi"}])
    items = [i async for i in Chatty(3).stream(ctx, req)]
    assert [type(i).__name__ for i in items] == ["Delta", "Delta", "Delta", "End"]
