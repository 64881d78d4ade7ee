"""Bounded hand-off between an orchestration run (producer) and its client (consumer).

Items pass through an ``asyncio.Queue(maxsize)``: when the client reads slowly the queue
fills and the producer waits in ``put``, so memory stays bounded. When the consumer stops
early (client disconnect, ``aclose``), the producer task is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

DEFAULT_MAXSIZE = 64

Put = Callable[[Any], Awaitable[None]]

_DONE = object()


class _Failure:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


async def pump(
    produce: Callable[[Put], Awaitable[None]], maxsize: int = DEFAULT_MAXSIZE
) -> AsyncIterator[Any]:
    """Run ``produce(put)`` as a task and yield what it puts, at most ``maxsize`` buffered.

    An exception raised by the producer is re-raised in the consumer after the items put
    before it.
    """
    queue: asyncio.Queue[Any] = asyncio.Queue(maxsize)

    async def run() -> None:
        try:
            await produce(queue.put)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # handed over to the consumer
            await queue.put(_Failure(exc))
            return
        await queue.put(_DONE)

    task = asyncio.create_task(run())
    try:
        while True:
            item = await queue.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item
    finally:
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def bounded(
    gen_factory: Callable[[], AsyncIterator[T]], maxsize: int = DEFAULT_MAXSIZE
) -> AsyncIterator[T]:
    """Iterate ``gen_factory()`` in a producer task joined to the caller by a bounded queue."""

    async def produce(put: Put) -> None:
        async for item in gen_factory():
            await put(item)

    return pump(produce, maxsize)
