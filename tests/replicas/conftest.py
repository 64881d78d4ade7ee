"""Several real gateway processes sharing one throwaway Redis."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from tests.support.redis_server import RedisProcess, redis_server

_prefixes = itertools.count()


@pytest.fixture(scope="module")
def redis_proc() -> Iterator[RedisProcess]:
    with redis_server() as proc:
        yield proc


@pytest.fixture
def key_prefix() -> str:
    """A fresh key space per test, so tests sharing the Redis never see each other."""
    return f"r{next(_prefixes)}"
