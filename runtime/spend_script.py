"""spend.lua: a budget counter in the current UTC period."""

from __future__ import annotations

from redis.asyncio import Redis

from tako.runtime.lua import LuaScript

SCRIPT = LuaScript("spend")


async def spend(client: Redis, base: str, period: str) -> int:
    value = await SCRIPT.run(client, [base], [period])
    return int(float(value.decode() if isinstance(value, bytes) else value))
