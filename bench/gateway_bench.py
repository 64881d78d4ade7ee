"""Every row of the gateway's performance table, with its baselines, in one run.

Paths (columns): upstream-direct (nginx answering a canned completion, or a canned SSE
stream of 10, 50 or 1,000 chunks, from memory); a thin proxy (bench/baseline.py:
Starlette under uvicorn, one pooled aiohttp session, bytes passed through); and
``tako serve`` (one worker, auth on, ``http-generic`` deployments pointing at nginx, a
rate limit and a budget) in four configurations: memory runtime with tracing off
("tako"), the same on a throwaway redis-server ("tako Redis"), and memory with tracing
exported over OTLP/HTTP to bench/collector.py at ``telemetry.sample_ratio`` 1.0 and 0.1
("tako tracing 1.0", "tako tracing 0.1").

Rows: non-streamed requests at c=1, 16 and 64 (wrk: req/s, p50, p99, and p50 added over
upstream-direct); at c=16 on "tako" only, the same ping as a non-streamed Responses
request (``store: false``) and a Messages request, with req/s and gateway time per
request (1/req/s minus upstream-direct's) against chat ("vs chat"); streams of 10, 50
and 1,000 chunks (aiohttp: TTFT and total at c=1, with what each adds over
upstream-direct, chunks/s at c=16); bodies of 1 KB, 20 KB (a
chat history) and 1 MB at c=16 (req/s); the VmRSS of the "tako" worker, fresh, after
10,000 and 100,000 requests (measured first). All services run at once and the rounds
are interleaved (every row, every path, then the next round; the paths' order rotates):
each value is the median over the rounds, and the ratios divide medians of the same run.

    make bench
    .venv/bin/python bench/gateway_bench.py [--seconds 3] [--rounds 3]
        [--rss-requests 10000,100000] [--json .tmp/bench.json] [--redis-url URL]
        [--only json,responses,messages]  # rows whose key starts with one of these

Defaults come from $BENCH_SECONDS (seconds per row and path, else 3), $BENCH_ROUNDS
(else 3) and $BENCH_RSS_REQUESTS (else 10000,100000). Fewer than 2 seconds per row is a
quick run (e.g. BENCH_SECONDS=1, about a minute): 1 round, no warm-up, streams for a
quarter of the seconds, and RSS after 1000,5000 requests unless given.
Needs nginx, wrk and redis-server (or REDIS_URL); ``make bench`` installs them through
scripts/system-deps.sh when run as root.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import load, payloads, report, services  # noqa: E402
from bench.report import (  # noqa: E402
    DIRECT,
    PROXY,
    TAKO,
    TAKO_REDIS,
    TAKO_SAMPLED,
    TAKO_TRACING,
    Line,
    Samples,
)
from bench.upstream import STREAM_SIZES, start_upstream, stream_route  # noqa: E402
from tests.support.net import free_port, wait_for_port  # noqa: E402
from tests.support.redis_server import redis_server  # noqa: E402

CONCURRENCIES = (1, 16, 64)
STREAM_CONCURRENCIES = (1, 16)
BODY_CONCURRENCY = 16
RSS_CONCURRENCY = 16
WARM_UP_CONCURRENCY = 8
QUICK_BELOW_S = 2
ALL_PATHS = (DIRECT, PROXY, TAKO, TAKO_REDIS, TAKO_TRACING, TAKO_SAMPLED)
SAMPLED_RATIO = 0.1
BODY_PATHS = (DIRECT, PROXY, TAKO)
INGRESS_CONCURRENCY = 16
INGRESSES = {"responses": ("/v1/responses", payloads.responses_ping),
             "messages": ("/v1/messages", payloads.messages_ping)}


@dataclass(frozen=True)
class Target:
    """One path: the canned answer is picked by URL path (direct, thin proxy) or by the
    model a request names (tako, one deployment per canned answer)."""

    name: str
    origin: str
    routes_by_path: bool

    def chat_url(self, route: str = "") -> str:
        prefix = f"/{route}" if route and self.routes_by_path else ""
        return f"{self.origin}{prefix}/v1/chat/completions"

    def url(self, api_path: str) -> str:
        return f"{self.origin}{api_path}"


@dataclass(frozen=True)
class Measurement:
    key: str
    paths: tuple[str, ...]
    run: Callable[[Target], dict[str, float]]


def _env_number(name: str, default: float) -> float:
    return float(os.environ.get(name) or default)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=_env_number("BENCH_SECONDS", 3),
                        help="seconds per row and path (wrk rounds to whole seconds)")
    parser.add_argument("--rounds", type=int, default=os.environ.get("BENCH_ROUNDS"))
    parser.add_argument("--rss-requests", default=os.environ.get("BENCH_RSS_REQUESTS"),
                        help="two counts, e.g. 10000,100000")
    parser.add_argument("--json", type=Path, default=ROOT / ".tmp" / "bench.json")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL"))
    parser.add_argument("--only", default="",
                        help="comma-separated row keys' starts, e.g. json,responses,messages")
    args = parser.parse_args()
    quick = args.seconds < QUICK_BELOW_S
    if args.rounds is None:
        args.rounds = 1 if quick else 3
    args.stream_seconds = args.seconds / 4 if quick else args.seconds
    args.warm_up_seconds = 0 if quick else 0.5
    counts = args.rss_requests or ("1000,5000" if quick else "10000,100000")
    args.rss_requests = sorted(int(count) for count in counts.split(","))
    return args


def measurement_plan(seconds: float, stream_seconds: float,
                     workdir: Path) -> list[Measurement]:
    ping = workdir / "ping.json"
    ping.write_bytes(payloads.ping())

    def non_streamed(body: Path, connections: int) -> Callable[[Target], dict[str, float]]:
        return lambda target: load.wrk_timed(target.chat_url(), body, services.API_KEY,
                                             connections, seconds)

    def streamed(size: int, concurrency: int) -> Callable[[Target], dict[str, float]]:
        route = stream_route(size)
        body = payloads.ping(route, stream=True)
        return lambda target: load.measure_streams(target.chat_url(route), body,
                                                   services.API_KEY, size, concurrency,
                                                   stream_seconds)

    def ingress(api_path: str, body: Path) -> Callable[[Target], dict[str, float]]:
        return lambda target: load.wrk_timed(target.url(api_path), body, services.API_KEY,
                                             INGRESS_CONCURRENCY, seconds)

    plan = [Measurement(f"json c={c}", ALL_PATHS, non_streamed(ping, c))
            for c in CONCURRENCIES]
    for name, (api_path, make_body) in INGRESSES.items():
        body = workdir / f"{name}.json"
        body.write_bytes(make_body())
        plan.append(Measurement(f"{name} c={INGRESS_CONCURRENCY}", (TAKO,),
                                ingress(api_path, body)))
    plan += [Measurement(f"stream {size} c={c}", ALL_PATHS, streamed(size, c))
             for size in STREAM_SIZES for c in STREAM_CONCURRENCIES]
    for label, size in payloads.BODY_SIZES.items():
        body = workdir / f"body-{size}.json"
        body.write_bytes(payloads.body_of_size(size))
        plan.append(Measurement(f"body {label}", BODY_PATHS,
                                non_streamed(body, BODY_CONCURRENCY)))
    return plan


def table_lines(rss_counts: list[int]) -> list[Line]:
    lines = []
    for c in CONCURRENCIES:
        key = f"json c={c}"
        lines += [Line(f"non-streamed c={c}", key, "rps", "req/s"),
                  Line(f"non-streamed c={c} p50", key, "p50", "ms"),
                  Line(f"non-streamed c={c} p99", key, "p99", "ms")]
        if c == 1:
            lines.append(Line("non-streamed c=1 p50 added", key, "p50", "ms", added=True))
    for size in STREAM_SIZES:
        one, many = f"stream {size} c=1", f"stream {size} c=16"
        lines += [Line(f"stream {size:,} chunks c=1 TTFT p50", one, "ttft_p50", "ms"),
                  Line(f"stream {size:,} chunks c=1 TTFT added", one, "ttft_p50", "ms", True),
                  Line(f"stream {size:,} chunks c=1 total p50", one, "total_p50", "ms"),
                  Line(f"stream {size:,} chunks c=1 total added", one, "total_p50", "ms",
                       True),
                  Line(f"stream {size:,} chunks c=16", many, "chunks_per_s", "chunks/s")]
    lines += [Line(f"body {label} c={BODY_CONCURRENCY}", f"body {label}", "rps", "req/s")
              for label in payloads.BODY_SIZES]
    lines += [Line(f"RSS after {count:,} requests", "rss", f"after {count}", "MiB")
              for count in rss_counts]
    lines.append(Line(f"RSS growth {rss_counts[0]:,} → {rss_counts[-1]:,}", "rss",
                      "growth_pct", "%"))
    return lines


def run_rounds(plan: list[Measurement], targets: dict[str, Target], rounds: int,
               samples: Samples) -> None:
    for round_index in range(rounds):
        started = time.monotonic()
        for measurement in plan:
            shift = round_index % len(measurement.paths)
            for name in measurement.paths[shift:] + measurement.paths[:shift]:
                samples.add(measurement.key, name, measurement.run(targets[name]))
        log(f"round {round_index + 1}/{rounds} done in {time.monotonic() - started:.0f} s")


def warm_up(targets: dict[str, Target], seconds: float) -> None:
    """A short burst of every kind of request on every path (the canned completion holds
    one content field, so the stream client can send it too)."""
    kinds = [("", payloads.ping(), 1)]
    kinds += [(stream_route(size), payloads.ping(stream_route(size), stream=True), size)
              for size in STREAM_SIZES]
    for target in targets.values():
        for route, body, content_chunks in kinds:
            load.measure_streams(target.chat_url(route), body, services.API_KEY,
                                 content_chunks, WARM_UP_CONCURRENCY, seconds)


def measure_rss(tako: services.Service, counts: list[int], workdir: Path) -> dict[str, float]:
    """VmRSS of a fresh worker at start and after each count of answered requests."""
    ping = workdir / "ping.json"
    url = tako.url + "/v1/chat/completions"
    result = {"at start": services.vm_rss_mib(tako.proc.pid), "errors": 0.0}
    answered = 0
    for count in counts:
        run = load.wrk_count(url, ping, services.API_KEY, RSS_CONCURRENCY, count - answered)
        answered += int(run["requests"])
        result["errors"] += run["errors"]
        result[f"after {count}"] = services.vm_rss_mib(tako.proc.pid)
        result[f"answered by {count}"] = answered
    first, last = result[f"after {counts[0]}"], result[f"after {counts[-1]}"]
    result["growth_pct"] = (last - first) / first * 100
    return result


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Running:
    origins: dict[str, str]  # path (column) -> http://127.0.0.1:port
    fresh_tako: services.Service  # "tako", before any request but /healthz
    collector: services.Service


@contextlib.contextmanager
def running_services(workdir: Path, redis_url: str, redis_prefix: str) -> Iterator[Running]:
    """nginx, the thin proxy, the collector and the four tako paths, started together;
    all stopped on exit."""
    with contextlib.ExitStack() as stack:
        upstream = start_upstream(workdir, free_port())
        stack.callback(upstream.stop)
        wait_for_port(upstream.port)
        collector = services.start_collector(workdir)
        started = {"collector": collector,
                   PROXY: services.start_thin_proxy(upstream, workdir)}
        configs = {TAKO: services.tako_config(upstream),
                   TAKO_REDIS: services.tako_config(upstream, redis_url=redis_url,
                                                    redis_prefix=redis_prefix),
                   TAKO_TRACING: services.tako_config(upstream, otlp_endpoint=collector.url),
                   TAKO_SAMPLED: services.tako_config(upstream, otlp_endpoint=collector.url,
                                                      sample_ratio=SAMPLED_RATIO)}
        for name, config in configs.items():
            started[name] = services.start_tako(name.replace(" ", "-"), config, workdir)
        for service in started.values():
            stack.callback(service.stop)
        for name, service in started.items():
            wait = services.wait_tako if name in configs else services.wait_listening
            wait(service)
        origins = {name: started[name].url for name in ALL_PATHS if name != DIRECT}
        origins[DIRECT] = f"http://127.0.0.1:{upstream.port}"
        yield Running(origins=origins, fresh_tako=started[TAKO], collector=collector)


@contextlib.contextmanager
def redis_for(args: argparse.Namespace) -> Iterator[str]:
    """--redis-url (or REDIS_URL) when given, else a throwaway redis-server's URL."""
    if args.redis_url:
        yield args.redis_url
        return
    with redis_server() as redis:
        yield redis.url


def bench(args: argparse.Namespace, workdir: Path, redis_url: str) -> dict[str, object]:
    plan = measurement_plan(args.seconds, args.stream_seconds, workdir)
    if args.only:
        starts = tuple(start.strip() for start in args.only.split(",") if start.strip())
        plan = [measurement for measurement in plan if measurement.key.startswith(starts)]
    redis_prefix = f"tako-bench-{time.time_ns()}"
    began = time.monotonic()
    with running_services(workdir, redis_url, redis_prefix) as running:
        targets = {name: Target(name, running.origins[name],
                                routes_by_path=name in (DIRECT, PROXY)) for name in ALL_PATHS}
        log(f"services up after {time.monotonic() - began:.0f} s; RSS: "
            f"{args.rss_requests[-1]:,} requests to the fresh tako worker")
        samples = Samples()
        rss = measure_rss(running.fresh_tako, args.rss_requests, workdir)
        samples.add("rss", TAKO, rss)
        if args.warm_up_seconds:
            warm_up(targets, args.warm_up_seconds)
        log(f"{args.rounds} round(s) of {len(plan)} rows, {args.seconds:g} s per row and path")
        run_rounds(plan, targets, args.rounds, samples)
        collected = services.collector_counts(running.collector)
    rows = [report.row(line, samples) for line in table_lines(args.rss_requests)]
    after = [row["label"] for row in rows].index(
        f"non-streamed c={INGRESS_CONCURRENCY} p99") + 1
    rows[after:after] = report.ingress_rows(
        samples, f"json c={INGRESS_CONCURRENCY}",
        {name: f"{name} c={INGRESS_CONCURRENCY}" for name in INGRESSES}, INGRESS_CONCURRENCY)
    return {"settings": {"seconds_per_row": args.seconds, "rounds": args.rounds,
                         "stream_seconds_per_row": args.stream_seconds,
                         "rss_requests": args.rss_requests, "cpus": os.cpu_count()},
            "rows": rows, "errors": samples.errors(), "rss_at_start_mib": rss["at start"],
            "collector": collected, "measurements": samples.raw(),
            "redis_keys": services.redis_key_count(redis_url, redis_prefix)}


def main() -> None:
    args = parse_args()
    for tool in ("wrk", "nginx"):
        if not (shutil.which(tool) or Path(f"/usr/sbin/{tool}").exists()):
            sys.exit(f"{tool} is needed: apt-get install -y nginx wrk redis-server")
    workdir = Path(tempfile.mkdtemp(prefix="tako-bench-"))
    began = time.monotonic()
    try:
        with redis_for(args) as redis_url:
            result = bench(args, workdir, redis_url)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result["wall_s"] = round(time.monotonic() - began, 1)
    print(report.markdown(result["rows"]))  # type: ignore[arg-type]
    print(report.footnotes(result))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    log(f"wrote {args.json}")


if __name__ == "__main__":
    main()
