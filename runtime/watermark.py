"""Water-marks that only ever grow (core.protocols.StateStore) on Redis: watermark.lua
compares and sets atomically, so concurrent writers from any replica cannot lower one."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.exceptions import RedisError

from tako.core.errors import Unavailable
from tako.runtime import keys
from tako.runtime.lua import LuaScript

SCRIPT = LuaScript("watermark")


class RedisStateStore:
    def __init__(self, client: Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    async def get(self, key: str) -> float | None:
        try:
            value = await self.client.get(keys.watermark_key(self.prefix, key))
        except (RedisError, OSError) as exc:
            raise Unavailable(f"state store (Redis) unreachable: {type(exc).__name__}") from exc
        return None if value is None else float(value)

    async def raise_to(self, key: str, value: float) -> float:
        try:
            reply = await SCRIPT.run(self.client, [keys.watermark_key(self.prefix, key)],
                                     [repr(float(value))])
        except (RedisError, OSError) as exc:
            raise Unavailable(f"state store (Redis) unreachable: {type(exc).__name__}") from exc
        return float(reply)
