"""Many Redis script calls in flight on one connection.

Redis answers the commands of a connection in the order it received them, so requests
need not wait for each other: each call writes its command and waits for its own reply,
taken from a FIFO as replies are parsed (hiredis). On this path redis-py's pooled client
spends several times the server's own time per call; this keeps the hot scripts (admit,
reconcile, breaker) to one write and one parsed reply each. Everything else (script
loading at start, spend reads, health checks) stays on redis-py.

Errors use redis-py's classes, so callers handle both clients alike: a lost or timed-out
connection fails every call in flight with ConnectionError/TimeoutError and the next call
reconnects; NOSCRIPT raises NoScriptError.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any
from urllib.parse import unquote, urlparse

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError


def supports(url: str) -> bool:
    """Plain TCP URLs only; TLS and unix sockets stay on redis-py."""
    return urlparse(url).scheme == "redis"


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self.transport: Any = None
        self.lost: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while True:
            reply = self.reader.gets()
            if reply is False:
                return
            if not self.waiting:  # a reply nobody asked for: the stream is out of step
                self.close(RedisConnectionError("unexpected reply from Redis"))
                return
            future = self.waiting.popleft()
            if future.done():  # its caller gave up (cancelled)
                continue
            if isinstance(reply, hiredis.ReplyError):
                message = str(reply)
                cls = NoScriptError if message.startswith("NOSCRIPT") else ResponseError
                future.set_exception(cls(message))
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(RedisConnectionError(f"connection to Redis lost: {exc or 'closed'}"))

    def fail(self, error: Exception) -> None:
        self.lost = self.lost or error
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(error)

    def close(self, error: Exception) -> None:
        self.fail(error)
        if self.transport is not None:
            self.transport.close()


class PipelinedRedis:
    """The subset of redis-py's asyncio client the Lua wrappers use: ``evalsha`` and
    ``script_load``."""

    def __init__(self, url: str, timeout_s: float) -> None:
        parsed = urlparse(url)
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port or 6379
        self.password = unquote(parsed.password) if parsed.password else None
        self.username = unquote(parsed.username) if parsed.username else None
        path = parsed.path.lstrip("/")
        self.db = int(path) if path else 0
        self.timeout_s = timeout_s
        self._conn: _Connection | None = None
        self._connecting: asyncio.Lock | None = None

    async def _connection(self) -> _Connection:
        conn = self._conn
        if conn is not None and conn.lost is None:
            return conn
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._conn is not None and self._conn.lost is None:
                return self._conn
            loop = asyncio.get_running_loop()
            try:
                _, fresh = await asyncio.wait_for(
                    loop.create_connection(_Connection, self.host, self.port),
                    self.timeout_s)
            except (OSError, TimeoutError) as exc:
                raise RedisConnectionError(f"cannot connect to Redis at {self.host}:"
                                           f"{self.port}: {exc}") from exc
            self._conn = fresh
            if self.password:
                auth = (self.username, self.password) if self.username else (self.password,)
                await self._send(fresh, ("AUTH", *auth))
            if self.db:
                await self._send(fresh, ("SELECT", self.db))
            return fresh

    async def _send(self, conn: _Connection, command: tuple[Any, ...]) -> Any:
        if conn.lost is not None or conn.transport is None:
            raise conn.lost or RedisConnectionError("not connected to Redis")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        conn.waiting.append(future)
        conn.transport.write(hiredis.pack_command(command))
        deadline = loop.call_later(self.timeout_s, self._expire, conn, future)
        try:
            return await future
        finally:
            deadline.cancel()

    def _expire(self, conn: _Connection, future: asyncio.Future[Any]) -> None:
        if not future.done():
            # Later replies could no longer be matched to their calls: drop the connection
            # (every call in flight on it fails) and let the next call reconnect.
            conn.close(RedisTimeoutError(f"Redis did not answer within {self.timeout_s}s"))

    async def execute(self, *command: Any) -> Any:
        return await self._send(await self._connection(), command)

    async def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Any:
        return await self.execute("EVALSHA", sha, numkeys, *keys_and_args)

    async def script_load(self, source: str) -> str:
        sha = await self.execute("SCRIPT", "LOAD", source)
        return sha.decode() if isinstance(sha, bytes) else str(sha)

    async def aclose(self) -> None:
        if self._conn is not None:
            self._conn.close(RedisConnectionError("client closed"))
            self._conn = None
