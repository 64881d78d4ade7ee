"""Stored Responses (``store: true``): the response body, the input items it was given and
the conversation it continued, kept per tenant so ``previous_response_id``, ``GET`` and
``DELETE /v1/responses/{id}`` work.

The memory store (the memory backend) keeps at most ``MAX_ENTRIES`` responses and
``MAX_TOTAL_BYTES`` in one process, oldest dropped first. The Redis store (the Redis
backend) is shared by every replica: one key per response, ``<prefix>:{<tenant>}:resp:<id>``,
expiring after ``TTL_S``. Either refuses to keep a record larger than ``MAX_RECORD_BYTES``.
A lookup names the tenant, so an id another tenant created is simply not found.
"""

from __future__ import annotations

import contextlib
import logging
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any, Protocol

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from tako.core.errors import Unavailable
from tako.runtime.settings import RuntimeSettings

log = logging.getLogger("tako.app.responses")

TTL_S = 30 * 24 * 3600  # OpenAI keeps stored responses for 30 days
MAX_ENTRIES = 10_000
MAX_TOTAL_BYTES = 256 * 1024 * 1024
MAX_RECORD_BYTES = 8 * 1024 * 1024


class ResponseStore(Protocol):
    async def put(self, tenant: str, response_id: str, record: dict[str, Any]) -> bool: ...

    async def get(self, tenant: str, response_id: str) -> dict[str, Any] | None: ...

    async def delete(self, tenant: str, response_id: str) -> bool: ...


class MemoryResponseStore:
    """One process's stored responses, bounded in count and bytes (oldest dropped)."""

    def __init__(self, max_entries: int = MAX_ENTRIES,
                 max_bytes: int = MAX_TOTAL_BYTES) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.size = 0
        self.entries: OrderedDict[tuple[str, str], bytes] = OrderedDict()

    async def put(self, tenant: str, response_id: str, record: dict[str, Any]) -> bool:
        raw = orjson.dumps(record)
        if len(raw) > min(MAX_RECORD_BYTES, self.max_bytes):
            log.warning("response %s not stored: %d bytes", response_id, len(raw))
            return False
        await self.delete(tenant, response_id)
        self.entries[(tenant, response_id)] = raw
        self.size += len(raw)
        while len(self.entries) > self.max_entries or self.size > self.max_bytes:
            _, dropped = self.entries.popitem(last=False)
            self.size -= len(dropped)
        return True

    async def get(self, tenant: str, response_id: str) -> dict[str, Any] | None:
        raw = self.entries.get((tenant, response_id))
        return None if raw is None else orjson.loads(raw)

    async def delete(self, tenant: str, response_id: str) -> bool:
        raw = self.entries.pop((tenant, response_id), None)
        if raw is None:
            return False
        self.size -= len(raw)
        return True


@contextlib.contextmanager
def _unavailable(doing: str) -> Iterator[None]:
    try:
        yield
    except (RedisError, OSError) as exc:
        raise Unavailable(f"the response store is unreachable while {doing}") from exc


class RedisResponseStore:
    """Stored responses shared by every replica, each key with a TTL."""

    def __init__(self, client: aioredis.Redis, prefix: str = "tako", ttl_s: int = TTL_S) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl_s = ttl_s

    @classmethod
    def from_url(cls, url: str, prefix: str = "tako", ttl_s: int = TTL_S) -> RedisResponseStore:
        return cls(aioredis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0),
                   prefix, ttl_s)

    def _key(self, tenant: str, response_id: str) -> str:
        return f"{self.prefix}:{{{tenant}}}:resp:{response_id}"

    async def put(self, tenant: str, response_id: str, record: dict[str, Any]) -> bool:
        raw = orjson.dumps(record)
        if len(raw) > MAX_RECORD_BYTES:
            log.warning("response %s not stored: %d bytes", response_id, len(raw))
            return False
        with _unavailable("storing a response"):
            await self.client.set(self._key(tenant, response_id), raw, ex=self.ttl_s)
        return True

    async def get(self, tenant: str, response_id: str) -> dict[str, Any] | None:
        with _unavailable("reading a stored response"):
            raw = await self.client.get(self._key(tenant, response_id))
        return None if raw is None else orjson.loads(raw)

    async def delete(self, tenant: str, response_id: str) -> bool:
        with _unavailable("deleting a stored response"):
            return bool(await self.client.delete(self._key(tenant, response_id)))

    async def aclose(self) -> None:
        await self.client.aclose()


def build_response_store(runtime: RuntimeSettings) -> ResponseStore:
    """Redis when the runtime backend is Redis (shared by replicas), else memory."""
    if runtime.backend == "redis" and runtime.redis_url:
        return RedisResponseStore.from_url(runtime.redis_url, runtime.key_prefix)
    return MemoryResponseStore()
