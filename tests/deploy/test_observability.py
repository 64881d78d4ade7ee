"""Prometheus scrapes every replica; Grafana's dashboard queries metrics tako exposes."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml
from prometheus_client.metrics import MetricWrapperBase

from tako.app import metrics as app_metrics
from tests.support.repo_files import (
    DASHBOARD,
    METRIC_NAMES,
    PROMETHEUS_CONF,
    REPO,
    compose,
    gateway_port,
    gateway_services,
)

# Labels Prometheus adds to every scraped series (deploy/prometheus/prometheus.yml).
TARGET_LABELS = {"job", "instance", "replica"}
SAMPLE_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
                   "gauge": ("",)}


def _app_metrics() -> dict[str, MetricWrapperBase]:
    """tako's metrics by exposed family name (a counter ``x`` is exposed as ``x_total``)."""
    found = {}
    for value in vars(app_metrics).values():
        if isinstance(value, MetricWrapperBase):
            name = value._name + ("_total" if value._type == "counter" else "")
            found[name] = value
    return found


def _samples(family: str, kind: str) -> set[str]:
    base = family.removesuffix("_total") if kind == "counter" else family
    return {base + suffix for suffix in SAMPLE_SUFFIXES[kind]}


def _exprs() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"]
            for target in panel["targets"]]


def test_prometheus_scrapes_every_gateway_replica() -> None:
    config = yaml.safe_load(PROMETHEUS_CONF.read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "tako-gateway"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = {t: group.get("labels", {}) for group in job["static_configs"]
               for t in group["targets"]}
    expected = {f"{name}:{gateway_port(svc)}": name for name, svc in gateway_services().items()}
    assert set(targets) == set(expected)
    assert {labels.get("replica") for labels in targets.values()} == set(expected.values())
    assert "prometheus" in compose()["services"]


def test_the_listed_metric_names_are_the_ones_tako_exposes() -> None:
    exposed = _app_metrics()
    for family, kind in METRIC_NAMES.items():
        assert family in exposed, f"tako does not expose {family}"
        assert exposed[family]._type == kind, family


def test_dashboard_queries_only_known_metric_names() -> None:
    allowed = {s for family, kind in METRIC_NAMES.items() for s in _samples(family, kind)}
    exprs = _exprs()
    assert len(exprs) >= 10
    for title, expr in exprs:
        names = set(re.findall(r"\btako_[a-z0-9_]+", expr))
        assert names, f"panel {title!r} queries no tako metric: {expr}"
        assert names <= allowed, f"panel {title!r} uses unknown metrics {names - allowed}"


def _family_of(sample: str) -> str:
    for family, kind in METRIC_NAMES.items():
        if sample in _samples(family, kind):
            return family
    raise AssertionError(sample)


def test_dashboard_queries_only_labels_the_metrics_carry() -> None:
    exposed = _app_metrics()
    for title, expr in _exprs():
        metrics = [exposed[_family_of(s)] for s in re.findall(r"\btako_[a-z0-9_]+", expr)]
        carried = set(TARGET_LABELS)
        for metric in metrics:
            carried |= set(metric._labelnames)
            if metric._type == "histogram":
                carried.add("le")
        used = set()
        for group in re.findall(r"\bby\s*\(([^)]*)\)", expr):
            used |= {label.strip() for label in group.split(",") if label.strip()}
        for matchers in re.findall(r"\btako_[a-z0-9_]+\{([^}]*)\}", expr):
            used |= set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers))
        assert used <= carried, f"panel {title!r} uses labels {used - carried}: {expr}"


def test_every_gateway_metric_has_a_panel() -> None:
    used = {_family_of(s) for _, expr in _exprs() for s in re.findall(r"\btako_[a-z0-9_]+", expr)}
    assert used == set(METRIC_NAMES)


def test_dashboard_is_provisioned_from_the_mounted_directory() -> None:
    grafana = compose()["services"]["grafana"]
    mounts = {v["source"]: v["target"] for v in grafana["volumes"]}
    providers: dict[str, Any] = yaml.safe_load(
        (REPO / "deploy/grafana/provisioning/dashboards/tako.yaml").read_text())
    (provider,) = providers["providers"]
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    datasources = yaml.safe_load(
        (REPO / "deploy/grafana/provisioning/datasources/prometheus.yaml").read_text())
    uids = {d["uid"] for d in datasources["datasources"]}
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] in uids, panel["title"]
