"""Gateway configuration: one YAML file plus ``TAKO_*`` environment variables.

Environment variables override the file; nested fields use ``__``
(``TAKO_SERVER__PORT=9000``, ``TAKO_RUNTIME__REDIS_URL=redis://...``). ``TAKO_CONFIG``
names the YAML file. With no file, the embedded default runs: in-memory state, embedded
policy, the ``echo`` demo deployment, plus every vendor whose key is in the environment.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from tako.core.errors import ConfigError
from tako.core.specs import DeploymentSpec, ProfileSpec
from tako.policies.settings import PolicySettings
from tako.providers.registry import embedded_deployments
from tako.runtime.settings import RuntimeSettings
from tako.tools.mcp_spec import McpServerSpec

DEMO_KEY = "sk-tako-demo"
INTERNAL_FIELDS = ("config", "embedded_default")  # set by tako, not written in a config


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class ServerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    max_body_bytes: int = 4 * 1024 * 1024
    # bounds a non-streamed answer and the time to a stream's first chunk (504 after it)
    request_timeout_s: float = Field(default=600.0, gt=0)
    graceful_shutdown_s: float = 30.0
    access_log: bool = True
    # slow and oversized clients (0 turns a timeout off): the request line and headers must
    # arrive within header_timeout_s, the body within body_timeout_s of the headers
    header_timeout_s: float = Field(default=10.0, ge=0)
    body_timeout_s: float = Field(default=30.0, ge=0)
    max_header_bytes: int = Field(default=64 * 1024, gt=0)
    max_messages: int = Field(default=2048, gt=0)


class KeySpec(BaseModel):
    """An API key. Give ``key_sha256`` (hex SHA-256 of the key) in files you commit;
    ``key`` or ``key_env`` (plain text, hashed at load) suit local setups."""

    model_config = ConfigDict(extra="forbid")

    key_sha256: str | None = None
    key: SecretStr | None = None
    key_env: str | None = None
    key_id: str | None = None
    tenant_id: str = "default"
    user_id: str = "default"
    models: list[str] | None = None
    scopes: list[str] = Field(default_factory=list)
    budgets: list[dict[str, Any]] = Field(default_factory=list)
    rate_limits: list[dict[str, Any]] = Field(default_factory=list)

    def digest(self) -> str | None:
        if self.key_sha256:
            return self.key_sha256.lower()
        if self.key is not None:
            return sha256_hex(self.key.get_secret_value())
        if self.key_env and os.environ.get(self.key_env):
            return sha256_hex(os.environ[self.key_env])
        return None


class AuthSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    keys: list[KeySpec] = Field(default_factory=list)
    admin_key_sha256: str | None = None
    admin_key_env: str | None = "TAKO_ADMIN_KEY"
    jwt: list[dict[str, Any]] = Field(default_factory=list)
    redis_keys: bool = False


class AliasSpec(BaseModel):
    """A model name served by several deployments: tried in order (or weighted) on
    transient failure or an open breaker."""

    model_config = ConfigDict(extra="forbid")

    targets: list[str]
    weights: list[float] | None = None
    description: str | None = None


class ToolSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    builtin: list[str] = Field(default_factory=lambda: ["calculator", "current_time"])
    mcp_servers: list[McpServerSpec] = Field(default_factory=list)


class TelemetrySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    service_name: str = "tako"
    otlp_endpoint: str | None = None
    tracing: bool = True
    # head sampling: the share of new traces recorded; a client's sampled traceparent is
    # followed either way (parent-based)
    sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)
    metrics: bool = True


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TAKO_", env_nested_delimiter="__",
                                      extra="forbid")

    config: str | None = None
    server: ServerSettings = Field(default_factory=ServerSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    deployments: list[DeploymentSpec] = Field(default_factory=list)
    aliases: dict[str, AliasSpec] = Field(default_factory=dict)
    profiles: list[ProfileSpec] = Field(default_factory=list)
    tools: ToolSettings = Field(default_factory=ToolSettings)
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    policy: PolicySettings = Field(default_factory=PolicySettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    embedded_default: bool = False

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (env_settings, init_settings)



def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Read the YAML file (``path`` or ``TAKO_CONFIG``); none means the embedded default.

    Raises ConfigError: the file cannot be read or parsed, or fields are invalid (each at
    its path). Names that must exist across sections are checked when the gateway is built
    from the settings (``Gateway.from_settings``)."""
    path = path or os.environ.get("TAKO_CONFIG")
    data = _read_yaml(Path(path)) if path else embedded_default()
    data.update(overrides)
    try:
        return Settings(**data)
    except ValidationError as error:
        sections = [name for name in Settings.model_fields if name not in INTERNAL_FIELDS]
        raise ConfigError.from_validation(
            error, unknown=f"unknown section; known: {', '.join(sections)}") from None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError.at("", f"cannot read {path}: {exc.strerror or exc}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError.at("", f"{path} is not valid YAML{where}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError.at("", f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError.at("", f"{path}: the config must be a YAML mapping")
    data["config"] = str(path)
    return data


def embedded_default(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """The no-config setup: the echo demo, the demo key, and each vendor whose keys are set
    (every vendor module says which, ``embedded_deployments``)."""
    env = os.environ if environ is None else environ
    deployments = embedded_deployments(env)
    return {
        "embedded_default": True,
        "auth": {"keys": [{"key_env": "TAKO_DEMO_KEY", "key_id": "demo",
                           "tenant_id": "demo", "user_id": "demo"},
                          {"key_sha256": sha256_hex(DEMO_KEY), "key_id": "demo-builtin",
                           "tenant_id": "demo", "user_id": "demo"}]},
        "deployments": deployments,
        "profiles": [
            {"name": "echo-tools", "kind": "single",
             "description": "echo with the server-side calculator tool",
             "params": {"deployment": "echo", "tools": ["calculator"]}},
            {"name": "echo-selfcaller", "kind": "selfcaller",
             "description": "echo behind a rule guard, with the calculator and self_call "
                            "tools",
             "params": {"inner": {"kind": "single",
                                  "params": {"deployment": "echo", "tools": ["calculator"]}},
                        "verifier": {"kind": "rules", "must": ["returned"]},
                        "threshold": 1.0, "max_depth": 1}},
            {"name": "echo-conductor", "kind": "conductor",
             "description": "echo coordinates echo: send a JSON workflow as your message",
             "params": {"coordinator": "echo", "workers": {"echo": "repeats its subtask"}}},
        ],
    }
