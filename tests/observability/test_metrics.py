"""``/metrics`` of a real ``tako serve --workers 2``: every scrape, whichever worker answers
it, shows the traffic of both workers, and labels stay bounded."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from tests.support.gateway import TEST_KEY, Gateway, basic_config, gateway

CAPPED_KEY = "sk-test-capped"
UNLISTED_MODEL = "gpt-unlisted-zq7"
BATCH = 8
STREAMS = 3
UNAUTHENTICATED = 2
UNKNOWN_MODEL = 2
OVER_BUDGET = 2

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum over every series of ``name`` whose labels include ``labels``."""
    return sum(v for (n, ls), v in samples.items()
               if n == name and set(labels.items()) <= ls)


def authenticated_requests(samples: Samples) -> float:
    """Chat requests that got past authentication (401s are checked on their own)."""
    return total(samples, "tako_requests_total") - total(samples, "tako_requests_total",
                                                         status="401")


@pytest.fixture(scope="module")
def multiproc_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("prom")


@pytest.fixture(scope="module")
def gw(multiproc_dir: Path) -> Iterator[Gateway]:
    config = basic_config()
    config["deployments"][0]["price"] = {"input": 1.0, "output": 4.0}
    config["auth"]["keys"].append(
        {"key": CAPPED_KEY, "key_id": "capped", "tenant_id": "acme", "user_id": "cy",
         "budgets": [{"scope": "key", "period": "request", "usd": 1e-9}]})
    with gateway(config, workers=2,
                 env={"PROMETHEUS_MULTIPROC_DIR": str(multiproc_dir)}) as g:
        yield g


def chat(gw: Gateway, body: dict[str, Any], key: str = TEST_KEY) -> httpx.Response:
    """One request on its own connection, so the kernel may hand it to either worker."""
    return httpx.post(gw.url + "/v1/chat/completions", json=body, timeout=10,
                      headers={"authorization": f"Bearer {key}"})


def prompt(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def streamed_usage(response: httpx.Response) -> tuple[int, int]:
    frames = [orjson.loads(line[6:]) for line in response.text.splitlines()
              if line.startswith("data: {")]
    usage = frames[-1]["usage"]
    return usage["prompt_tokens"], usage["completion_tokens"]


def requests_per_worker(multiproc_dir: Path) -> list[float]:
    """Chat requests past authentication, per worker, read from each worker's own file."""
    counts = []
    for db in sorted(multiproc_dir.glob("counter_*.db")):
        own = {(s.name, frozenset(s.labels.items())): s.value
               for family in MultiProcessCollector.merge([str(db)]) for s in family.samples}
        counts.append(authenticated_requests(own))
    return counts


@pytest.fixture(scope="module")
def traffic(gw: Gateway, multiproc_dir: Path) -> dict[str, int]:
    """Send the module's traffic once; return how many successes were sent and the tokens
    the clients were billed. Successes go on (in small concurrent batches) until both
    workers have served some, so a worker that booted late cannot hide the split."""
    def success(i: int) -> tuple[int, int]:
        r = chat(gw, {"model": "echo", "messages": prompt(f"request number {i}")})
        assert r.status_code == 200, r.text
        return r.json()["usage"]["prompt_tokens"], r.json()["usage"]["completion_tokens"]

    def stream(i: int) -> tuple[int, int]:
        r = chat(gw, {"model": "echo", "stream": True, "stream_options": {"include_usage": True},
                      "messages": prompt(f"stream number {i}")})
        assert r.status_code == 200 and r.text.rstrip().endswith("data: [DONE]"), r.text
        return streamed_usage(r)

    with ThreadPoolExecutor(4) as pool:
        billed = list(pool.map(stream, range(STREAMS)))
        successes = 0
        while successes < 200:
            billed += list(pool.map(success, range(successes, successes + BATCH)))
            successes += BATCH
            split = requests_per_worker(multiproc_dir)
            if len(split) == 2 and min(split) > 0:
                break
    for _ in range(UNAUTHENTICATED):
        assert chat(gw, {"model": "echo", "messages": prompt("x")},
                    key="sk-not-a-key").status_code == 401
    for _ in range(UNKNOWN_MODEL):
        assert chat(gw, {"model": UNLISTED_MODEL, "messages": prompt("x")}).status_code == 404
    for _ in range(OVER_BUDGET):
        r = chat(gw, {"model": "echo", "messages": prompt("x")}, key=CAPPED_KEY)
        assert r.status_code == 429 and r.json()["error"]["type"] == "insufficient_quota"
    return {"successes": successes, "input": sum(b[0] for b in billed),
            "output": sum(b[1] for b in billed)}


@pytest.fixture(scope="module")
def scrapes(gw: Gateway, traffic: dict[str, int]) -> list[Samples]:
    """Several scrapes, each on a new connection (so both workers answer some)."""
    return [parse(httpx.get(gw.url + "/metrics", timeout=5).text) for _ in range(8)]


def test_every_scrape_shows_the_traffic_of_both_workers(
        scrapes: list[Samples], traffic: dict[str, int], multiproc_dir: Path) -> None:
    routed = traffic["successes"] + STREAMS + UNKNOWN_MODEL + OVER_BUDGET
    per_worker = requests_per_worker(multiproc_dir)
    assert len(per_worker) == 2 and min(per_worker) > 0, per_worker
    assert sum(per_worker) == routed
    for samples in scrapes:
        assert authenticated_requests(samples) == routed
        assert samples == scrapes[0]


def test_requests_by_status(scrapes: list[Samples], traffic: dict[str, int]) -> None:
    s = scrapes[-1]
    assert value(s, "tako_requests_total", model="echo", status="200",
                 kind="deployment", api="chat") == traffic["successes"] + STREAMS
    assert total(s, "tako_requests_total", status="404") == UNKNOWN_MODEL
    assert value(s, "tako_requests_total", model="echo", status="429",
                 kind="deployment", api="chat") == OVER_BUDGET


def test_histograms_count_what_they_measure(scrapes: list[Samples],
                                            traffic: dict[str, int]) -> None:
    s = scrapes[-1]
    successes = traffic["successes"]
    assert value(s, "tako_request_duration_seconds_count", kind="unknown") >= UNKNOWN_MODEL
    assert value(s, "tako_request_duration_seconds_count", kind="deployment") == (
        successes + STREAMS + OVER_BUDGET)
    assert value(s, "tako_request_duration_seconds_bucket", kind="deployment",
                 le="+Inf") == successes + STREAMS + OVER_BUDGET
    assert value(s, "tako_gateway_overhead_seconds_count") == successes + STREAMS
    assert value(s, "tako_gateway_overhead_seconds_sum") > 0
    assert value(s, "tako_time_to_first_token_seconds_count", model="echo") == STREAMS
    assert value(s, "tako_time_to_first_token_seconds_sum", model="echo") > 0


def test_tokens_and_cost_match_what_clients_were_billed(scrapes: list[Samples],
                                                        traffic: dict[str, int]) -> None:
    s = scrapes[-1]
    assert traffic["input"] > 0 and traffic["output"] > 0
    assert value(s, "tako_tokens_total", model="echo", direction="input") == traffic["input"]
    assert value(s, "tako_tokens_total", model="echo", direction="output") == traffic["output"]
    expected_usd = (traffic["input"] * 1.0 + traffic["output"] * 4.0) / 1e6
    assert value(s, "tako_cost_usd_total", model="echo") == pytest.approx(expected_usd)


def test_budget_rejections_are_counted_once(scrapes: list[Samples]) -> None:
    assert value(scrapes[-1], "tako_rejections_total", reason="budget") == OVER_BUDGET


def test_unauthenticated_requests_are_counted(scrapes: list[Samples]) -> None:
    s = scrapes[-1]
    assert value(s, "tako_rejections_total", reason="auth") == UNAUTHENTICATED
    assert total(s, "tako_requests_total", status="401") == UNAUTHENTICATED


def test_labels_stay_bounded(gw: Gateway, scrapes: list[Samples]) -> None:
    text = httpx.get(gw.url + "/metrics", timeout=5).text
    assert UNLISTED_MODEL not in text
    models = {dict(labels).get("model") for (_, labels) in scrapes[-1]} - {None}
    assert models <= {"echo", "echo-slow", "echo-tools", "unknown"}, models


def test_in_flight_gauge_sums_live_requests(gw: Gateway, scrapes: list[Samples]) -> None:
    assert value(scrapes[-1], "tako_in_flight_requests") == 0
    started = threading.Event()

    def slow() -> None:
        started.set()
        assert chat(gw, {"model": "echo-slow", "messages": prompt("wait")}).status_code == 200

    worker = threading.Thread(target=slow)
    worker.start()
    started.wait()
    seen = []
    for _ in range(40):
        seen.append(value(parse(httpx.get(gw.url + "/metrics", timeout=5).text),
                          "tako_in_flight_requests"))
        if seen[-1] == 1:
            break
    worker.join()
    assert 1 in seen, seen
    after = parse(httpx.get(gw.url + "/metrics", timeout=5).text)
    assert value(after, "tako_in_flight_requests") == 0
