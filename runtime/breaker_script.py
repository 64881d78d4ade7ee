"""breaker.lua: acquire a call slot (closed, the single half-open probe, or open) and
record outcomes, on state shared by every replica."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from tako.runtime import keys
from tako.runtime.lua import LuaScript
from tako.runtime.settings import BreakerSettings

SCRIPT = LuaScript("breaker")


def _args(op: str, probe: bool, s: BreakerSettings, probe_ttl_s: float) -> list[Any]:
    return [op, "1" if probe else "0", s.failure_threshold,
            "" if s.failure_ratio is None else repr(s.failure_ratio), s.min_calls,
            int(s.window_s * 1000), int(s.open_s * 1000), max(1, int(probe_ttl_s * 1000))]


async def run(client: Redis, prefix: str, deployment: str, op: str, probe: bool,
              settings: BreakerSettings, probe_ttl_s: float) -> str:
    reply = await SCRIPT.run(
        client, [keys.breaker_key(prefix, deployment), keys.probe_key(prefix, deployment)],
        _args(op, probe, settings, probe_ttl_s))
    return reply.decode() if isinstance(reply, bytes) else str(reply)
