"""Gateway overhead: upstream direct vs through tako, at concurrency 1 and 16.

Starts a canned OpenAI-shaped upstream (nginx answering from memory), then ``tako serve``
(one worker, auth on, a deployment pointing at nginx), and drives both with wrk.

    make bench                  # memory runtime (the embedded default's)
    make bench-redis            # budgets and rate limits on Redis
    .venv/bin/python bench/overhead.py [--duration 10] [--runtime-backend memory|redis]
                                       [--redis-url URL] [--connections 1,16]

``--duration`` (seconds per row) defaults to ``$BENCH_SECONDS``, else 10. Needs nginx and
wrk (``make bench`` installs them through ``bench/system-deps.sh`` when run as root).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.gateway import start_gateway  # noqa: E402
from tests.support.net import free_port, wait_for_port  # noqa: E402

KEY = "sk-bench"
CANNED = {
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000,
    "model": "bench-model",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "pong"},
                 "finish_reason": "stop", "logprobs": None}],
    "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10},
}
BODY = {"model": "bench", "messages": [{"role": "user", "content": "ping"}], "max_tokens": 16}


def nginx_upstream(workdir: Path, port: int) -> subprocess.Popen[bytes]:
    canned = json.dumps(CANNED).replace("'", "\\'")
    conf = workdir / "nginx.conf"
    conf.write_text(f"""
worker_processes 1;
daemon off;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {workdir}/body;
  proxy_temp_path {workdir}/proxy;
  fastcgi_temp_path {workdir}/fastcgi;
  uwsgi_temp_path {workdir}/uwsgi;
  scgi_temp_path {workdir}/scgi;
  keepalive_requests 1000000;
  server {{
    listen 127.0.0.1:{port};
    location / {{
      default_type application/json;
      return 200 '{canned}';
    }}
  }}
}}
""")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    proc = subprocess.Popen([nginx, "-c", str(conf), "-p", str(workdir)])
    wait_for_port(port)
    return proc


def wrk(url: str, connections: int, duration: int, workdir: Path) -> dict[str, float]:
    script = workdir / "post.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = '{json.dumps(BODY)}'\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {KEY}"\n'
    )
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script),
         url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return {"rps": rps, "p50": _pct(out, "50%"), "p99": _pct(out, "99%"),
            "errors": float(non2xx.group(1)) if non2xx else 0.0}


def _pct(out: str, label: str) -> float:
    match = re.search(rf"^\s+{re.escape(label)}\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    if not match:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int,  # wrk counts whole seconds
                        default=max(1, round(float(os.environ.get("BENCH_SECONDS") or 10))))
    parser.add_argument("--connections", default="1,16")
    parser.add_argument("--runtime-backend", default="memory", choices=["memory", "redis"])
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL"))
    args = parser.parse_args()
    for tool in ("wrk", "nginx"):
        if not (shutil.which(tool) or Path(f"/usr/sbin/{tool}").exists()):
            sys.exit(f"{tool} is needed: apt-get install -y nginx wrk")
    workdir = Path(tempfile.mkdtemp(prefix="tako-bench-"))
    upstream_port = free_port()
    upstream = nginx_upstream(workdir, upstream_port)
    runtime: dict[str, object] = {"backend": args.runtime_backend}
    redis_ctx = None
    if args.runtime_backend == "redis":
        if not args.redis_url:
            from tests.support.redis_server import redis_server

            redis_ctx = redis_server()
            args.redis_url = redis_ctx.__enter__().url
        runtime["redis_url"] = args.redis_url
        runtime["rate_limits"] = [{"scope": "key", "rpm": 100_000_000}]
        runtime["budgets"] = [{"scope": "tenant", "period": "day", "usd": 1_000_000}]
    config = {
        "auth": {"keys": [{"key": KEY, "key_id": "bench", "tenant_id": "bench"}]},
        "deployments": [{"name": "bench", "provider": "http-generic", "model": "bench-model",
                         "base_url": f"http://127.0.0.1:{upstream_port}/v1",
                         "price": {"input": 1.0, "output": 2.0}}],
        "runtime": runtime,
    }
    gateway = start_gateway(config, env={"TAKO_LOG_LEVEL": "warning"})
    try:
        direct_url = f"http://127.0.0.1:{upstream_port}/v1/chat/completions"
        tako_url = gateway.url + "/v1/chat/completions"
        wrk(tako_url, 16, min(2, args.duration), workdir)  # warm up
        print(f"runtime backend: {args.runtime_backend}; duration {args.duration}s per row")
        print(f"{'path':<22}{'conns':>6}{'req/s':>12}{'p50 ms':>10}{'p99 ms':>10}{'non-2xx':>9}")
        rows = {}
        for conns in [int(c) for c in args.connections.split(",")]:
            for name, url in (("upstream direct", direct_url), ("through tako", tako_url)):
                r = wrk(url, conns, args.duration, workdir)
                rows[(name, conns)] = r
                print(f"{name:<22}{conns:>6}{r['rps']:>12.0f}{r['p50']:>10.3f}"
                      f"{r['p99']:>10.3f}{r['errors']:>9.0f}")
            d, t = rows[("upstream direct", conns)], rows[("through tako", conns)]
            print(f"  c={conns}: tako adds {t['p50'] - d['p50']:.3f} ms at p50; "
                  f"tako/direct throughput {t['rps'] / d['rps']:.3f}")
    finally:
        gateway.kill()
        upstream.terminate()
        upstream.wait()
        if redis_ctx is not None:
            redis_ctx.__exit__(None, None, None)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
