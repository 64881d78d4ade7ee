"""One owner for each request's life, seen over real HTTP: a policy denial after the
upstream answered still reports the upstream's real usage and price; a client that leaves
or a request that is cancelled closes its call exactly once."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes.openai import FakeOpenAI, Reply
from tests.support.gateway import TEST_KEY, Gateway, basic_config, gateway
from tests.support.upstreams import fresh, served

PRICE = {"input": 1000.0, "output": 2000.0}  # USD per million tokens
USAGE = {"prompt_tokens": 300, "completion_tokens": 40, "total_tokens": 340}
COST = (300 * 1000.0 + 40 * 2000.0) / 1_000_000

upstream = served()
fake = fresh()


@pytest.fixture(scope="module")
def gw(upstream: tuple[str, FakeOpenAI]) -> Iterator[Gateway]:
    cfg = basic_config()
    for name in ("denied", "slow"):
        cfg["deployments"].append({"name": name, "provider": "http-generic", "model": name,
                                   "base_url": upstream[0] + "/v1", "price": PRICE})
    cfg["policy"] = {"mode": "embedded", "data": {"denied_phrases": ["launch codes"]}}
    with gateway(cfg) as g:
        yield g


def metric(gw: Gateway, name: str, **labels: str) -> float:
    text = httpx.get(gw.url + "/metrics", timeout=5).text
    return sum(s.value for family in text_string_to_metric_families(text)
               for s in family.samples
               if s.name == name and labels.items() <= s.labels.items())


def access_lines(gw: Gateway, request_id: str, expect: int = 1) -> list[dict[str, Any]]:
    """The access-log lines of ``request_id`` once ``expect`` of them were written (the log
    is flushed once per event-loop turn), plus a moment to catch any extra line."""
    deadline = time.monotonic() + 10
    lines: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        lines = [orjson.loads(line) for line in gw.log().splitlines()
                 if line.startswith("{") and request_id in line]
        if len(lines) >= expect:
            time.sleep(0.3)
            break
        time.sleep(0.05)
    return [orjson.loads(line) for line in gw.log().splitlines()
            if line.startswith("{") and request_id in line]


def sdk(gw: Gateway, request_id: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=TEST_KEY, max_retries=0,
                         default_headers={"x-request-id": request_id})


def test_a_denied_answer_keeps_its_usage_and_price(gw: Gateway, fake: FakeOpenAI) -> None:
    request_id = f"deny-{uuid.uuid4().hex[:8]}"
    tokens_before = metric(gw, "tako_tokens_total", model="denied", direction="input")
    cost_before = metric(gw, "tako_cost_usd_total", model="denied")
    fake.push(Reply(text="here are the launch codes: 0000", usage=USAGE))
    with pytest.raises(openai.PermissionDeniedError) as info:
        sdk(gw, request_id).chat.completions.create(
            model="denied", messages=[{"role": "user", "content": "anything"}])
    assert info.value.body["type"] == "policy_denied"  # type: ignore[index]
    (line,) = access_lines(gw, request_id)
    assert line["status"] == 403 and line["error_type"] == "policy_denied"
    assert (line["prompt_tokens"], line["completion_tokens"]) == (300, 40)
    assert line["cost_usd"] == pytest.approx(COST)
    assert metric(gw, "tako_tokens_total", model="denied",
                  direction="input") - tokens_before == 300
    assert metric(gw, "tako_cost_usd_total", model="denied") - cost_before == \
        pytest.approx(COST)


def test_a_denied_stream_keeps_its_usage_and_price(gw: Gateway, fake: FakeOpenAI) -> None:
    request_id = f"deny-stream-{uuid.uuid4().hex[:8]}"
    tokens_before = metric(gw, "tako_tokens_total", model="denied", direction="output")
    cost_before = metric(gw, "tako_cost_usd_total", model="denied")
    fake.push(Reply(text="the launch codes are secret", usage=USAGE))
    stream = sdk(gw, request_id).chat.completions.create(
        model="denied", stream=True, messages=[{"role": "user", "content": "anything"}])
    with pytest.raises(openai.APIError) as info:
        for _ in stream:
            pass
    assert "launch codes" in str(info.value)
    (line,) = access_lines(gw, request_id)
    assert line["status"] == 403 and line["error_type"] == "policy_denied"
    assert (line["prompt_tokens"], line["completion_tokens"]) == (300, 40)
    assert line["cost_usd"] == pytest.approx(COST)
    assert metric(gw, "tako_tokens_total", model="denied",
                  direction="output") - tokens_before == 40
    assert metric(gw, "tako_cost_usd_total", model="denied") - cost_before == \
        pytest.approx(COST)


def _in_flight_settles_to_zero(gw: Gateway) -> float:
    deadline = time.monotonic() + 10
    value = metric(gw, "tako_in_flight_requests")
    while time.monotonic() < deadline and value != 0:
        time.sleep(0.1)
        value = metric(gw, "tako_in_flight_requests")
    return value


def test_a_client_leaving_mid_stream_closes_its_call_once(gw: Gateway, fake: FakeOpenAI) -> None:
    request_id = f"gone-{uuid.uuid4().hex[:8]}"
    fake.push(Reply(text=" ".join(f"w{i}" for i in range(80)), chunk_delay_s=0.05,
                    usage=USAGE))
    with httpx.stream("POST", gw.base_url + "/chat/completions", timeout=30,
                      headers={"authorization": f"Bearer {TEST_KEY}",
                               "x-request-id": request_id},
                      json={"model": "slow", "stream": True, "max_tokens": 200,
                            "messages": [{"role": "user", "content": "go"}]}) as resp:
        lines = resp.iter_lines()
        assert any(next(lines).startswith("data: ") for _ in range(6))
    (line,) = access_lines(gw, request_id)
    assert line["status"] == 499 and line["error_type"] == "client_disconnected"
    assert line["completion_tokens"] > 0 and line["cost_usd"] > 0, "spent tokens went missing"
    assert _in_flight_settles_to_zero(gw) == 0


def test_a_cancelled_request_closes_its_call_once(gw: Gateway, fake: FakeOpenAI) -> None:
    request_id = f"cancel-{uuid.uuid4().hex[:8]}"
    fake.push(Reply(text="too late", delay_s=2.0, usage=USAGE))
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(gw.base_url + "/chat/completions", timeout=0.5,
                   headers={"authorization": f"Bearer {TEST_KEY}", "x-request-id": request_id},
                   json={"model": "slow", "messages": [{"role": "user", "content": "go"}]})
    (line,) = access_lines(gw, request_id)
    assert line["status"] == 499 and line["error_type"] == "client_disconnected"
    assert _in_flight_settles_to_zero(gw) == 0
    # the gateway is whole afterwards: the next request is served and counted once
    fake.push(Reply(text="fine", usage=USAGE))
    follow_up = f"after-{uuid.uuid4().hex[:8]}"
    reply = sdk(gw, follow_up).chat.completions.create(
        model="slow", messages=[{"role": "user", "content": "again"}])
    assert reply.choices[0].message.content == "fine"
    assert len(access_lines(gw, follow_up)) == 1


def test_server_request_timeout_bounds_a_request() -> None:
    cfg = basic_config()
    cfg["server"] = {"request_timeout_s": 0.3}
    cfg["deployments"].append({"name": "sleepy", "provider": "echo", "model": "echo",
                               "options": {"delay_s": 2.0}})
    with gateway(cfg) as gw:
        started = time.monotonic()
        with pytest.raises(openai.InternalServerError) as info:
            openai.OpenAI(base_url=gw.base_url, api_key=TEST_KEY, max_retries=0).chat.\
                completions.create(model="sleepy", messages=[{"role": "user", "content": "x"}])
        assert time.monotonic() - started < 1.5
        assert info.value.status_code == 504
        assert info.value.body["code"] == "request_timeout"  # type: ignore[index]
        assert _in_flight_settles_to_zero(gw) == 0
        fast = httpx.post(gw.base_url + "/chat/completions", timeout=5,
                          headers={"authorization": f"Bearer {TEST_KEY}"},
                          json={"model": "echo", "messages": [{"role": "user", "content": "x"}]})
        assert fast.status_code == 200
