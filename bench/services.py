"""The processes a gateway bench run drives: the thin proxy, the collector and tako.

Each starts as its own process on a free loopback port and is waited for separately, so
several start at once. tako runs as ``python -m tako serve --workers 1`` with auth on and
one ``http-generic`` deployment per canned upstream answer; with one worker the
``tako serve`` process is the uvicorn worker, whose VmRSS ``vm_rss_mib`` reads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
import yaml

from bench.upstream import STREAM_SIZES, Upstream, stream_route
from tests.support.gateway import wait_healthy
from tests.support.net import free_port, wait_for_port

BENCH_DIR = Path(__file__).resolve().parent
API_KEY = "sk-bench"
STOP_TIMEOUT_S = 15
# Limits that admit every bench request, so that admission and reconcile run but never deny.
RATE_LIMITS = [{"scope": "key", "rpm": 100_000_000, "tpm": 10_000_000_000}]
BUDGETS = [{"scope": "tenant", "period": "day", "usd": 1_000_000}]


@dataclass
class Service:
    """A started process serving HTTP on ``url``; ``log_path`` collects its output."""

    name: str
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _spawn(name: str, command: list[str], workdir: Path, env: dict[str, str] | None = None,
           port: int | None = None) -> Service:
    port = port or free_port()
    log_path = workdir / f"{name}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([*command, "--port", str(port)], cwd=BENCH_DIR.parent,
                                env=env, stdout=log, stderr=subprocess.STDOUT)
    return Service(name=name, url=f"http://127.0.0.1:{port}", proc=proc, log_path=log_path)


def start_thin_proxy(upstream: Upstream, workdir: Path) -> Service:
    return _spawn("thin-proxy", [sys.executable, str(BENCH_DIR / "baseline.py"),
                                 "--upstream", f"http://127.0.0.1:{upstream.port}"], workdir)


def start_collector(workdir: Path) -> Service:
    return _spawn("collector", [sys.executable, str(BENCH_DIR / "collector.py")], workdir)


def wait_listening(service: Service) -> None:
    if service.proc.poll() is not None:
        raise RuntimeError(f"{service.name} exited:\n{service.log_path.read_text()[-4000:]}")
    wait_for_port(service.port)


def collector_counts(collector: Service) -> dict[str, dict[str, int]]:
    """Exports, spans and bytes the collector received, per ``service.name``."""
    with urllib.request.urlopen(collector.url + "/stats", timeout=5) as answer:
        counts: dict[str, dict[str, int]] = json.load(answer)
    return counts


def tako_config(upstream: Upstream, *, redis_url: str | None = None,
                redis_prefix: str = "tako", otlp_endpoint: str | None = None,
                sample_ratio: float = 1.0) -> dict[str, Any]:
    """Auth on, the canned JSON and stream deployments, budgets and rate limits (on Redis
    under ``redis_prefix`` when ``redis_url`` is given, else in memory), tracing to
    ``otlp_endpoint`` (as service ``tako-sampled-<ratio>``) or off."""
    deployments = [{"name": "bench", "provider": "http-generic", "model": "bench-model",
                    "base_url": upstream.base_url(), "price": {"input": 1.0, "output": 2.0}}]
    for size in STREAM_SIZES:
        route = stream_route(size)
        deployments.append({**deployments[0], "name": route,
                            "base_url": upstream.base_url(route)})
    runtime: dict[str, Any] = {"backend": "memory", "rate_limits": RATE_LIMITS,
                               "budgets": BUDGETS}
    if redis_url:
        runtime.update(backend="redis", redis_url=redis_url, key_prefix=redis_prefix)
    telemetry: dict[str, Any] = {"tracing": False}
    if otlp_endpoint:
        telemetry = {"tracing": True, "otlp_endpoint": otlp_endpoint,
                     "sample_ratio": sample_ratio,
                     "service_name": f"tako-sampled-{sample_ratio:g}"}
    return {"auth": {"keys": [{"key": API_KEY, "key_id": "bench", "tenant_id": "bench"}]},
            "deployments": deployments, "runtime": runtime, "telemetry": telemetry}


def redis_key_count(redis_url: str, prefix: str) -> int:
    """Keys tako wrote under ``prefix``: proof that admission and reconcile ran on Redis."""
    client = redis.Redis.from_url(redis_url)
    try:
        return sum(1 for _ in client.scan_iter(match=f"{prefix}*", count=1000))
    finally:
        client.close()


def start_tako(name: str, config: dict[str, Any], workdir: Path) -> Service:
    config_path = workdir / f"{name}.yaml"
    config_path.write_text(yaml.safe_dump(config))
    env = {name: value for name, value in os.environ.items() if not name.startswith("TAKO_")}
    env.update(PYTHONUNBUFFERED="1", TAKO_LOG_LEVEL="warning")
    return _spawn(name, [sys.executable, "-m", "tako", "serve", "--config", str(config_path),
                         "--host", "127.0.0.1", "--workers", "1", "--log-level", "warning"],
                  workdir, env=env)


def wait_tako(service: Service) -> None:
    wait_healthy(service.url, service.proc, service.log_path, timeout=60)


def vm_rss_mib(pid: int) -> float:
    """The resident set of process ``pid`` (``VmRSS`` in /proc/<pid>/status), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")
