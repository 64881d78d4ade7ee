"""The pipelined script client against a real redis-server and a server that stalls."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tako.runtime.pipelined_redis import PipelinedRedis, supports

INCR = "return redis.call('INCRBY', KEYS[1], ARGV[1])"


async def test_many_calls_in_flight_get_their_own_replies(redis_proc) -> None:
    client = PipelinedRedis(redis_proc.url, 2.0)
    sha = await client.script_load(INCR)
    key = "resp:{t}:counter"
    replies = await asyncio.gather(*(client.evalsha(sha, 1, key, 1) for _ in range(200)))
    assert sorted(replies) == list(range(1, 201))
    with pytest.raises(NoScriptError):
        await client.evalsha("0" * 40, 0)
    with pytest.raises(ResponseError):
        await client.execute("INCR")  # wrong number of arguments
    assert await client.evalsha(sha, 1, key, 5) == 205, "the connection is still in step"
    await client.aclose()


async def test_a_cancelled_call_does_not_shift_the_replies(redis_proc) -> None:
    client = PipelinedRedis(redis_proc.url, 2.0)
    sha = await client.script_load(INCR)
    key = "resp:{t}:cancel"
    first = asyncio.ensure_future(client.evalsha(sha, 1, key, 1))
    second = asyncio.ensure_future(client.evalsha(sha, 1, key, 10))
    await asyncio.sleep(0)  # both commands are written
    first.cancel()
    assert await second == 11, "the first reply went to nobody, the second to its caller"
    await client.aclose()


async def test_a_silent_server_times_out_and_the_next_call_reconnects() -> None:
    accepted = []

    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        await reader.read(1 << 16)  # read the command, never answer
        await asyncio.sleep(5)

    server = await asyncio.start_server(stall, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = PipelinedRedis(f"redis://127.0.0.1:{port}/0", 0.2)
    with pytest.raises(RedisTimeoutError):
        await client.execute("PING")
    with pytest.raises(RedisTimeoutError):
        await client.execute("PING")
    assert len(accepted) == 2, "a timed-out connection is dropped, not reused"
    server.close()
    await client.aclose()


async def test_an_unreachable_server_is_a_connection_error() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    client = PipelinedRedis(f"redis://127.0.0.1:{port}/0", 0.5)
    with pytest.raises(RedisConnectionError):
        await client.execute("PING")


def test_only_plain_tcp_urls_use_it() -> None:
    assert supports("redis://127.0.0.1:6379/0")
    assert not supports("rediss://example.com:6380/0")
    assert not supports("unix:///var/run/redis.sock")
