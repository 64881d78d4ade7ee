"""nginx's own errors, from a real nginx running the project's nginx.conf with no replica
up: every one is OpenAI's error body, never nginx's HTML page."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.net import free_port, wait_for_port
from tests.support.nginx_conf import localize, nginx_command
from tests.support.openai_schema import validate_error


@pytest.fixture(scope="module")
def nginx_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    prefix: Path = tmp_path_factory.mktemp("nginx-errors")
    port = free_port()
    conf = localize(prefix, port, [free_port() for _ in range(3)])  # nothing listens there
    proc = subprocess.Popen(nginx_command(conf, "-g", "daemon off;"))
    try:
        wait_for_port(port)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def exchange(port: int, request: bytes) -> tuple[int, bytes, bytes]:
    """Status, headers and body of nginx's answer to raw ``request``."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        try:
            sock.sendall(request)
        except OSError:
            pass  # nginx may answer and close before the whole request was sent
        data = b""
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), head.lower(), body


def assert_openai_error(head: bytes, body: bytes) -> dict[str, object]:
    assert b"content-type: application/json" in head
    parsed = json.loads(body)
    validate_error(parsed)
    return parsed["error"]


def test_no_replica_is_a_json_502(nginx_port: int) -> None:
    status, head, body = exchange(nginx_port, b"POST /v1/chat/completions HTTP/1.1\r\n"
                                              b"host: lb\r\ncontent-type: application/json\r\n"
                                              b"content-length: 2\r\nconnection: close"
                                              b"\r\n\r\n{}")
    assert status == 502
    assert assert_openai_error(head, body)["code"] == "upstream_unavailable"


def test_malformed_request_is_a_json_400(nginx_port: int) -> None:
    status, head, body = exchange(nginx_port, b"GARBAGE\r\n\r\n")
    assert status == 400
    assert assert_openai_error(head, body)["code"] == "invalid_http"


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_oversized_body_is_a_json_413(nginx_port: int, framing: str) -> None:
    size = 9 * 1024 * 1024
    head_lines = (f"content-length: {size}" if framing == "content-length"
                  else "transfer-encoding: chunked")
    body = b"a" * size if framing == "content-length" else b"%x\r\n%s\r\n0\r\n\r\n" % (
        size, b"a" * size)
    status, head, answer = exchange(nginx_port, b"POST /v1/chat/completions HTTP/1.1\r\n"
                                                b"host: lb\r\n" + head_lines.encode()
                                    + b"\r\n\r\n" + body)
    assert status == 413
    assert assert_openai_error(head, answer)["code"] == "payload_too_large"


def test_oversized_header_line_is_a_json_400(nginx_port: int) -> None:
    status, head, body = exchange(nginx_port, b"GET /v1/models HTTP/1.1\r\nhost: lb\r\n"
                                              b"x-big: " + b"a" * 70_000 + b"\r\n\r\n")
    assert status == 400
    assert assert_openai_error(head, body)["code"] == "headers_too_large"


def test_overlong_uri_is_a_json_414(nginx_port: int) -> None:
    status, head, body = exchange(nginx_port, b"GET /" + b"u" * 70_000 + b" HTTP/1.1\r\n"
                                              b"host: lb\r\n\r\n")
    assert status == 414
    assert assert_openai_error(head, body)["code"] == "uri_too_long"
