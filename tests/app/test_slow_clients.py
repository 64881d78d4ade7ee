"""Slow, oversized and departing clients against a real ``tako serve`` over raw sockets:
trickled headers and bodies are dropped with a 408, an oversized header block is a 431,
a client leaving mid-body is a quiet 499, and each error the gateway writes itself is
OpenAI's error body."""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tako.app.config import ServerSettings
from tests.support.gateway import TEST_KEY, Gateway, basic_config, gateway

HEADER_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 1.0
MAX_HEADER_BYTES = 8 * 1024
MAX_BODY_BYTES = 4096
REQUEST_LINE = b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\n"
CHAT = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def gw() -> Iterator[Gateway]:
    server = {"header_timeout_s": HEADER_TIMEOUT_S, "body_timeout_s": BODY_TIMEOUT_S,
              "max_header_bytes": MAX_HEADER_BYTES, "max_body_bytes": MAX_BODY_BYTES,
              "max_messages": 3}
    with gateway(basic_config(server=server)) as running:
        yield running


def connect(gw: Gateway) -> socket.socket:
    return socket.create_connection(("127.0.0.1", gw.port), timeout=10)


def read_all(sock: socket.socket) -> bytes:
    """Everything the server writes until it closes the connection."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def status_and_error(raw: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)["error"]


def chat_headers(length: int) -> bytes:
    return (REQUEST_LINE + f"authorization: Bearer {TEST_KEY}\r\n"
            f"content-type: application/json\r\ncontent-length: {length}\r\n\r\n".encode())


def assert_serves(gw: Gateway) -> None:
    answer = httpx.post(gw.base_url + "/chat/completions", json=CHAT,
                        headers={"authorization": f"Bearer {TEST_KEY}"}, timeout=10)
    assert answer.status_code == 200, answer.text


def test_limits_are_on_by_default() -> None:
    server = ServerSettings()
    assert (server.header_timeout_s, server.body_timeout_s) == (10.0, 30.0)
    assert server.max_header_bytes == 64 * 1024


def test_slowloris_connections_are_dropped_and_their_slots_freed(gw: Gateway) -> None:
    socks = [connect(gw) for _ in range(50)]
    for sock in socks:
        sock.sendall(REQUEST_LINE)
    started = time.monotonic()
    for _ in range(3):  # keep trickling: one header line every 0.3 s
        time.sleep(0.3)
        for sock in socks:
            try:
                sock.sendall(b"x-trickle: 1\r\n")
            except OSError:
                pass
    answers = [read_all(sock) for sock in socks]
    elapsed = time.monotonic() - started
    assert elapsed < HEADER_TIMEOUT_S + 2
    for raw in answers:
        status, error = status_and_error(raw)
        assert (status, error["code"]) == (408, "header_timeout")
    for sock in socks:
        sock.close()
    assert_serves(gw)


def test_idle_connection_that_never_sends_is_dropped(gw: Gateway) -> None:
    with connect(gw) as sock:
        started = time.monotonic()
        status, _ = status_and_error(read_all(sock))
        assert status == 408
        assert time.monotonic() - started < HEADER_TIMEOUT_S + 2


def test_slow_body_is_dropped(gw: Gateway) -> None:
    body = json.dumps(CHAT).encode()
    with connect(gw) as sock:
        sock.sendall(chat_headers(len(body)))
        started = time.monotonic()
        for byte in body[:5]:
            time.sleep(0.3)
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
        status, error = status_and_error(read_all(sock))
    assert (status, error["code"]) == (408, "body_timeout")
    assert time.monotonic() - started < BODY_TIMEOUT_S + 2.5
    assert "Traceback" not in gw.log()
    assert_serves(gw)


def test_oversized_header_block_is_431(gw: Gateway) -> None:
    with connect(gw) as sock:
        sock.sendall(REQUEST_LINE + b"x-big: " + b"a" * (MAX_HEADER_BYTES * 2) + b"\r\n\r\n")
        status, error = status_and_error(read_all(sock))
    assert (status, error["code"], error["type"]) == (431, "headers_too_large",
                                                      "invalid_request_error")


def test_header_block_sent_in_pieces_is_cut_at_the_limit(gw: Gateway) -> None:
    sent = 0
    with connect(gw) as sock:
        sock.sendall(REQUEST_LINE)
        answered = False
        while not answered and sent < 50 * MAX_HEADER_BYTES:  # an unending header value
            sock.sendall(b"b" * 1024)
            sent += 1024
            answered = bool(select.select([sock], [], [], 0.01)[0])
        raw = read_all(sock)
    assert answered and sent < 4 * MAX_HEADER_BYTES  # answered near the limit
    assert status_and_error(raw)[0] == 431


def test_many_small_headers_over_the_limit_are_431(gw: Gateway) -> None:
    headers = b"".join(b"x-h%d: %s\r\n" % (i, b"v" * 100) for i in range(200))
    with connect(gw) as sock:
        sock.sendall(REQUEST_LINE + headers + b"\r\n")
        assert status_and_error(read_all(sock))[0] == 431


def test_malformed_request_is_400_with_openai_body(gw: Gateway) -> None:
    with connect(gw) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        status, error = status_and_error(read_all(sock))
    assert (status, error["type"]) == (400, "invalid_request_error")


def test_chunked_body_over_the_limit_is_413_with_openai_body(gw: Gateway) -> None:
    chunk = b"a" * 1024
    with connect(gw) as sock:
        sock.sendall(REQUEST_LINE + f"authorization: Bearer {TEST_KEY}\r\n"
                     "content-type: application/json\r\ntransfer-encoding: chunked\r\n"
                     "connection: close\r\n\r\n".encode())
        try:
            for _ in range(MAX_BODY_BYTES // 1024 + 2):
                sock.sendall(b"400\r\n" + chunk + b"\r\n")
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass
        status, error = status_and_error(read_all(sock))
    assert (status, error["code"]) == (413, "payload_too_large")


def test_client_leaving_mid_body_is_a_quiet_499(gw: Gateway) -> None:
    with connect(gw) as sock:
        sock.sendall(chat_headers(1000) + b'{"model": "echo", ')
        time.sleep(0.2)
    time.sleep(0.5)
    assert_serves(gw)
    log = gw.log()
    assert "Traceback" not in log and "unhandled" not in log
    metrics = httpx.get(gw.url + "/metrics", timeout=5).text
    statuses = [line for line in metrics.splitlines()
                if line.startswith("tako_requests_total") and 'status="' in line]
    assert any('status="499"' in line for line in statuses), statuses
    assert not any('status="500"' in line for line in statuses), statuses


def test_message_count_over_the_limit_is_400(gw: Gateway) -> None:
    messages = [{"role": "user", "content": str(i)} for i in range(4)]
    answer = httpx.post(gw.base_url + "/chat/completions",
                        json={"model": "echo", "messages": messages},
                        headers={"authorization": f"Bearer {TEST_KEY}"}, timeout=10)
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "messages"
