"""The compose topology as local processes: nginx (the project's nginx.conf) in front of
three ``tako serve`` processes sharing one Redis, each started the way the image starts
it (``tako serve``, settings from ``TAKO_*`` variables, its own metrics directory)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support.net import free_port, wait_for_port
from tests.support.nginx_conf import localize, nginx_command

API_KEY = "sk-tako-deploy-test"
BUDGET_KEY = "sk-tako-deploy-budget"  # a small daily budget of its own
BUDGET_USD = 0.0005
RPM_KEY = "sk-tako-deploy-rpm"  # a requests-per-minute limit of its own
RPM = 15


@dataclass
class Replica:
    name: str
    port: int
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([_tako_binary(), "serve"], env=self.env,
                                         stdout=log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready after {timeout}s: "
                           f"{self.log.read_text()[-2000:]}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)

    @property
    def upstream(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass
class Topology:
    base_url: str
    replicas: list[Replica]
    access_log: Path
    workdir: Path
    extra: dict[str, Any] = field(default_factory=dict)

    def logged(self, since: int, count: int, timeout: float = 5.0) -> list[str]:
        """Access-log lines after the first ``since``, once ``count`` of them are there
        (nginx logs a request just after its last byte reaches the client)."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.access_log.read_text().splitlines()[since:]
            if len(lines) >= count or time.monotonic() > deadline:
                return lines
            time.sleep(0.02)

    def log_size(self) -> int:
        return len(self.access_log.read_text().splitlines())

    def upstreams_in_log(self, since: int = 0, count: int = 0) -> list[list[str]]:
        """For each request nginx logged, the replicas it tried, in order."""
        attempts = []
        for line in self.logged(since, count):
            marker = line.split(" upstream=", 1)
            if len(marker) == 2:
                addresses = marker[1].split(" rid=", 1)[0]
                attempts.append([a.strip() for a in addresses.split(",") if a.strip()])
        return attempts


def _tako_binary() -> str:
    found = shutil.which("tako") or str(Path(sys.executable).with_name("tako"))
    if not Path(found).exists():
        raise RuntimeError("the `tako` console script is not installed (pip install -e .)")
    return found


def gateway_config(redis_url: str, upstream_base_url: str) -> dict[str, Any]:
    return {
        "server": {"host": "127.0.0.1", "graceful_shutdown_s": 5},
        "auth": {"keys": [
            {"key": API_KEY, "key_id": "deploy", "tenant_id": "deploy", "user_id": "deploy"},
            {"key": BUDGET_KEY, "key_id": "deploy-budget", "tenant_id": "deploy",
             "user_id": "budgeted", "budgets": [{"scope": "key", "period": "day",
                                                 "usd": BUDGET_USD}]},
            {"key": RPM_KEY, "key_id": "deploy-rpm", "tenant_id": "deploy",
             "user_id": "limited", "rate_limits": [{"scope": "key", "rpm": RPM}]},
        ]},
        "deployments": [
            {"name": "echo", "provider": "echo", "model": "echo",
             "options": {"delay_s": 0.02}},
            {"name": "slow", "provider": "http-generic", "model": "slow-model",
             "base_url": upstream_base_url, "api_key": "sk-upstream"},
        ],
        "runtime": {"backend": "redis", "redis_url": redis_url,
                    "failure_mode": "fail_closed"},
        "policy": {"mode": "off"},
    }


@contextmanager
def topology(redis_url: str, upstream_base_url: str, replicas: int = 3) -> Iterator[Topology]:
    workdir = Path(tempfile.mkdtemp(prefix="tako-topology-"))
    config = workdir / "tako.yaml"
    config.write_text(yaml.safe_dump(gateway_config(redis_url, upstream_base_url)))
    base_env = {k: v for k, v in os.environ.items()
                if not k.startswith("TAKO_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    started: list[Replica] = []
    nginx: subprocess.Popen[bytes] | None = None
    try:
        for i in range(1, replicas + 1):
            port = free_port()
            metrics_dir = workdir / f"metrics-{i}"
            metrics_dir.mkdir()
            env = {**base_env, "TAKO_CONFIG": str(config), "TAKO_SERVER__PORT": str(port),
                   "TAKO_SERVER__WORKERS": "1", "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
            replica = Replica(f"gateway-{i}", port, env, workdir / f"gateway-{i}.log")
            replica.start()
            started.append(replica)
        for replica in started:
            replica.wait_ready()
        listen = free_port()
        conf = localize(workdir / "nginx", listen, [r.port for r in started])
        nginx = subprocess.Popen(nginx_command(conf, "-g", "daemon off;"),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(listen)
        yield Topology(f"http://127.0.0.1:{listen}", started,
                       workdir / "nginx" / "logs" / "access.log", workdir)
    finally:
        if nginx is not None:
            nginx.terminate()
            nginx.wait(timeout=10)
        for replica in started:
            replica.kill(signal.SIGTERM)
        shutil.rmtree(workdir, ignore_errors=True)
