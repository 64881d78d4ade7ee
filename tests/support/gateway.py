"""Start real ``tako serve`` processes on loopback for end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support.net import free_port

ROOT = Path(__file__).resolve().parents[2]
TEST_KEY = "sk-test-alpha"


@dataclass
class Gateway:
    url: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=15)


def write_config(config: dict[str, Any], directory: str | None = None) -> Path:
    fd, path = tempfile.mkstemp(prefix="tako-", suffix=".yaml", dir=directory)
    with os.fdopen(fd, "w") as fh:
        yaml.safe_dump(config, fh)
    return Path(path)


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log_path: Path,
                 timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {proc.returncode}:\n"
                               f"{log_path.read_text(errors='replace')[-4000:]}")
        try:
            if httpx.get(url + "/healthz", timeout=0.5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"gateway not healthy after {timeout}s:\n"
                       f"{log_path.read_text(errors='replace')[-4000:]}")


def start_gateway(config: dict[str, Any] | None, *, port: int | None = None,
                  env: dict[str, str] | None = None, workers: int = 1,
                  command: list[str] | None = None, cwd: Path = ROOT) -> Gateway:
    """``config`` None starts the embedded default (no config file). ``command`` is the
    ``tako`` executable to run (default: this interpreter's ``-m tako``)."""
    port = port or free_port()
    config_args = ["--config", str(write_config(config))] if config is not None else []
    log_path = Path(tempfile.mkstemp(prefix="tako-gw-", suffix=".log")[1])
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.pop("TAKO_CONFIG", None)
    proc = subprocess.Popen(
        [*(command or [sys.executable, "-m", "tako"]), "serve", *config_args,
         "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
         "--log-level", "warning"],
        cwd=cwd, env=full_env, stdout=log_path.open("wb"), stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, log_path)
    except Exception:
        proc.kill()
        raise
    return Gateway(url=url, port=port, proc=proc, log_path=log_path)


@contextmanager
def gateway(config: dict[str, Any], **kw: Any) -> Iterator[Gateway]:
    gw = start_gateway(config, **kw)
    try:
        yield gw
    finally:
        if gw.proc.poll() is None:
            gw.proc.terminate()
            try:
                gw.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                gw.proc.kill()
                gw.proc.wait()


def basic_config(**extra: Any) -> dict[str, Any]:
    """Keys for two tenants, the echo deployment and an echo profile with tools."""
    config: dict[str, Any] = {
        "auth": {"keys": [
            {"key": TEST_KEY, "key_id": "alpha", "tenant_id": "acme", "user_id": "ann"},
            {"key": "sk-test-limited", "key_id": "limited", "tenant_id": "acme",
             "user_id": "bob", "models": ["echo"]},
        ]},
        "deployments": [
            {"name": "echo", "provider": "echo", "model": "echo"},
            {"name": "echo-slow", "provider": "echo", "model": "echo",
             "options": {"delay_s": 0.2}},
        ],
        "profiles": [
            {"name": "echo-tools", "kind": "single",
             "params": {"deployment": "echo", "tools": ["calculator"]}},
        ],
    }
    config.update(extra)
    return config
