"""One throwaway Redis Cluster (3 masters, 3 replicas) for the tests of this folder."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.redis_cluster import RedisClusterProcess, redis_cluster


@pytest.fixture(scope="session")
def cluster() -> Iterator[RedisClusterProcess]:
    with redis_cluster() as running:
        yield running
