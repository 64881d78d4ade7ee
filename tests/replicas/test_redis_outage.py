"""Redis killed mid-run and restarted: fail_closed refuses, fail_open serves and counts."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.gateway import TEST_KEY, Gateway, gateway
from tests.support.redis_server import RedisProcess, redis_server
from tests.support.replicas import BODY, config

HEADERS = {"authorization": f"Bearer {TEST_KEY}"}


def ask(gw: Gateway) -> httpx.Response:
    return httpx.post(gw.base_url + "/chat/completions", json=BODY, headers=HEADERS,
                      timeout=10)


def until(predicate, timeout: float = 15.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def unaccounted_usd(gw: Gateway) -> float:
    text = httpx.get(gw.url + "/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        if family.name == "tako_unaccounted_spend_usd":
            return sum(s.value for s in family.samples if s.name.endswith("_total"))
    return 0.0


@pytest.fixture(scope="module")
def redis_proc() -> Iterator[RedisProcess]:
    """A server of our own, even when REDIS_URL names a shared one: these tests stop it."""
    with redis_server(owned=True) as proc:
        yield proc


@pytest.fixture
def limits() -> dict:  # type: ignore[type-arg]
    return {"budgets": [{"scope": "tenant", "period": "day", "usd": 100.0}],
            "rate_limits": [{"scope": "key", "rpm": 10_000}]}


def test_fail_closed_refuses_while_down_and_recovers(redis_proc: RedisProcess,
                                                     key_prefix: str, limits: dict) -> None:  # type: ignore[type-arg]
    cfg = config(redis_proc.url, key_prefix, failure_mode="fail_closed", **limits)
    with gateway(cfg) as gw:
        assert ask(gw).status_code == 200
        redis_proc.stop()
        try:
            down = ask(gw)
            assert down.status_code == 503
            assert "redis" in down.json()["error"]["message"].lower()
            assert httpx.get(gw.url + "/readyz").status_code == 503
        finally:
            redis_proc.start()
        assert until(lambda: ask(gw).status_code == 200), "did not recover after Redis returned"
        assert httpx.get(gw.url + "/readyz").status_code == 200


def test_fail_open_serves_while_down_and_counts_unaccounted_spend(
        redis_proc: RedisProcess, key_prefix: str, limits: dict) -> None:  # type: ignore[type-arg]
    cfg = config(redis_proc.url, key_prefix, failure_mode="fail_open", **limits)
    with gateway(cfg) as gw:
        assert ask(gw).status_code == 200
        assert unaccounted_usd(gw) == 0
        redis_proc.stop()
        try:
            statuses = [ask(gw).status_code for _ in range(5)]
            assert statuses == [200] * 5
            assert unaccounted_usd(gw) > 0
            assert "redis" in gw.log().lower()
            ready = httpx.get(gw.url + "/readyz")  # still serving: stays in the pool
            assert ready.status_code == 200 and ready.json()["checks"]["redis"] is False
        finally:
            redis_proc.start()
        assert until(lambda: ask(gw).status_code == 200)
