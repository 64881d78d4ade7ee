"""Runtime tests run twice: on the in-memory backend and on a real Redis server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from tako.runtime import Runtime
from tests.support.redis_server import RedisProcess, redis_server
from tests.support.runtimes import fresh_key_prefix, started_runtime


@pytest.fixture(scope="session")
def redis_proc() -> Iterator[RedisProcess]:
    with redis_server() as proc:
        yield proc


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


MakeRuntime = Callable[..., Awaitable[Runtime]]


@pytest.fixture
async def make_runtime(backend: str, request: pytest.FixtureRequest
                       ) -> AsyncIterator[MakeRuntime]:
    """Builds started runtimes sharing one fresh key prefix (so two of them on Redis act
    as two replicas of one gateway). Keyword arguments are RuntimeSettings fields."""
    prefix = fresh_key_prefix()
    url = request.getfixturevalue("redis_proc").url if backend == "redis" else None
    made: list[Runtime] = []

    async def make(events: Any = None, **fields: Any) -> Runtime:
        runtime = await started_runtime(backend, url, prefix, events, **fields)
        made.append(runtime)
        return runtime

    yield make
    for runtime in made:
        await runtime.aclose()
