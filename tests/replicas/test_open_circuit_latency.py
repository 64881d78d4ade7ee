"""While a deployment's circuit is open, a single request to it through a real ``tako
serve`` on Redis is refused from the replica's local cache, in about a millisecond on
loopback, with a Retry-After saying when the probe is due. Prints the measured p50."""

from __future__ import annotations

import statistics
import time

import httpx

from tests.fakes.openai import Reply, make_app
from tests.support.gateway import TEST_KEY, gateway
from tests.support.net import serve_asgi
from tests.support.redis_server import RedisProcess
from tests.support.replicas import PRICE, config

REQUESTS = 200
OPEN_S = 60


def test_a_request_to_an_open_circuit_is_refused_in_about_a_millisecond(
        redis_proc: RedisProcess, key_prefix: str) -> None:
    app, fake = make_app()
    fake.push(*[Reply(status=500)] * 3)
    with serve_asgi(app) as upstream:
        cfg = config(redis_proc.url, key_prefix, retry={"max_attempts": 1},
                     breaker={"failure_ratio": 1.0, "min_calls": 3, "open_s": OPEN_S})
        cfg["deployments"].append({"name": "broken", "provider": "http-generic",
                                   "model": "m", "base_url": upstream + "/v1",
                                   "price": PRICE})
        body = {"model": "broken", "messages": [{"role": "user", "content": "hi"}]}
        headers = {"authorization": f"Bearer {TEST_KEY}"}
        with gateway(cfg) as gw, httpx.Client(base_url=gw.base_url, timeout=30,
                                              headers=headers) as client:
            tripped = [client.post("/chat/completions", json=body) for _ in range(3)]
            assert [r.status_code for r in tripped] == [502] * 3
            client.post("/chat/completions", json=body)  # warm: the first refusal
            timings, refusals = [], []
            for _ in range(REQUESTS):  # one at a time, on one kept-alive connection
                started = time.perf_counter()
                response = client.post("/chat/completions", json=body)
                timings.append(time.perf_counter() - started)
                refusals.append(response)
    assert len(fake.requests) == 3, "an open circuit sends nothing upstream"
    assert {r.status_code for r in refusals} == {503}
    assert {r.json()["error"]["code"] for r in refusals} == {"circuit_open"}
    waits = [int(r.headers["retry-after"]) for r in refusals]
    assert 1 <= min(waits) and max(waits) <= OPEN_S  # when the probe is due
    p50 = statistics.median(timings)
    p99 = sorted(timings)[int(REQUESTS * 0.99) - 1]
    print(f"\nopen circuit, {REQUESTS} sequential requests: refusal p50 {p50 * 1000:.2f} ms, "
          f"p99 {p99 * 1000:.2f} ms")
    assert p50 < 0.005, f"refusal p50 {p50 * 1000:.2f} ms (about 1 ms expected on loopback)"
