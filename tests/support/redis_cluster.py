"""A throwaway Redis Cluster: 3 masters and 3 replicas from ``redis-server
--cluster-enabled yes`` on free loopback ports, joined by ``redis-cli --cluster create``.
Never skips: without redis-server and redis-cli it fails loudly."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.net import wait_for_port

NODE_TIMEOUT_MS = 1000  # how long a master may be silent before its replica takes over


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is not installed: the Redis Cluster tests need it "
                           "(apt-get install -y redis-server)")
    return found


def _port_pair_free(port: int) -> bool:
    """The node's port and its cluster bus port (port + 10000) are both free."""
    for candidate in (port, port + 10000):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", candidate))
            except OSError:
                return False
    return True


def _free_node_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port + 10000 < 65536 and port not in ports and _port_pair_free(port):
            ports.append(port)
    return ports


def cli(port: int, *args: str) -> str:
    done = subprocess.run([_binary("redis-cli"), "-p", str(port), *args],
                          capture_output=True, text=True, timeout=10, check=False)
    return done.stdout


@dataclass
class RedisClusterProcess:
    ports: list[int]
    workdir: str
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        seeds = ",".join(f"127.0.0.1:{p}" for p in self.ports[:3])
        return f"redis+cluster://{seeds}"

    def spawn(self, port: int) -> None:
        node_dir = Path(self.workdir) / str(port)
        node_dir.mkdir(exist_ok=True)
        self.procs[port] = subprocess.Popen(
            [_binary("redis-server"), "--port", str(port), "--bind", "127.0.0.1",
             "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
             "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
             # the other masters keep serving their slots while one fails over
             "--cluster-require-full-coverage", "no", "--save", "",
             "--appendonly", "no", "--dir", str(node_dir), "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def masters(self) -> dict[int, str]:
        """Live masters by port, with the slot ranges they serve."""
        found: dict[int, str] = {}
        for port in self.alive():
            for line in cli(port, "cluster", "nodes").splitlines():
                parts = line.split()
                if len(parts) > 8 and "myself" in parts[2] and "master" in parts[2]:
                    found[port] = " ".join(parts[8:])
        return found

    def alive(self) -> list[int]:
        return [p for p, proc in self.procs.items() if proc.poll() is None]

    def master_of(self, key: str) -> int:
        slot = int(cli(self.alive()[0], "cluster", "keyslot", key).strip())
        for port, ranges in self.masters().items():
            for piece in ranges.split():
                low, _, high = piece.partition("-")
                if low.isdigit() and int(low) <= slot <= int(high or low):
                    return port
        raise RuntimeError(f"no master serves slot {slot}")

    def kill(self, port: int) -> None:
        """SIGKILL one node: no goodbye to the cluster, as a crash."""
        self.procs[port].send_signal(signal.SIGKILL)
        self.procs[port].wait(timeout=10)

    def wait_healthy(self, timeout_s: float = 30.0, masters: int = 3) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            states = [cli(p, "cluster", "info") for p in self.alive()]
            if all("cluster_state:ok" in s for s in states) and \
                    len(self.masters()) >= masters and self._replicas_in_sync():
                return
            time.sleep(0.1)
        raise RuntimeError("the Redis Cluster did not become healthy in time")

    def _replicas_in_sync(self) -> bool:
        masters = self.masters()
        replicas = [p for p in self.alive() if p not in masters]
        return all("master_link_status:up" in cli(p, "info", "replication")
                   for p in replicas)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


@contextmanager
def redis_cluster() -> Iterator[RedisClusterProcess]:
    workdir = tempfile.mkdtemp(prefix="tako-redis-cluster-")
    cluster = RedisClusterProcess(_free_node_ports(6), workdir)
    try:
        for port in cluster.ports:
            cluster.spawn(port)
        for port in cluster.ports:
            wait_for_port(port)
        created = subprocess.run(
            [_binary("redis-cli"), "--cluster", "create",
             *(f"127.0.0.1:{p}" for p in cluster.ports), "--cluster-replicas", "1",
             "--cluster-yes"], capture_output=True, text=True, timeout=60, check=False)
        if created.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {created.stdout[-2000:]}"
                               f"{created.stderr[-2000:]}")
        cluster.wait_healthy()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)
