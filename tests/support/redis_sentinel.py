"""A throwaway Redis Sentinel setup: one master, one replica and sentinels
(``redis-server --sentinel``) on free loopback ports. Never skips: without redis-server and
redis-cli it fails loudly."""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.net import free_port, wait_for_port
from tests.support.redis_cluster import cli

SERVICE = "tako-master"
DOWN_AFTER_MS = 1000  # how long the master may be silent before the sentinels fail it over


def _redis_server() -> str:
    found = shutil.which("redis-server")
    if found is None:
        raise RuntimeError("redis-server is not installed: the Sentinel tests need it "
                           "(apt-get install -y redis-server)")
    return found


@dataclass
class RedisSentinelProcess:
    workdir: str
    master_port: int
    replica_port: int
    sentinel_ports: list[int]
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{SERVICE}"

    def _spawn(self, port: int, *args: str) -> None:
        node_dir = Path(self.workdir) / str(port)
        node_dir.mkdir(exist_ok=True)
        self.procs[port] = subprocess.Popen(
            [_redis_server(), *args, "--port", str(port), "--bind", "127.0.0.1",
             "--dir", str(node_dir), "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def spawn_server(self, port: int, replica_of: int | None = None) -> None:
        extra = ["--replicaof", "127.0.0.1", str(replica_of)] if replica_of else []
        self._spawn(port, "--save", "", "--appendonly", "no", *extra)

    def spawn_sentinel(self, port: int) -> None:
        config = Path(self.workdir) / f"sentinel-{port}.conf"  # a sentinel rewrites it
        quorum = len(self.sentinel_ports) // 2 + 1
        config.write_text(
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.master_port} {quorum}\n"
            f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {SERVICE} 10000\n")
        self._spawn(port, str(config), "--sentinel")

    def master(self) -> int:
        """The master's port as the first sentinel reports it."""
        reply = cli(self.sentinel_ports[0], "sentinel", "get-master-addr-by-name", SERVICE)
        return int(reply.split()[1])

    def kill(self, port: int) -> None:
        """SIGKILL one server: a crash, no goodbye."""
        self.procs[port].send_signal(signal.SIGKILL)
        self.procs[port].wait(timeout=10)

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Every sentinel knows the master, its replica and the other sentinels."""
        deadline = time.monotonic() + timeout_s
        others = len(self.sentinel_ports) - 1
        while time.monotonic() < deadline:
            infos = [cli(p, "sentinel", "master", SERVICE) for p in self.sentinel_ports]
            if all(_field(i, "num-slaves") == "1" and _field(i, "num-other-sentinels")
                   == str(others) for i in infos) and "master_link_status:up" in \
                    cli(self.replica_port, "info", "replication"):
                return
            time.sleep(0.1)
        raise RuntimeError("the Sentinel setup did not become ready in time")

    def wait_promoted(self, port: int, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.master() == port and "role:master" in cli(port, "info", "replication"):
                return
            time.sleep(0.05)
        raise RuntimeError(f"127.0.0.1:{port} was not promoted in time")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def _field(reply: str, name: str) -> str | None:
    """A value from redis-cli's line-per-item rendering of a flat name/value reply."""
    lines = reply.splitlines()
    for i, line in enumerate(lines[:-1]):
        if line == name:
            return lines[i + 1]
    return None


@contextmanager
def redis_sentinel(sentinels: int = 3) -> Iterator[RedisSentinelProcess]:
    workdir = tempfile.mkdtemp(prefix="tako-redis-sentinel-")
    ports = [free_port() for _ in range(2 + sentinels)]
    setup = RedisSentinelProcess(workdir, ports[0], ports[1], ports[2:])
    try:
        setup.spawn_server(setup.master_port)
        wait_for_port(setup.master_port)
        setup.spawn_server(setup.replica_port, replica_of=setup.master_port)
        for port in setup.sentinel_ports:
            setup.spawn_sentinel(port)
        for port in [setup.replica_port, *setup.sentinel_ports]:
            wait_for_port(port)
        setup.wait_ready()
        yield setup
    finally:
        setup.stop()
        shutil.rmtree(workdir, ignore_errors=True)
