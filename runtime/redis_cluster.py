"""Redis Cluster URLs and clients.

A URL with the scheme ``redis+cluster://`` (``rediss+cluster://`` for TLS) names a Redis
Cluster by one or more seed nodes, ``redis+cluster://[user:password@]host:port[,host:port...]``;
the client finds the other nodes, follows MOVED/ASK redirections and re-reads the slot map
after a failover. It is redis-py's cluster client; the single-node pipelined path is not used
for clusters.

Commands are not retried by the client: a script whose reply was lost may have run, and
running it again would charge twice. The call fails instead (the runtime's failure mode
applies) and the next one rediscovers the cluster.
"""

from __future__ import annotations

from urllib.parse import unquote, urlparse

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

SCHEMES = {"redis+cluster": False, "rediss+cluster": True}  # scheme -> TLS


def is_cluster_url(url: str | None) -> bool:
    return bool(url) and urlparse(str(url)).scheme in SCHEMES


def _seed_nodes(netloc: str) -> list[ClusterNode]:
    hosts = netloc.rsplit("@", 1)[-1]
    nodes = []
    for part in hosts.split(","):
        host, _, port = part.strip().rpartition(":")
        if not host:
            host, port = port, "6379"
        nodes.append(ClusterNode(host.strip("[]"), int(port or 6379)))
    return nodes


def cluster_client(url: str, timeout_s: float, max_connections: int) -> RedisCluster:
    """A cluster client for ``url`` that never retries a command on its own."""
    parsed = urlparse(url)
    if parsed.scheme not in SCHEMES:
        raise ValueError(f"not a Redis Cluster URL (redis+cluster://...): {url!r}")
    credentials = parsed.netloc.rsplit("@", 1)[0] if "@" in parsed.netloc else ""
    username, _, password = credentials.partition(":")
    return RedisCluster(
        startup_nodes=_seed_nodes(parsed.netloc),
        username=unquote(username) or None, password=unquote(password) or None,
        ssl=SCHEMES[parsed.scheme], socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s, max_connections=max_connections,
        retry=Retry(NoBackoff(), 0), require_full_coverage=False,
    )
