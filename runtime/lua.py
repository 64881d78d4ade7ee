"""Lua scripts shipped beside this module: loaded once with SCRIPT LOAD, run with EVALSHA,
and loaded again when the server answers NOSCRIPT (after a restart or SCRIPT FLUSH)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError


class LuaScript:
    def __init__(self, name: str) -> None:
        self.name = name
        self.source = (Path(__file__).parent / f"{name}.lua").read_text()
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()

    async def load(self, client: Redis) -> None:
        self.sha = await client.script_load(self.source)

    async def run(self, client: Redis, keys: list[str], args: list[Any]) -> Any:
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await self.load(client)
            return await client.evalsha(self.sha, len(keys), *keys, *args)
