"""The compose topology, run as local processes: nginx with the project's nginx.conf in
front of three ``tako serve`` replicas on one Redis, driven by the official OpenAI SDK.

Cross-replica budget and rate-limit numbers are checked by the runtime's own
multi-replica tests; here the load balancer, streaming and replica loss are."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tako.core.specs import Price
from tako.runtime import Runtime, RuntimeSettings
from tests.fakes.openai import FakeOpenAI, Reply, make_app
from tests.support.dockerfile import parse_dockerfile
from tests.support.net import serve_asgi
from tests.support.openai_schema import validate_chunk, validate_completion, validate_error
from tests.support.redis_server import RedisProcess, redis_server
from tests.support.repo_files import DOCKERFILE, gateway_services
from tests.support.topology import API_KEY, BUDGET_KEY, BUDGET_USD, RPM, RPM_KEY, Topology, topology

# One topology per module: under pytest-xdist keep these tests on one worker
# (--dist loadgroup) instead of starting a second set of processes.
pytestmark = pytest.mark.xdist_group("deploy-topology")


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[str, FakeOpenAI]]:
    app, fake = make_app()
    with serve_asgi(app) as base:
        yield base + "/v1", fake


@pytest.fixture(scope="module")
def running(upstream: tuple[str, FakeOpenAI]) -> Iterator[Topology]:
    with redis_server(owned=True) as redis, topology(redis.url, upstream[0]) as running:
        running.extra["redis"] = redis
        yield running


@pytest.fixture
def topo(running: Topology) -> Topology:
    """The topology with all replicas up (a test that stopped one leaves it to this)."""
    stopped = [r for r in running.replicas if r.proc is None or r.proc.poll() is not None]
    for replica in stopped:
        replica.start()
    for replica in stopped:
        replica.wait_ready()
    return running


def _client(topo: Topology) -> openai.OpenAI:
    # No SDK retries: every failure the load balancer lets through must be visible.
    return openai.OpenAI(base_url=topo.base_url + "/v1", api_key=API_KEY, max_retries=0,
                         timeout=30)


def _image_healthcheck() -> list[str]:
    final = parse_dockerfile(DOCKERFILE)[1][-1]
    check = final.last("HEALTHCHECK")
    command: list[str] = json.loads(check[check.index("CMD") + 3:].strip())
    return command


def _compose_healthcheck(port: int) -> list[str]:
    """The compose gateways' healthcheck, pointed at ``port`` instead of 8000."""
    (gateway, *_) = gateway_services().values()
    test = gateway["healthcheck"]["test"]
    assert test[0] == "CMD" and ":8000/" in test[-1]
    return [*test[1:-1], test[-1].replace(":8000/", f":{port}/")]


def _passes(command: list[str], port: int) -> bool:
    assert command[0] == "python"
    result = subprocess.run([sys.executable, *command[1:]], capture_output=True, text=True,
                            timeout=30, env={"TAKO_SERVER__PORT": str(port)})
    return result.returncode == 0


def test_container_healthchecks_pass_against_a_running_replica(topo: Topology) -> None:
    port = topo.replicas[0].port
    assert _passes(_image_healthcheck(), port)
    assert _passes(_compose_healthcheck(port), port)


def test_redis_outage_fails_readiness_but_not_liveness(topo: Topology) -> None:
    redis: RedisProcess = topo.extra["redis"]
    port = topo.replicas[0].port
    redis.stop()
    try:
        # Load balancers and compose stop sending work; the container is not restarted.
        assert not _passes(_compose_healthcheck(port), port)
        assert _passes(_image_healthcheck(), port)
    finally:
        redis.start()
    for replica in topo.replicas:
        replica.wait_ready()
    assert _passes(_compose_healthcheck(port), port)


def test_chat_through_nginx_reaches_every_replica(topo: Topology) -> None:
    client = _client(topo)
    before = topo.log_size()
    for i in range(12):
        raw = client.chat.completions.with_raw_response.create(
            model="echo", messages=[{"role": "user", "content": f"hello {i}"}])
        body = json.loads(raw.text)
        validate_completion(body)
        assert body["choices"][0]["message"]["content"] == f"echo: hello {i}"
        assert raw.headers["x-request-id"]
    served = {attempts[-1] for attempts in topo.upstreams_in_log(before, 12)}
    assert served == {r.upstream for r in topo.replicas}


def test_request_ids_cross_the_load_balancer(topo: Topology) -> None:
    client = _client(topo)
    before = topo.log_size()
    raw = client.chat.completions.with_raw_response.create(
        model="echo", messages=[{"role": "user", "content": "id"}],
        extra_headers={"x-request-id": "client-chosen-id-42"})
    assert raw.headers["x-request-id"] == "client-chosen-id-42"
    # Without one, the id nginx mints (and logs) is the id tako answers with.
    raw = client.chat.completions.with_raw_response.create(
        model="echo", messages=[{"role": "user", "content": "id"}])
    minted = raw.headers["x-request-id"]
    first, second = topo.logged(before, 2)[:2]
    assert first.endswith("rid=client-chosen-id-42")
    assert second.endswith(f"rid={minted}")


def test_models_listing_through_nginx(topo: Topology) -> None:
    names = {m.id for m in _client(topo).models.list()}
    assert {"echo", "slow"} <= names


def test_streaming_passes_nginx_chunk_by_chunk(
        topo: Topology, upstream: tuple[str, FakeOpenAI]) -> None:
    words = "one two three four five six".split()
    gap_s = 0.15
    upstream[1].push(Reply(text=" ".join(words), chunk_delay_s=gap_s))
    started = time.monotonic()
    arrivals: list[float] = []
    text = ""
    stream = _client(topo).chat.completions.create(
        model="slow", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "count"}])
    usage = None
    for chunk in stream:
        validate_chunk(chunk.to_dict())
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                arrivals.append(time.monotonic() - started)
                text += choice.delta.content
    assert text == " ".join(words)
    assert usage is not None and usage.completion_tokens > 0
    assert len(arrivals) >= len(words)
    # The upstream spaces its words gap_s apart; buffering anywhere on the way (nginx
    # included) would deliver them together at the end.
    spread = arrivals[-1] - arrivals[0]
    assert spread >= 0.5 * gap_s * (len(words) - 1), arrivals


def _requests_by_replica(topo: Topology, model: str) -> dict[str, float]:
    """tako_requests_total for ``model`` as Prometheus would scrape it from each replica."""
    totals = {}
    for replica in topo.replicas:
        text = httpx.get(f"http://127.0.0.1:{replica.port}/metrics", timeout=5).text
        totals[replica.name] = sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "tako_requests_total" and sample.labels.get("model") == model)
    return totals


def test_every_replica_reports_its_share_of_the_traffic(topo: Topology) -> None:
    before = _requests_by_replica(topo, "echo")
    client = _client(topo)
    for i in range(9):
        client.chat.completions.create(model="echo",
                                       messages=[{"role": "user", "content": f"m{i}"}])
    after = _requests_by_replica(topo, "echo")
    deltas = {name: after[name] - before[name] for name in after}
    # Summed over the scrape targets, every request through the load balancer is counted once.
    assert sum(deltas.values()) == 9
    assert all(delta > 0 for delta in deltas.values()), deltas
    text = httpx.get(f"http://127.0.0.1:{topo.replicas[0].port}/metrics", timeout=5).text
    families = {f.name for f in text_string_to_metric_families(text)}
    for family in ("tako_requests", "tako_request_duration_seconds",
                   "tako_gateway_overhead_seconds", "tako_tokens", "tako_cost_usd",
                   "tako_in_flight_requests"):
        assert family in families, family
    assert httpx.get(topo.base_url + "/metrics", timeout=5).status_code == 404


@dataclass
class Outcome:
    started: float
    ended: float
    error: str | None
    status: int | None = None
    body: object = None


def test_sigkill_of_one_replica_fails_only_requests_in_flight(topo: Topology) -> None:
    client = _client(topo)
    victim = topo.replicas[1]
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    total, workers, kill_after = 120, 4, 30
    issued = iter(range(total))
    killed_at: list[float] = []

    def work() -> None:
        while True:
            with lock:
                i = next(issued, None)
            if i is None:
                return
            start = time.monotonic()
            outcome = Outcome(start, 0.0, None)
            try:
                reply = client.chat.completions.create(
                    model="echo", messages=[{"role": "user", "content": f"n{i}"}])
                assert reply.choices[0].message.content == f"echo: n{i}"
            except openai.APIStatusError as exc:
                outcome.error, outcome.status = repr(exc), exc.status_code
                outcome.body = exc.response.json()
            except (openai.APIError, AssertionError) as exc:
                outcome.error = repr(exc)
            outcome.ended = time.monotonic()
            with lock:
                outcomes.append(outcome)
                if len(outcomes) == kill_after:
                    killed_at.append(time.monotonic())
                    victim.kill(signal.SIGKILL)

    log_before = topo.log_size()
    threads = [threading.Thread(target=work) for _ in range(workers)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert killed_at, "the replica was never killed"
        kill_time = killed_at[0]
        failed = [o for o in outcomes if o.error]
        after_kill = [o for o in outcomes if o.started > kill_time]
        assert len(outcomes) == total
        assert len(after_kill) >= total - kill_after - workers
        # Only requests that were already running when the replica died may fail.
        assert all(o.started <= kill_time for o in failed), [o.error for o in failed]
        assert len(failed) <= workers
        # A request whose answer had not started gets nginx's 502 as an OpenAI-shaped
        # error (not an HTML page); one cut mid-answer ends as a broken connection.
        for outcome in failed:
            if outcome.status is not None:
                assert outcome.status == 502, outcome.error
                validate_error(outcome.body)
            else:
                assert "APIConnectionError" in (outcome.error or ""), outcome.error
        # Requests nginx sent to the dead replica were moved to a live one.
        attempts = topo.upstreams_in_log(log_before, total)
        moved = [a for a in attempts if len(a) > 1 and a[0] == victim.upstream]
        assert moved, "no request was retried past the dead replica"
        assert all(a[-1] != victim.upstream for a in moved)
    finally:
        victim.kill()


def test_sigterm_drains_a_stream_in_flight(
        running: Topology, upstream: tuple[str, FakeOpenAI]) -> None:
    # Talks to one replica directly: the other two need not be up.
    replica = running.replicas[2]
    if replica.proc is None or replica.proc.poll() is not None:
        replica.start()
        replica.wait_ready()
    words = "a b c d e f g h".split()
    upstream[1].push(Reply(text=" ".join(words), chunk_delay_s=0.15))
    body = {"model": "slow", "stream": True, "messages": [{"role": "user", "content": "x"}]}
    frames = []
    try:
        with httpx.stream("POST", f"http://127.0.0.1:{replica.port}/v1/chat/completions",
                          json=body, headers={"authorization": f"Bearer {API_KEY}"},
                          timeout=30) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if not line.startswith("data: "):
                    continue
                frames.append(line[6:])
                if len(frames) == 2:
                    assert replica.proc is not None
                    replica.proc.send_signal(signal.SIGTERM)
        assert frames[-1] == "[DONE]"
        text = "".join(json.loads(f)["choices"][0]["delta"].get("content") or ""
                       for f in frames[:-1] if json.loads(f).get("choices"))
        assert text == " ".join(words)
        assert replica.proc is not None
        # uvicorn re-raises the SIGTERM it handled once it has shut down.
        assert replica.proc.wait(timeout=10) in (0, -signal.SIGTERM)
    finally:
        replica.kill()


async def _flood(topo: Topology, key: str, count: int) -> list[httpx.Response]:
    body = {"model": "echo", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}
    async with httpx.AsyncClient(base_url=topo.base_url, timeout=30, headers={
            "authorization": f"Bearer {key}"}) as client:
        return list(await asyncio.gather(*(client.post("/v1/chat/completions", json=body)
                                           for _ in range(count))))


def test_a_budget_holds_across_the_three_replicas(topo: Topology) -> None:
    since = topo.log_size()
    responses = asyncio.run(_flood(topo, BUDGET_KEY, 90))
    ok = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code != 200]
    assert ok and refused
    assert all(r.status_code == 429 and r.json()["error"]["type"] == "insufficient_quota"
               for r in refused)
    served_by = {u[-1] for u in topo.upstreams_in_log(since, len(responses)) if u}
    # (nginx may still be sitting out a replica an earlier test killed: fail_timeout)
    assert len(served_by) >= 2, "the flood was spread over several replicas"

    async def spent() -> float:
        rt = Runtime.from_settings(RuntimeSettings(
            backend="redis", redis_url=topo.extra["redis"].url))
        await rt.start()
        try:
            return await rt.spend("key", "deploy-budget", "day", "deploy")
        finally:
            await rt.aclose()

    total = asyncio.run(spent())
    assert 0 < total <= BUDGET_USD + 1e-12
    price = Price(input=1.0, output=2.0)  # the echo model's row in providers/prices.json
    charged = sum(price.cost(r.json()["usage"]["prompt_tokens"],
                             r.json()["usage"]["completion_tokens"]) for r in ok)
    assert total == pytest.approx(charged, rel=1e-6)


def test_an_rpm_limit_is_exact_across_the_three_replicas(topo: Topology) -> None:
    responses = asyncio.run(_flood(topo, RPM_KEY, 45))
    ok = [r for r in responses if r.status_code == 200]
    assert len(ok) == RPM, f"{len(ok)} admitted under a limit of {RPM} per minute"
    limited = [r for r in responses if r.status_code == 429]
    assert len(limited) == 45 - RPM
    assert all(r.json()["error"]["type"] == "rate_limit_exceeded" for r in limited)
