"""reconcile.lua: apply the difference between reservations and actual usage."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from tako.runtime.backend import CounterDelta, TpmDelta
from tako.runtime.lua import LuaScript

SCRIPT = LuaScript("reconcile")


async def reconcile(client: Redis, counters: list[CounterDelta], tpm: list[TpmDelta]) -> None:
    keys = [c.key for c in counters] + [t.key for t in tpm]
    args: list[Any] = [len(counters)]
    for c in counters:
        args += [str(c.delta), c.ttl_s]
    for t in tpm:
        args += [t.limit, t.tokens]
    await SCRIPT.run(client, keys, args)
