"""The JSON access log of a real ``tako serve``: one line per chat request, tied to the
``x-request-id`` the client saw, with ids, usage and timings, and no keys or content."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest

from tests.fakes.openai import FakeOpenAI, make_app
from tests.support.gateway import TEST_KEY, Gateway, basic_config, gateway
from tests.support.net import serve_asgi

UPSTREAM_KEY = "sk-upstream-Q3RT-do-not-log"
WRONG_KEY = "sk-wrong-K8s7-do-not-log"
SECRET = "zebra-Vx93-confidential-passphrase"


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAI]:
    app, fake = make_app()
    with serve_asgi(app) as url:
        fake.url = url  # type: ignore[attr-defined]
        yield fake


@pytest.fixture(scope="module")
def gw(upstream: FakeOpenAI) -> Iterator[Gateway]:
    config = basic_config()
    config["deployments"].append(
        {"name": "upstream", "provider": "http-generic", "model": "served-model",
         "base_url": upstream.url + "/v1", "api_key": UPSTREAM_KEY,  # type: ignore[attr-defined]
         "price": {"input": 2.0, "output": 8.0}})
    with gateway(config) as g:
        yield g


def chat_lines(gw: Gateway, expected: int) -> list[dict[str, Any]]:
    """The access-log lines, once ``expected`` of them were written (a stream's line is
    written when its last frame has gone out)."""
    deadline = time.monotonic() + 5
    while True:
        lines = [orjson.loads(line) for line in gw.log().splitlines()
                 if line.startswith("{") and '"event":"chat"' in line]
        if len(lines) >= expected or time.monotonic() > deadline:
            return lines
        time.sleep(0.02)


def test_one_line_per_chat_request_with_ids_usage_and_no_secrets(
        gw: Gateway, upstream: FakeOpenAI) -> None:
    client = openai.OpenAI(base_url=gw.base_url, api_key=TEST_KEY, max_retries=0)
    question = [{"role": "user", "content": f"remember this: {SECRET}"}]
    sent: dict[str, dict[str, Any]] = {}

    plain = client.chat.completions.with_raw_response.create(
        model="upstream", messages=question, extra_headers={"x-request-id": "obs-req-0001"})
    assert plain.headers["x-request-id"] == "obs-req-0001"
    assert SECRET in (plain.parse().choices[0].message.content or "")
    sent["obs-req-0001"] = {"model": "upstream", "deployment": "upstream", "status": 200,
                            "stream": False}

    echo = client.chat.completions.with_raw_response.create(model="echo", messages=question)
    sent[echo.headers["x-request-id"]] = {"model": "echo", "deployment": "echo",
                                          "status": 200, "stream": False}

    with client.chat.completions.with_streaming_response.create(
            model="upstream", messages=question, stream=True,
            stream_options={"include_usage": True}) as streamed:
        text = "".join(c.choices[0].delta.content or "" for c in streamed.parse() if c.choices)
        assert SECRET in text
    sent[streamed.headers["x-request-id"]] = {"model": "upstream", "deployment": "upstream",
                                              "status": 200, "stream": True}

    missing = httpx.post(gw.base_url + "/chat/completions", timeout=10,
                         headers={"authorization": f"Bearer {TEST_KEY}"},
                         json={"model": "no-such-model", "messages": question})
    assert missing.status_code == 404
    sent[missing.headers["x-request-id"]] = {"model": "unknown", "deployment": None,
                                             "status": 404, "stream": False}

    refused = httpx.post(gw.base_url + "/chat/completions", timeout=10,
                         headers={"authorization": f"Bearer {WRONG_KEY}"},
                         json={"model": "echo", "messages": question})
    assert refused.status_code == 401

    lines = chat_lines(gw, len(sent))
    by_id = {line["request_id"]: line for line in lines}
    assert len(by_id) == len(lines), "a request was logged twice"
    assert set(sent) <= set(by_id)
    for request_id, want in sent.items():
        line = by_id[request_id]
        assert {k: line[k] for k in want} == want, line
        assert (line["tenant_id"], line["user_id"], line["key_id"]) == ("acme", "ann", "alpha")
        assert line["overhead_ms"] >= 0 and line["duration_ms"] >= line["overhead_ms"]
        if want["status"] == 200:
            assert line["prompt_tokens"] > 0 and line["completion_tokens"] > 0
            assert line["cost_usd"] > 0
        else:
            assert line["error_type"] == "invalid_request_error"
    # The fake upstream reports 12 prompt and 5 completion tokens at 2/8 USD per million.
    assert (by_id["obs-req-0001"]["prompt_tokens"],
            by_id["obs-req-0001"]["completion_tokens"]) == (12, 5)
    assert by_id["obs-req-0001"]["cost_usd"] == pytest.approx((12 * 2 + 5 * 8) / 1e6)
    assert by_id[streamed.headers["x-request-id"]]["ttft_ms"] > 0

    # The secrets were really in flight: the vendor got its key and the message.
    assert all(r.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
               for r in upstream.requests)
    assert all(SECRET in orjson.dumps(r.body).decode() for r in upstream.requests)
    log = gw.log()
    for secret in (TEST_KEY, UPSTREAM_KEY, WRONG_KEY, SECRET):
        assert secret not in log
