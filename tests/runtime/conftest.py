"""Runtime tests run twice: on the in-memory backend and on a real Redis server."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from tako.runtime import Runtime, RuntimeSettings
from tests.support.redis_server import RedisProcess, redis_server

_prefixes = itertools.count()


class RecordedEvents:
    def __init__(self) -> None:
        self.rejections: list[str] = []
        self.unaccounted: list[float] = []
        self.breaker: list[tuple[str, str]] = []
        self.retries: list[str] = []

    def rejected(self, kind: str) -> None:
        self.rejections.append(kind)

    def unaccounted_spend(self, usd: float) -> None:
        self.unaccounted.append(usd)

    def breaker_state(self, deployment: str, state: str) -> None:
        self.breaker.append((deployment, state))

    def retried(self, deployment: str) -> None:
        self.retries.append(deployment)


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
    prefix = f"t{next(_prefixes)}"
    url = request.getfixturevalue("redis_proc").url if backend == "redis" else None
    made: list[Runtime] = []

    async def make(events: Any = None, **fields: Any) -> Runtime:
        fields.setdefault("retry", {"base_delay_s": 0.001, "max_delay_s": 0.005})
        # a loaded test machine can stall the event loop well past the 0.5 s default
        fields.setdefault("redis_timeout_s", 5.0)
        settings = RuntimeSettings.model_validate(
            {"backend": backend, "redis_url": url, "key_prefix": prefix, **fields})
        runtime = Runtime.from_settings(settings, events)
        await runtime.start()
        made.append(runtime)
        return runtime

    yield make
    for runtime in made:
        await runtime.aclose()
