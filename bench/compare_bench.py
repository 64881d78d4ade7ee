"""tako at another git revision against this checkout, in one run on one upstream.

Builds a worktree of ``--ref`` under .tmp/, starts ``tako serve`` from it and from this
checkout (one worker each, the same config as ``make bench``'s "tako" column), and measures
both over the same nginx upstream in interleaved rounds: non-streamed requests at c=1 and
c=16 and a 50-chunk stream at c=1. Prints medians and the ratio this / ref.

    make bench-compare REF=<git revision>
    .venv/bin/python bench/compare_bench.py --ref REV [--seconds 5] [--rounds 3]

A revision from before the ``tako`` namespace is started as ``python -m app.cli`` inside
its worktree (its packages were top-level then).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import load, payloads, services  # noqa: E402
from bench.upstream import start_upstream, stream_route  # noqa: E402
from tests.support.gateway import wait_healthy  # noqa: E402
from tests.support.net import free_port  # noqa: E402

STREAM_SIZE = 50


def worktree(ref: str) -> Path:
    path = ROOT / ".tmp" / f"compare-{ref.replace('/', '_')}"
    if not path.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), ref],
                       check=True, capture_output=True)
    return path


def start(name: str, checkout: Path, config: dict[str, Any],
          workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    config_path = workdir / f"{name}.yaml"
    config_path.write_text(yaml.safe_dump(config))
    module = "app.cli" if (checkout / "app" / "cli.py").exists() and not (
        checkout / "tako").exists() else "tako"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAKO_")}
    log = (workdir / f"{name}.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", module, "serve", "--config", str(config_path), "--host",
         "127.0.0.1", "--port", str(port), "--workers", "1", "--log-level", "warning"],
        cwd=checkout, env={**env, "PYTHONUNBUFFERED": "1"}, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, proc, workdir / f"{name}.log", timeout=60)
    return proc, url


def measure(url: str, workdir: Path, seconds: float) -> dict[str, float]:
    ping = workdir / "ping.json"
    ping.write_bytes(payloads.ping())
    chat = f"{url}/v1/chat/completions"
    one = load.wrk_timed(chat, ping, services.API_KEY, 1, seconds)
    many = load.wrk_timed(chat, ping, services.API_KEY, 16, seconds)
    route = stream_route(STREAM_SIZE)
    stream = load.measure_streams(f"{url}/v1/chat/completions",
                                  payloads.ping(route, stream=True), services.API_KEY,
                                  STREAM_SIZE, 1, seconds)
    return {"c=1 req/s": one["rps"], "c=1 p50 ms": one["p50"], "c=16 req/s": many["rps"],
            "stream 50 c=1 total ms": stream["total_p50"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", required=True)
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("BENCH_SECONDS")
                                                                or 5))
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tako-compare-") as tmp:
        workdir = Path(tmp)
        upstream = start_upstream(workdir, free_port())
        config = services.tako_config(upstream)
        checkouts = {args.ref: worktree(args.ref), "this": ROOT}
        running = {name: start(name.replace("/", "_"), path, config, workdir)
                   for name, path in checkouts.items()}
        try:
            rounds: dict[str, list[dict[str, float]]] = {name: [] for name in running}
            for i in range(args.rounds):
                order = list(running) if i % 2 == 0 else list(reversed(running))
                for name in order:
                    rounds[name].append(measure(running[name][1], workdir, args.seconds))
        finally:
            for proc, _ in running.values():
                proc.terminate()
            upstream.stop()
    report(rounds, args.ref)


def report(rounds: dict[str, list[dict[str, float]]], ref: str) -> None:
    keys = list(rounds["this"][0])
    medians = {name: {k: statistics.median(r[k] for r in runs) for k in keys}
               for name, runs in rounds.items()}
    print(f"| metric | {ref} | this | this / {ref} |\n|---|---|---|---|")
    for key in keys:
        before, after = medians[ref][key], medians["this"][key]
        print(f"| {key} | {before:,.3f} | {after:,.3f} | {after / before:.2f} |")


if __name__ == "__main__":
    main()
