"""A throwaway redis-server on a free port (or REDIS_URL when given). Never skips."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from tests.support.net import free_port, wait_for_port


@dataclass
class RedisProcess:
    url: str
    port: int
    proc: subprocess.Popen[bytes] | None
    workdir: str

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def start(self) -> None:
        """(Re)start on the same port: used by outage tests."""
        self.proc = _spawn(self.port, self.workdir)
        wait_for_port(self.port)


def _spawn(port: int, workdir: str) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(
            "redis-server is not installed and REDIS_URL is not set: the Redis tests "
            "need one of them (apt-get install -y redis-server)"
        )
    return subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
         "no", "--dir", workdir, "--daemonize", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


@contextmanager
def redis_server(owned: bool = False) -> Iterator[RedisProcess]:
    """``owned``: always start a process of our own (tests that stop and restart Redis),
    even when REDIS_URL names a shared server."""
    given = None if owned else os.environ.get("REDIS_URL")
    if given:
        yield RedisProcess(url=given, port=0, proc=None, workdir="")
        return
    workdir = tempfile.mkdtemp(prefix="tako-redis-")
    port = free_port()
    rp = RedisProcess(url=f"redis://127.0.0.1:{port}/0", port=port,
                      proc=_spawn(port, workdir), workdir=workdir)
    wait_for_port(port)
    try:
        yield rp
    finally:
        rp.stop()
        shutil.rmtree(workdir, ignore_errors=True)
