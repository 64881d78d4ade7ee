"""docker-compose.cluster.yml, the Redis Cluster overlay: valid Compose on its own and merged
over docker-compose.yml, overriding only services the base file has, and pointing every
gateway at a cluster its own nodes form."""

from __future__ import annotations

import copy
from typing import Any

import yaml

from tako.runtime.redis_cluster import is_cluster_url
from tests.deploy.test_compose import _validator
from tests.support.repo_files import REPO, compose, gateway_services

OVERLAY = REPO / "docker-compose.cluster.yml"


def _overlay() -> dict[str, Any]:
    data = yaml.safe_load(OVERLAY.read_text())
    assert isinstance(data, dict)
    return data


def _merged(base: Any, over: Any) -> Any:
    """Compose's merge for what the overlay uses: maps merge key by key, the rest replaces."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = copy.deepcopy(base)
        for key, value in over.items():
            out[key] = _merged(base.get(key), value) if key in base else value
        return out
    return copy.deepcopy(over)


def _errors(document: dict[str, Any]) -> list[str]:
    found = sorted(_validator().iter_errors(document), key=lambda e: list(e.path))
    return [f"{list(e.path)}: {e.message}" for e in found]


def test_the_overlay_and_the_merged_file_match_the_compose_specification() -> None:
    assert not _errors(_overlay())
    assert not _errors(_merged(compose(), _overlay()))


def test_the_overlay_overrides_only_services_the_base_file_has() -> None:
    overlay = _overlay()["services"]
    nodes = {f"redis-node-{i}" for i in range(1, 7)}
    new = set(overlay) - set(compose()["services"])
    assert new == nodes | {"redis-cluster-init"}, "any other service must exist in the base"
    assert set(overlay) - new == set(gateway_services()), "every gateway, and only those"


def test_six_cluster_nodes_and_a_one_shot_create_with_one_replica_each() -> None:
    services = _overlay()["services"]
    nodes = [f"redis-node-{i}" for i in range(1, 7)]
    for name in nodes:
        command = " ".join(services[name]["command"])
        assert "--cluster-enabled yes" in command and "--appendonly yes" in command
        assert "--cluster-require-full-coverage no" in command
        assert services[name]["environment"]["HOSTNAME_ANNOUNCE"] == name
        assert "healthcheck" in services[name]
    init = services["redis-cluster-init"]
    create = " ".join(init["command"])
    assert "redis-cli --cluster create" in create and "--cluster-replicas 1" in create
    assert all(f"{name}:6379" in create for name in nodes)
    assert init["restart"] == "no"
    assert set(init["depends_on"]) == set(nodes)
    assert all(d["condition"] == "service_healthy" for d in init["depends_on"].values())
    assert set(_overlay()["volumes"]) == set(nodes)


def test_every_gateway_waits_for_the_cluster_and_names_its_nodes() -> None:
    merged = _merged(compose(), _overlay())
    services = merged["services"]
    for name in gateway_services():
        gateway = services[name]
        url = gateway["environment"]["TAKO_RUNTIME__REDIS_URL"]
        assert is_cluster_url(url)
        seeds = [part.rsplit(":", 1)[0] for part in url.split("://", 1)[1].split(",")]
        assert seeds and all(seed in services for seed in seeds)
        assert gateway["depends_on"]["redis-cluster-init"]["condition"] == \
            "service_completed_successfully"
        # what the base file gives every gateway is still there
        assert gateway["environment"]["TAKO_CONFIG"] == "/etc/tako/tako.yaml"
        assert {"opa", "otel-collector"} <= set(gateway["depends_on"])
