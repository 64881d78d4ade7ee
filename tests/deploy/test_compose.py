"""docker-compose.yml: valid Compose, complete, and consistent with the configs it mounts."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema

from tako.app.config import Settings, load_settings
from tako.app.gateway import Gateway
from tako.orchestrators import registry as orchestrator_registry
from tako.policies.embedded import EmbeddedRegoEngine
from tako.policies.settings import PolicySettings
from tako.providers import registry as provider_registry
from tests.support.repo_files import (
    COMPOSE_GATEWAY_CONFIG,
    NGINX_CONF,
    REPO,
    compose,
    compose_spec,
    gateway_port,
    gateway_services,
    nginx_upstream_servers,
)


def _policy(settings: Settings) -> PolicySettings:
    """The policy section as the policy engine reads it (extra keys are refused)."""
    return PolicySettings.model_validate(settings.policy if isinstance(settings.policy, dict)
                                         else settings.policy.model_dump())


def _validator() -> jsonschema.protocols.Validator:
    # The spec names draft-07 in a spelling jsonschema does not map, so say it here.
    spec = compose_spec()
    assert "draft-07" in spec["$schema"]
    return jsonschema.Draft7Validator(spec)


def test_compose_file_matches_the_compose_specification() -> None:
    errors = sorted(_validator().iter_errors(compose()), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_the_compose_schema_rejects_a_broken_copy() -> None:
    broken = copy.deepcopy(compose())
    broken["services"]["redis"]["healthcheck"]["interval"] = ["not", "a", "duration"]
    broken["services"]["nginx"]["depends_on"]["gateway-1"]["condition"] = "whenever"
    assert len(list(_validator().iter_errors(broken))) >= 2


def _bind_sources(service: dict[str, Any]) -> list[str]:
    sources = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            if volume.get("type") == "bind":
                sources.append(volume["source"])
        elif volume.startswith((".", "/")):
            sources.append(volume.split(":", 1)[0])
    return sources


def test_every_mounted_file_exists_in_the_repository() -> None:
    mounted = [(name, src) for name, svc in compose()["services"].items()
               for src in _bind_sources(svc)]
    assert len(mounted) >= 6
    missing = [(name, src) for name, src in mounted if not (REPO / src).exists()]
    assert not missing, f"compose mounts paths that are not in the repo: {missing}"
    for name, src in mounted:
        assert not Path(src).is_absolute(), f"{name} mounts a host path: {src}"


def test_opa_loads_the_repository_policies_directory() -> None:
    opa = compose()["services"]["opa"]
    targets = {v["source"]: v["target"] for v in opa["volumes"]}
    assert targets.get("./policies") == "/policies"
    command = opa["command"]
    assert command[:2] == ["run", "--server"] and "/policies" in command
    assert command[command.index("--addr") + 1] == ":8181"


def test_opa_serves_the_same_policy_data_as_the_gateway_config() -> None:
    opa = compose()["services"]["opa"]
    data_mount = next(v for v in opa["volumes"] if v["target"] in opa["command"]
                      and v["target"] != "/policies")
    # OPA names a data file by its directory below the loaded root.
    data_file = REPO / data_mount["source"] / "tako" / "config" / "data.json"
    settings = load_settings(COMPOSE_GATEWAY_CONFIG)
    policy = _policy(settings)
    assert json.loads(data_file.read_text()) == policy.data
    assert policy.data, "the example policy data is empty"


def test_at_least_three_gateway_replicas_sit_behind_nginx() -> None:
    gateways = gateway_services()
    assert len(gateways) >= 3
    upstream = nginx_upstream_servers(NGINX_CONF.read_text())
    assert sorted(upstream) == sorted(f"{n}:{gateway_port(s)}" for n, s in gateways.items())
    nginx_deps = compose()["services"]["nginx"]["depends_on"]
    for name in gateways:
        assert nginx_deps[name]["condition"] == "service_healthy"


def test_gateways_share_one_definition_and_use_the_mounted_config() -> None:
    gateways = list(gateway_services().values())
    first = gateways[0]
    assert all(g == first for g in gateways), "gateway replicas differ"
    env = first["environment"]
    mounts = {v["target"]: v["source"] for v in first["volumes"]}
    assert mounts[env["TAKO_CONFIG"]] == "./deploy/config/tako.compose.yaml"
    assert env["TAKO_SERVER__HOST"] == "0.0.0.0"
    assert first["stop_signal"] == "SIGTERM"


def _seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)(ms|s|m)", duration)
    assert match, duration
    value, unit = int(match.group(1)), match.group(2)
    return value / 1000 if unit == "ms" else value * (60 if unit == "m" else 1)


def test_stop_grace_period_covers_the_gateway_drain_time() -> None:
    settings = load_settings(COMPOSE_GATEWAY_CONFIG)
    for name, svc in gateway_services().items():
        assert _seconds(svc["stop_grace_period"]) > settings.server.graceful_shutdown_s, name


def test_secrets_come_from_an_ignored_env_file_never_from_compose() -> None:
    assert ".env" in (REPO / ".gitignore").read_text().split()
    assert (REPO / ".env.example").is_file()
    secret_like = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|CREDENTIALS")
    for name, svc in compose()["services"].items():
        for var, value in (svc.get("environment") or {}).items():
            if secret_like.search(var):
                assert str(value).startswith("${"), f"{name}: {var} is set inline"
    for svc in gateway_services().values():
        assert svc["env_file"] == ".env"


def test_env_example_names_every_key_the_compose_config_reads() -> None:
    settings = load_settings(COMPOSE_GATEWAY_CONFIG)
    wanted = {k.key_env for k in settings.auth.keys if k.key_env}
    wanted |= {d.api_key_env for d in settings.deployments if d.api_key_env}
    if settings.auth.admin_key_env:
        wanted.add(settings.auth.admin_key_env)
    example = (REPO / ".env.example").read_text()
    listed = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", example, re.M))
    assert wanted <= listed, f".env.example lacks {sorted(wanted - listed)}"


def test_healthy_conditions_only_name_services_with_a_healthcheck() -> None:
    services = compose()["services"]
    conditions = 0
    for name, svc in services.items():
        for dep, spec in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            conditions += 1
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], (name, dep)
    assert conditions >= 8


def test_redis_persistence_is_stated() -> None:
    command = compose()["services"]["redis"]["command"]
    options = dict(zip(command[1::2], command[2::2], strict=False))
    assert options["--appendonly"] == "yes" and options["--appendfsync"] == "everysec"
    assert options["--maxmemory-policy"] == "noeviction"
    assert any(v.startswith("redis-data:/data") for v in compose()["services"]["redis"]["volumes"])


def test_compose_gateway_config_uses_the_compose_services() -> None:
    settings = load_settings(COMPOSE_GATEWAY_CONFIG)
    services = compose()["services"]
    assert settings.runtime.backend == "redis"
    assert settings.runtime.redis_url is not None
    assert re.match(r"redis://redis:6379/", settings.runtime.redis_url)
    policy = _policy(settings)
    assert policy.mode == "opa"
    assert policy.opa_url == "http://opa:8181"
    assert settings.telemetry.otlp_endpoint == "http://otel-collector:4318"
    for host in ("redis", "opa", "otel-collector"):
        assert host in services
    ports = {gateway_port(s) for s in gateway_services().values()}
    assert ports == {settings.server.port}


def test_compose_gateway_config_builds_a_gateway() -> None:
    settings = load_settings(COMPOSE_GATEWAY_CONFIG)
    assert {d.provider for d in settings.deployments} <= set(provider_registry.kinds())
    assert {p.kind for p in settings.profiles} <= set(orchestrator_registry.kinds())
    gateway = Gateway.from_settings(settings)
    assert {"echo", "chat", "assistant"} <= set(gateway.targets)


async def test_the_example_policy_data_drives_the_shipped_policies() -> None:
    """The Rego OPA loads in compose, run by the embedded engine with the same data."""
    policy = _policy(load_settings(COMPOSE_GATEWAY_CONFIG))
    engine = EmbeddedRegoEngine(policy.data, policy_dir=REPO / "policies")

    def request(tenant: str, model: str, text: str) -> dict[str, Any]:
        return {"principal": {"tenant_id": tenant, "user_id": "u", "key_id": "k",
                              "scopes": []},
                "model": model, "messages": [{"role": "user", "content": text}],
                "tools": [], "metadata": {}}

    try:
        denied = await engine.evaluate("pre_chat", request("team-a", "gpt-4o", "hi"))
        redacted = await engine.evaluate("pre_chat", request("demo", "gpt-4o",
                                                             "about PROJECT-NIGHTJAR"))
        allowed = await engine.evaluate("pre_chat", request("demo", "echo", "hi"))
    finally:
        await engine.aclose()
    assert denied.action == "deny" and "team-a" in (denied.reason or "")
    assert redacted.action == "redact_messages"
    assert "PROJECT-NIGHTJAR" not in json.dumps(redacted.messages)
    assert allowed.action == "allow"


def test_opa_loads_only_rego_from_the_policies_directory() -> None:
    # OPA treats .json/.yaml files under a loaded directory as data documents.
    loaded = [p for p in (REPO / "policies").rglob("*")
              if p.suffix in (".json", ".yaml", ".yml") and "__pycache__" not in p.parts]
    assert not loaded, f"OPA would load these as data: {loaded}"
    assert list((REPO / "policies").glob("*.rego"))
