"""Paths and parsed deployment files of the tako repository, shared by the deploy tests."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
NGINX_CONF = REPO / "deploy" / "nginx" / "nginx.conf"
PROMETHEUS_CONF = REPO / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "tako.json"
K8S_DIR = REPO / "deploy" / "k8s"
COMPOSE_GATEWAY_CONFIG = REPO / "deploy" / "config" / "tako.compose.yaml"

COMPOSE_SPEC = REPO / "tests" / "data" / "compose-spec.json"  # Apache-2.0, LICENSE beside it

# The gateway's metric names (app telemetry): the dashboard may query only these.
METRIC_NAMES = {
    "tako_requests_total": "counter",
    "tako_request_duration_seconds": "histogram",
    "tako_gateway_overhead_seconds": "histogram",
    "tako_time_to_first_token_seconds": "histogram",
    "tako_tokens_total": "counter",
    "tako_cost_usd_total": "counter",
    "tako_rejections_total": "counter",
    "tako_breaker_state": "gauge",
    "tako_in_flight_requests": "gauge",
    "tako_unaccounted_spend_usd_total": "counter",
}


@cache
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    return data


@cache
def compose_spec() -> dict[str, Any]:
    spec: dict[str, Any] = json.loads(COMPOSE_SPEC.read_text())
    return spec


def is_gateway_service(service: dict[str, Any]) -> bool:
    """A compose service running the tako image (built from this repo's Dockerfile)."""
    build = service.get("build")
    context = build.get("context") if isinstance(build, dict) else build
    return context in (".", "./") or str(service.get("image", "")).startswith("tako-gateway")


def gateway_services() -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in compose()["services"].items()
            if is_gateway_service(svc)}


def gateway_port(service: dict[str, Any]) -> int:
    return int(service["environment"]["TAKO_SERVER__PORT"])


def nginx_upstream_servers(conf: str, upstream: str = "tako_gateways") -> list[str]:
    """``host:port`` of every ``server`` line in the named upstream block."""
    match = re.search(r"upstream\s+" + re.escape(upstream) + r"\s*\{(.*?)\}", conf, re.S)
    assert match, f"no upstream {upstream} in nginx.conf"
    return re.findall(r"^\s*server\s+([^\s;]+)", match.group(1), re.M)


@cache
def k8s_objects() -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = []
    for path in sorted(K8S_DIR.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                doc["__file__"] = path.name
                objects.append(doc)
    return objects


def k8s_object(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in k8s_objects()
             if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''} in deploy/k8s, got {len(found)}"
    return found[0]
