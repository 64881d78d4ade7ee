"""Redis backend: every replica pointed at the same Redis enforces the same numbers.

Each operation is one EVALSHA. Redis failures surface as ``BackendUnreachable``;
the client reconnects on the next call, and scripts are reloaded on NOSCRIPT, so the
gateway recovers when Redis comes back without a restart.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from tako.runtime import admit_script, breaker_script, reconcile_script, spend_script
from tako.runtime.backend import AdmitResult, BackendUnreachable, CounterDelta, TpmDelta
from tako.runtime.pipelined_redis import PipelinedRedis
from tako.runtime.pipelined_redis import supports as resp_supports
from tako.runtime.plan import BudgetItem, RateItem
from tako.runtime.redis_cluster import cluster_client, is_cluster_url
from tako.runtime.redis_sentinel import aclose_sentinel, is_sentinel_url, sentinel_client
from tako.runtime.settings import BreakerSettings

T = TypeVar("T")

# Connection loss, timeouts, and a server that cannot serve (loading, read-only replica
# after a failover, out of memory) all follow the configured failure mode.
UNREACHABLE = (RedisError, OSError)


class RedisBackend:
    in_process = False

    def __init__(self, url: str, prefix: str, timeout_s: float, max_connections: int = 64,
                 pool_timeout_s: float = 2.0) -> None:
        self.prefix = prefix
        self.pool_timeout_s = pool_timeout_s
        self._slots: asyncio.Semaphore | None = None
        self._sentinel = is_sentinel_url(url)
        if is_cluster_url(url) or self._sentinel:
            # redis-py's cluster and Sentinel clients fail when their connections run out
            # instead of waiting, so callers queue here for one of max_connections slots.
            self.client: Any = (sentinel_client if self._sentinel else cluster_client)(
                url, timeout_s, max_connections)
            self.hot: Any = self.client
            self._slots = asyncio.Semaphore(max_connections)
            return
        # A bounded pool: under load callers queue for a connection instead of opening
        # thousands. One quick retry covers a pooled connection that a Redis restart left
        # stale; timeouts are not retried so a script is never applied twice.
        pool = BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=pool_timeout_s,
            socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        )
        self.client = Redis(connection_pool=pool)
        # The per-request scripts share one pipelined connection (see runtime/pipelined_redis.py).
        self.hot = PipelinedRedis(url, timeout_s) if resp_supports(url) else self.client

    async def _call(self, op: Callable[[], Awaitable[T]]) -> T:
        try:
            if self._slots is None:
                return await op()
            async with asyncio.timeout(self.pool_timeout_s):
                await self._slots.acquire()
            try:
                return await op()
            finally:
                self._slots.release()
        except UNREACHABLE as exc:
            raise BackendUnreachable(f"{type(exc).__name__}: {exc}") from exc
        except TimeoutError as exc:
            raise BackendUnreachable(f"no Redis connection free within "
                                     f"{self.pool_timeout_s:g}s") from exc

    async def start(self) -> None:
        scripts = (admit_script.SCRIPT, reconcile_script.SCRIPT, spend_script.SCRIPT,
                   breaker_script.SCRIPT)
        for script in scripts:
            await self._call(partial(script.load, self.client))

    async def aclose(self) -> None:
        if self.hot is not self.client:
            await self.hot.aclose()
        if self._sentinel:
            await aclose_sentinel(self.client)
            return
        await self.client.aclose()
        if self._slots is None:
            await self.client.connection_pool.disconnect()

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except UNREACHABLE:
            return False

    async def admit(self, rates: list[tuple[RateItem, int]],
                    budgets: list[tuple[BudgetItem, int]]) -> AdmitResult:
        return await self._call(lambda: admit_script.admit(self.hot, rates, budgets))

    async def reconcile(self, counters: list[CounterDelta], tpm: list[TpmDelta]) -> None:
        await self._call(lambda: reconcile_script.reconcile(self.hot, counters, tpm))

    async def spend(self, base: str, period: str) -> int:
        return await self._call(lambda: spend_script.spend(self.client, base, period))

    async def breaker_acquire(self, deployment: str, settings: BreakerSettings,
                              probe_ttl_s: float, successes: int = 0) -> tuple[str, float]:
        reply: tuple[str, float] = await self._call(lambda: breaker_script.run(
            self.hot, self.prefix, deployment, "acquire", False, settings, probe_ttl_s,
            successes))
        return reply

    async def breaker_record(self, deployment: str, settings: BreakerSettings, ok: bool,
                             probe: bool, successes: int = 0) -> str | None:
        state = await self._call(lambda: breaker_script.run(
            self.hot, self.prefix, deployment, "success" if ok else "failure", probe,
            settings, 0, successes))
        return state or None

    async def breaker_cool(self, deployment: str, settings: BreakerSettings,
                           seconds: float) -> None:
        await self._call(lambda: breaker_script.run(
            self.hot, self.prefix, deployment, "cool", False, settings, 0,
            max(1, round(seconds * 1000))))

    async def breaker_abandon_probe(self, deployment: str, settings: BreakerSettings) -> None:
        await self._call(lambda: breaker_script.run(
            self.hot, self.prefix, deployment, "abandon", True, settings, 0))
