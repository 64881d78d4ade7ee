"""Image URLs cannot make a worker hold unbounded memory: a real ``tako serve`` with an
Ollama deployment fetches images from a loopback image server (allow-listed by CIDR)
within per-request limits on count, total bytes and concurrency, and a process-wide
limit on concurrent fetches; the worker's peak RSS stays within a stated bound and its
memory is handed back after the request."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tako.providers.image_fetch import PROCESS_FETCH_SLOTS
from tests.fakes.ollama import FakeOllama, make_app
from tests.support.gateway import TEST_KEY, Gateway, basic_config, gateway
from tests.support.images import PNG
from tests.support.net import serve_asgi

MB = 1024 * 1024
BIG_IMAGE = PNG + b"\0" * (20 * MB - len(PNG))  # exactly the per-image cap of 20 MB
# 20 images of 20 MB once took a worker from 166 MB to 1,868 MB. With the default bounds
# (32 MB in all, 4 fetches at a time) the worker's peak may grow by at most this much:
PEAK_GROWTH_BOUND = 160 * MB
# ...and what it holds once the request is over, at most this much above where it began:
RETAINED_BOUND = 48 * MB


class ImageServer:
    """Serves ``/big/<n>.png`` (20 MB each), ``/tiny/<n>.png`` and ``/slow/<n>.png`` (a
    tiny image after 0.3 s, counting how many are being served at once)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.serving = 0
        self.most_at_once = 0

    def app(self) -> Starlette:
        async def big(request: Request) -> Response:
            return Response(BIG_IMAGE, media_type="image/png")

        async def tiny(request: Request) -> Response:
            return Response(PNG, media_type="image/png")

        async def slow(request: Request) -> Response:
            with self.lock:
                self.serving += 1
                self.most_at_once = max(self.most_at_once, self.serving)
            try:
                await asyncio.sleep(0.3)
            finally:
                with self.lock:
                    self.serving -= 1
            return Response(PNG, media_type="image/png")

        return Starlette(routes=[Route("/big/{n}", big), Route("/tiny/{n}", tiny),
                                 Route("/slow/{n}", slow)])


@pytest.fixture(scope="module")
def images() -> Iterator[tuple[str, ImageServer]]:
    server = ImageServer()
    with serve_asgi(server.app()) as base:
        yield base, server


@pytest.fixture(scope="module")
def ollama() -> Iterator[tuple[str, FakeOllama]]:
    app, fake = make_app()
    with serve_asgi(app) as base:
        yield base, fake


@pytest.fixture(scope="module")
def gw(ollama: tuple[str, FakeOllama]) -> Iterator[Gateway]:
    base, _ = ollama
    loopback = {"allowlist": ["127.0.0.0/8"]}
    config = basic_config()
    config["deployments"] += [
        {"name": "vision", "provider": "ollama", "model": "llava", "base_url": base,
         "options": {"image_fetch": loopback}},
        {"name": "vision-wide", "provider": "ollama", "model": "llava", "base_url": base,
         "options": {"image_fetch": {**loopback, "max_concurrent": 40, "max_images": 40}}},
    ]
    config["server"] = {"request_timeout_s": 120}
    with gateway(config) as running:
        yield running


def ask_with_images(gw: Gateway, urls: list[str], model: str = "vision") -> httpx.Response:
    parts: list[dict[str, Any]] = [{"type": "text", "text": "what is in these?"}]
    parts += [{"type": "image_url", "image_url": {"url": url}} for url in urls]
    return httpx.post(gw.base_url + "/chat/completions", timeout=120,
                      headers={"authorization": f"Bearer {TEST_KEY}"},
                      json={"model": model, "messages": [{"role": "user", "content": parts}]})


def memory_kb(pid: int, field: str) -> int:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of a process, in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


def test_twenty_images_of_twenty_mb_stay_within_the_memory_bound(
        gw: Gateway, images: tuple[str, ImageServer]) -> None:
    base, _ = images
    ask_with_images(gw, [f"{base}/tiny/warm.png"])  # the fetch path's imports are loaded
    pid = gw.proc.pid
    rss_before, peak_before = memory_kb(pid, "VmRSS"), memory_kb(pid, "VmHWM")
    for attempt in range(3):
        answer = ask_with_images(gw, [f"{base}/big/{attempt}-{i}.png" for i in range(20)])
        assert answer.status_code == 400, answer.text
        error = answer.json()["error"]
        assert error["code"] == "image_fetch_refused"
        assert "in all" in error["message"]
    peak_growth = (memory_kb(pid, "VmHWM") - peak_before) * 1024
    assert peak_growth <= PEAK_GROWTH_BOUND, f"peak grew by {peak_growth / MB:.0f} MB"
    time.sleep(0.5)
    retained = (memory_kb(pid, "VmRSS") - rss_before) * 1024
    assert retained <= RETAINED_BOUND, f"the worker kept {retained / MB:.0f} MB"


def test_images_within_the_bounds_reach_the_vendor(
        gw: Gateway, images: tuple[str, ImageServer], ollama: tuple[str, FakeOllama]) -> None:
    base, _ = images
    _, fake = ollama
    answer = ask_with_images(gw, [f"{base}/tiny/{i}.png" for i in range(3)])
    assert answer.status_code == 200, answer.text
    assert len(fake.last.body["messages"][0]["images"]) == 3


def test_more_images_than_the_limit_are_refused(
        gw: Gateway, images: tuple[str, ImageServer]) -> None:
    base, _ = images
    answer = ask_with_images(gw, [f"{base}/tiny/{i}.png" for i in range(21)])
    assert answer.status_code == 400
    assert "more than 20 image URLs" in answer.json()["error"]["message"]


def test_fetches_of_one_request_run_at_most_max_concurrent_at_a_time(
        gw: Gateway, images: tuple[str, ImageServer]) -> None:
    base, server = images
    server.most_at_once = 0
    answer = ask_with_images(gw, [f"{base}/slow/one-{i}.png" for i in range(12)])
    assert answer.status_code == 200, answer.text
    assert 2 <= server.most_at_once <= 4  # the default max_concurrent


def test_fetches_of_the_whole_process_are_bounded(
        gw: Gateway, images: tuple[str, ImageServer]) -> None:
    base, server = images
    server.most_at_once = 0
    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(
            lambda r: ask_with_images(gw, [f"{base}/slow/many-{r}-{i}.png" for i in range(12)],
                                      model="vision-wide"), range(3)))
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert PROCESS_FETCH_SLOTS // 2 < server.most_at_once <= PROCESS_FETCH_SLOTS
