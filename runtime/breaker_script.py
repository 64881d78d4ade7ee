"""breaker.lua: acquire a call slot (closed, the single half-open probe, open, or cooling
down after a 429) and record outcomes, on state shared by every replica."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from tako.runtime import keys
from tako.runtime.lua import LuaScript
from tako.runtime.settings import BreakerSettings

SCRIPT = LuaScript("breaker")


def _args(op: str, probe: bool, s: BreakerSettings, probe_ttl_s: float,
          extra: int) -> list[Any]:
    return [op, "1" if probe else "0",
            "" if s.failure_threshold is None else s.failure_threshold,
            "" if s.failure_ratio is None else repr(s.failure_ratio), s.min_calls,
            int(s.window_s * 1000), int(s.open_s * 1000), max(1, int(probe_ttl_s * 1000)),
            extra]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def run(client: Redis, prefix: str, deployment: str, op: str, probe: bool,
              settings: BreakerSettings, probe_ttl_s: float, extra: int = 0) -> Any:
    """The script's reply: a state string, or for ``acquire`` a ``(state, ms)`` pair."""
    reply = await SCRIPT.run(
        client, [keys.breaker_key(prefix, deployment), keys.probe_key(prefix, deployment)],
        _args(op, probe, settings, probe_ttl_s, extra))
    if isinstance(reply, list):
        return _text(reply[0]), float(_text(reply[1]))
    return _text(reply)
