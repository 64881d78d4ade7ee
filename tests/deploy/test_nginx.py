"""deploy/nginx/nginx.conf: a real ``nginx -t`` and the settings streaming depends on."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import uvicorn

from tako.app.config import load_settings
from tests.support.nginx_conf import localize, nginx_command
from tests.support.openai_schema import validate_error
from tests.support.repo_files import COMPOSE_GATEWAY_CONFIG, NGINX_CONF


def _directive(name: str, conf: str) -> list[str]:
    return [v.strip() for v in re.findall(rf"^\s*{name}\s+([^;]+);", conf, re.M)]


def _size_bytes(value: str) -> int:
    match = re.fullmatch(r"(\d+)([kKmMgG]?)", value)
    assert match, value
    scale = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[match.group(2).lower()]
    return int(match.group(1)) * scale


def _seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(ms|s|m|h)?", value)
    assert match, value
    unit = match.group(2) or "s"
    return int(match.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


def test_nginx_accepts_the_project_config(tmp_path: Path) -> None:
    conf = localize(tmp_path, listen_port=18080, upstream_ports=[18001, 18002, 18003])
    result = subprocess.run(nginx_command(conf, "-t"), capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_nginx_rejects_a_broken_copy(tmp_path: Path) -> None:
    conf = localize(tmp_path, listen_port=18080, upstream_ports=[18001, 18002, 18003])
    conf.write_text(conf.read_text().replace("proxy_buffering off;", "proxy_buffering sideways;"))
    result = subprocess.run(nginx_command(conf, "-t"), capture_output=True, text=True,
                            timeout=30)
    assert result.returncode != 0 and "proxy_buffering" in result.stderr


def test_streaming_passes_through_unbuffered_over_kept_alive_http11() -> None:
    conf = NGINX_CONF.read_text()
    assert _directive("proxy_buffering", conf) == ["off"]
    assert _directive("proxy_http_version", conf) == ["1.1"]
    assert _directive("proxy_set_header Connection", conf) == ['""']
    assert _directive("gzip", conf) == ["off"]
    assert int(_directive("keepalive", conf)[0]) >= 16


def test_timeouts_and_body_size_leave_the_limits_to_tako() -> None:
    conf = NGINX_CONF.read_text()
    server = load_settings(COMPOSE_GATEWAY_CONFIG).server
    assert _size_bytes(_directive("client_max_body_size", conf)[0]) > server.max_body_bytes
    assert _seconds(_directive("proxy_read_timeout", conf)[0]) >= server.request_timeout_s
    assert _seconds(_directive("proxy_connect_timeout", conf)[0]) <= 5


def test_only_unsent_requests_move_to_another_replica() -> None:
    conf = NGINX_CONF.read_text()
    (next_upstream,) = _directive("proxy_next_upstream", conf)
    conditions = next_upstream.split()
    assert "error" in conditions
    # Resending a POST that reached a replica could run (and charge) a completion twice.
    assert "non_idempotent" not in conditions
    upstream = re.search(r"upstream\s+tako_gateways\s*\{(.*?)\}", conf, re.S)
    assert upstream
    servers = re.findall(r"^\s*server\s+\S+\s+([^;]*);", upstream.group(1), re.M)
    assert servers and all("max_fails=" in s and "fail_timeout=" in s for s in servers)


def test_load_balancer_errors_are_openai_shaped() -> None:
    conf = NGINX_CONF.read_text()
    pages = dict(v.split() for v in _directive("error_page", conf))
    for status, location in pages.items():
        pattern = re.escape(f"location {location}") + r"\s*\{[^']*?return\s+(\d+)\s+'([^']*)';"
        returned = re.search(pattern, conf, re.S)
        assert returned, location
        assert returned.group(1) == status
        validate_error(json.loads(returned.group(2)))
    assert {"502", "504"} <= set(pages)


def test_idle_upstream_connections_close_before_uvicorn_closes_them() -> None:
    upstream = re.search(r"upstream\s+tako_gateways\s*\{(.*?)\}", NGINX_CONF.read_text(), re.S)
    assert upstream
    (timeout,) = _directive("keepalive_timeout", upstream.group(1))
    # tako serve leaves uvicorn's keep-alive at its default.
    assert _seconds(timeout) < uvicorn.Config(app=None).timeout_keep_alive
