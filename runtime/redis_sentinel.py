"""Redis Sentinel URLs and clients.

A URL with the scheme ``redis+sentinel://`` (``rediss+sentinel://`` for TLS to the master)
names a master by its sentinels and service name,
``redis+sentinel://[user:password@]host:port[,host:port...]/<service-name>[/db]``. The
credentials are the master's; the sentinels are asked without them. redis-py's Sentinel
client asks the sentinels where the master is, and after a failover its connections to the
old master (gone, or demoted to a read-only replica) are dropped and the next call reaches
the promoted one. The single-node pipelined path is not used here.

As on a cluster, commands are not retried by the client: a script whose reply was lost may
have run. The call fails (the runtime's failure mode applies) and the next one finds the
current master.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlparse

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}  # scheme -> TLS to the master


def is_sentinel_url(url: str | None) -> bool:
    return bool(url) and urlparse(str(url)).scheme in SCHEMES


@dataclass(frozen=True)
class SentinelTarget:
    sentinels: list[tuple[str, int]]
    service: str
    db: int
    username: str | None
    password: str | None
    ssl: bool


def _hosts(netloc: str) -> list[tuple[str, int]]:
    found = []
    for part in netloc.rsplit("@", 1)[-1].split(","):
        host, _, port = part.strip().rpartition(":")
        if not host:
            host, port = port, "26379"
        found.append((host.strip("[]"), int(port or 26379)))
    return found


def parse_sentinel_url(url: str) -> SentinelTarget:
    parsed = urlparse(url)
    if parsed.scheme not in SCHEMES:
        raise ValueError(f"not a Redis Sentinel URL (redis+sentinel://...): {url!r}")
    path = [piece for piece in parsed.path.split("/") if piece]
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ValueError("a Redis Sentinel URL names the service, and optionally a db: "
                         "redis+sentinel://host:port[,host:port]/<service-name>[/db]")
    credentials = parsed.netloc.rsplit("@", 1)[0] if "@" in parsed.netloc else ""
    username, _, password = credentials.partition(":")
    return SentinelTarget(
        sentinels=_hosts(parsed.netloc), service=unquote(path[0]),
        db=int(path[1]) if len(path) == 2 else 0, username=unquote(username) or None,
        password=unquote(password) or None, ssl=SCHEMES[parsed.scheme])


def sentinel_client(url: str, timeout_s: float, max_connections: int) -> Redis:
    """A client of the master that ``url``'s sentinels name, never retrying a command.
    ``aclose_sentinel`` closes it together with its connections to the sentinels."""
    target = parse_sentinel_url(url)
    sentinel = Sentinel(
        target.sentinels, socket_timeout=timeout_s,
        sentinel_kwargs={"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s})
    client: Redis = sentinel.master_for(
        target.service, db=target.db, username=target.username, password=target.password,
        ssl=target.ssl, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
        max_connections=max_connections, retry=Retry(NoBackoff(), 0))
    client._tako_sentinel = sentinel  # type: ignore[attr-defined]
    return client


async def aclose_sentinel(client: Redis) -> None:
    """Close a ``sentinel_client`` and its sentinels' connections."""
    await client.aclose()
    sentinel = getattr(client, "_tako_sentinel", None)  # not on a plain client
    for each in sentinel.sentinels if isinstance(sentinel, Sentinel) else ():
        await each.aclose()
