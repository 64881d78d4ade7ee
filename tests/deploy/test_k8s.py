"""deploy/k8s: manifests parse, reference each other, and match the app's config schema."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tako.app.config import Settings, load_settings
from tests.support.net import serve_asgi
from tests.support.repo_files import DOCKERFILE, K8S_DIR, k8s_object, k8s_objects
from tests.support.settings_env import settings_env_names

# Process-level variables read by libraries, not by tako's Settings.
RUNTIME_ENV = {"PROMETHEUS_MULTIPROC_DIR", "POD_NAME", "OTEL_RESOURCE_ATTRIBUTES"}


def _deployment() -> dict[str, Any]:
    return k8s_object("Deployment", "tako-gateway")


def _container() -> dict[str, Any]:
    (container,) = _deployment()["spec"]["template"]["spec"]["containers"]
    return container


def _env() -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in _container()["env"]}


def _configmap_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The ConfigMap's tako.yaml loaded as a pod would: with the Deployment's env set
    (Secret values from the template)."""
    secret = k8s_object("Secret", "tako-secrets")["stringData"]
    for name, entry in _env().items():
        if "value" in entry:
            monkeypatch.setenv(name, entry["value"])
        elif "secretKeyRef" in entry.get("valueFrom", {}):
            monkeypatch.setenv(name, secret[entry["valueFrom"]["secretKeyRef"]["key"]])
    config = tmp_path / "tako.yaml"
    config.write_text(k8s_object("ConfigMap", "tako-config")["data"]["tako.yaml"])
    return load_settings(config)


def test_every_manifest_parses_into_named_objects() -> None:
    objects = k8s_objects()
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget",
            "ConfigMap", "Secret"} <= kinds
    for obj in objects:
        assert obj.get("apiVersion") and obj.get("kind"), obj["__file__"]
        assert obj.get("metadata", {}).get("name"), obj["__file__"]
        if obj["kind"] not in ("Namespace", "Kustomization"):
            assert obj["metadata"].get("namespace") == "tako", obj["__file__"]


def test_kustomization_lists_every_manifest_but_the_secret_template() -> None:
    kustomization = k8s_object("Kustomization")
    files = {p.name for p in K8S_DIR.glob("*.yaml")}
    assert set(kustomization["resources"]) == files - {"kustomization.yaml",
                                                       "secret.example.yaml"}


def test_env_names_are_settings_fields_or_configured_secrets(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _configmap_settings(tmp_path, monkeypatch)
    known_tako = settings_env_names()
    secret_names = {k.key_env for k in settings.auth.keys if k.key_env}
    secret_names |= {d.api_key_env for d in settings.deployments if d.api_key_env}
    secret_names.add(settings.auth.admin_key_env or "")
    for name in _env():
        if name in secret_names or name in RUNTIME_ENV:
            continue
        assert name in known_tako, f"{name} is not a tako setting"
    assert {"TAKO_RUNTIME__REDIS_URL", "TAKO_SERVER__PORT", "TAKO_CONFIG"} <= set(_env())


def test_settings_env_names_follow_the_model() -> None:
    names = settings_env_names()
    for expected in ("TAKO_SERVER__PORT", "TAKO_SERVER__GRACEFUL_SHUTDOWN_S",
                     "TAKO_RUNTIME__REDIS_URL", "TAKO_RUNTIME__FAILURE_MODE",
                     "TAKO_POLICY__MODE", "TAKO_POLICY__OPA_URL", "TAKO_TELEMETRY__OTLP_ENDPOINT"):
        assert expected in names
    assert "TAKO_SERVER__NO_SUCH_FIELD" not in names


def test_the_pod_environment_yields_a_redis_backed_config(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _configmap_settings(tmp_path, monkeypatch)
    assert settings.runtime.backend == "redis"
    assert settings.runtime.redis_url == k8s_object("Secret")["stringData"][
        "TAKO_RUNTIME__REDIS_URL"]
    (port,) = _container()["ports"]
    assert settings.server.port == port["containerPort"] == int(
        _env()["TAKO_SERVER__PORT"]["value"])
    assert settings.server.host == "0.0.0.0"


def test_every_secret_reference_names_a_key_of_the_template() -> None:
    secret = k8s_object("Secret", "tako-secrets")
    refs = [e["valueFrom"]["secretKeyRef"] for e in _env().values()
            if "secretKeyRef" in e.get("valueFrom", {})]
    assert refs
    for ref in refs:
        assert ref["name"] == secret["metadata"]["name"]
        assert ref["key"] in secret["stringData"]
    required = {r["key"] for r in refs if not r.get("optional")}
    assert {"TAKO_RUNTIME__REDIS_URL", "TAKO_ADMIN_KEY"} <= required


def test_the_secret_template_holds_no_real_secret() -> None:
    for key, value in k8s_object("Secret", "tako-secrets")["stringData"].items():
        assert "REPLACE_ME" in value, f"{key} looks like a real value"


def test_probes_hit_the_app_health_routes_on_the_serving_port() -> None:
    container = _container()
    port_names = {p["name"]: p["containerPort"] for p in container["ports"]}
    ready = container["readinessProbe"]["httpGet"]
    live = container["livenessProbe"]["httpGet"]
    assert (ready["path"], live["path"]) == ("/readyz", "/healthz")
    assert ready["port"] in port_names and live["port"] in port_names
    from tako.app.factory import create_app

    with serve_asgi(create_app(load_settings())) as base:
        for probe in (ready, live):
            response = httpx.get(base + probe["path"], timeout=5)
            assert response.status_code == 200, (probe["path"], response.text)
        assert httpx.get(base + "/no-such-probe", timeout=5).status_code == 404


def test_shutdown_grace_covers_prestop_and_drain(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _configmap_settings(tmp_path, monkeypatch)
    pod = _deployment()["spec"]["template"]["spec"]
    command = _container()["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = float(command[1])
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + settings.server.graceful_shutdown_s


def test_mounts_match_the_paths_the_env_names() -> None:
    container = _container()
    env = _env()
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    config_mount = mounts[env["TAKO_CONFIG"]["value"]]
    assert config_mount["subPath"] == "tako.yaml" and config_mount["readOnly"]
    assert env["PROMETHEUS_MULTIPROC_DIR"]["value"] in mounts
    volumes = {v["name"]: v for v in _deployment()["spec"]["template"]["spec"]["volumes"]}
    assert volumes[config_mount["name"]]["configMap"]["name"] == "tako-config"
    assert "emptyDir" in volumes[mounts[env["PROMETHEUS_MULTIPROC_DIR"]["value"]]["name"]]


def test_pod_runs_as_the_image_user_with_the_image_command() -> None:
    dockerfile = DOCKERFILE.read_text()
    uid = re.search(r"^USER\s+(\d+)", dockerfile, re.M)
    cmd = re.search(r"^CMD\s+(\[.*\])\s*$", dockerfile, re.M)
    assert uid and cmd
    pod = _deployment()["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == int(uid.group(1))
    assert _container()["args"] == yaml.safe_load(cmd.group(1))
    assert _container()["securityContext"]["readOnlyRootFilesystem"] is True


def test_service_hpa_pdb_and_ingress_point_at_the_deployment() -> None:
    deployment = _deployment()
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()
    service = k8s_object("Service", "tako-gateway")
    assert service["spec"]["selector"].items() <= labels.items()
    port_names = {p["name"] for p in _container()["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    hpa = k8s_object("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= 3
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    pdb = k8s_object("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["maxUnavailable"] < hpa["spec"]["minReplicas"]
    backend = k8s_object("Ingress")["spec"]["rules"][0]["http"]["paths"][0]["backend"]
    assert backend["service"]["name"] == service["metadata"]["name"]
    assert backend["service"]["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
