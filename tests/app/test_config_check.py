"""`tako check` names every problem of a config once, at its path, and `tako serve`
refuses the same configs with the same lines before it listens."""

from __future__ import annotations

import copy
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tako.app.config import Settings
from tako.app.factory import create_app
from tako.app.gateway import Gateway
from tako.core.errors import ConfigError
from tests.support.gateway import ROOT, basic_config, write_config
from tests.support.net import free_port

CONFIG_ERROR = 2
VENDOR_ENV = {
    "OPENAI_API_KEY": "sk-test", "ANTHROPIC_API_KEY": "sk-ant-test", "MISTRAL_API_KEY": "m",
    "AZURE_OPENAI_API_KEY": "az", "AZURE_OPENAI_ENDPOINT": "https://r.openai.azure.com",
    "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "secret",
    "GOOGLE_CLOUD_PROJECT": "p", "GOOGLE_APPLICATION_CREDENTIALS": "/nonexistent/key.json",
    "OLLAMA_HOST": "http://127.0.0.1:11434",
}


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in VENDOR_ENV}
    env.pop("TAKO_CONFIG", None)
    return {**env, "PYTHONUNBUFFERED": "1", **(extra or {})}


def tako(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tako", *args], cwd=ROOT, env=_env(env),
                          capture_output=True, text=True, timeout=60)


def check(config: dict[str, Any] | Path,
          env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    path = config if isinstance(config, Path) else write_config(config)
    return tako("check", "--config", str(path), env=env)


def problem_lines(output: str) -> list[str]:
    return [line.strip() for line in output.splitlines() if line.startswith("  ")]


def assert_problems(result: subprocess.CompletedProcess[str], paths: list[str]) -> None:
    """Exit 2 and exactly one problem line per path, naming it first."""
    assert result.returncode == CONFIG_ERROR, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = problem_lines(result.stderr)
    named = [line.split(": ", 1)[0] for line in lines]
    assert sorted(named) == sorted(paths), result.stderr
    assert f"{len(paths)} problem" in result.stderr


def good_config() -> dict[str, Any]:
    """Every kind of profile, naming an alias, workers and verifiers that all exist."""
    config = basic_config()
    config["aliases"] = {"fast": {"targets": ["echo", "echo-slow"]}}
    config["profiles"] += [
        {"name": "team", "kind": "conductor",
         "params": {"coordinator": "fast", "workers": {"echo": "drafts", "echo-slow": None}}},
        {"name": "plain", "kind": "single", "params": {"deployment": "fast", "max_steps": 2}},
        {"name": "trio", "kind": "trinity",
         "params": {"roles": {"thinker": "echo", "worker": ["echo", "fast"],
                              "verifier": "echo-slow"},
                    "router": {"kind": "llm", "deployment": "echo"}}},
        {"name": "refined", "kind": "selfcaller",
         "params": {"inner": {"kind": "single", "params": {"deployment": "fast",
                                                           "tools": ["current_time"]}},
                    "verifier": [{"kind": "rules", "must": ["echo"]},
                                 {"kind": "llm", "deployment": "echo"}]}},
        {"name": "search", "kind": "abmcts",
         "params": {"workers": ["echo", "fast"], "verifier": {"kind": "rules"}, "seed": 7}},
    ]
    return config


def with_change(change: dict[str, Any]) -> dict[str, Any]:
    """The good config with ``{"deployments[1].options": {...}}``-style replacements."""
    config = copy.deepcopy(good_config())
    for path, value in change.items():
        *parents, last = re.findall(r"[^.\[\]]+", path)
        node: Any = config
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[int(last) if last.isdigit() else last] = value
    return config


MISTAKES = {
    "profile names a missing deployment": (
        {"profiles[2].params.deployment": "gpt-5"}, ["profiles[2].params.deployment"]),
    "alias targets a missing deployment": (
        {"aliases.fast.targets": ["echo", "gone"]}, ["aliases.fast.targets[1]"]),
    "worker that does not exist": (
        {"profiles[1].params.workers": {"echo": "drafts", "ghost": None}},
        ["profiles[1].params.workers.ghost"]),
    "unknown tool": (
        {"profiles[0].params.tools": ["calculator", "hammer"]}, ["profiles[0].params.tools[1]"]),
    "unknown provider kind": (
        {"deployments[1].provider": "openaj"}, ["deployments[1].provider"]),
    "unknown orchestrator kind": ({"profiles[5].kind": "wizard"}, ["profiles[5].kind"]),
    "option the adapter does not accept": (
        {"deployments[1].options": {"delay_s": 0.1, "colour": "red"}},
        ["deployments[1].options.colour"]),
    "option of the wrong type": (
        {"deployments[1].options": {"delay_s": "slow"}}, ["deployments[1].options.delay_s"]),
    "param of the wrong type": (
        {"profiles[1].params.max_fanout": "many"}, ["profiles[1].params.max_fanout"]),
    "unknown param": ({"profiles[3].params.max_steps": 3}, ["profiles[3].params.max_steps"]),
    "nested profile names a missing deployment": (
        {"profiles[4].params.inner": {"kind": "single", "params": {"deployment": "nope"}}},
        ["profiles[4].params.inner.params.deployment"]),
    "judge names a missing deployment": (
        {"profiles[4].params.verifier": [{"kind": "llm", "deployment": "judge"}]},
        ["profiles[4].params.verifier[0].deployment"]),
    "field missing from a deployment": (
        {"deployments[0]": {"name": "echo", "provider": "echo"}}, ["deployments[0].model"]),
}


@pytest.mark.parametrize("change, paths", MISTAKES.values(), ids=list(MISTAKES))
def test_check_names_each_kind_of_mistake_at_its_path(change: dict[str, Any],
                                                      paths: list[str]) -> None:
    assert_problems(check(with_change(change)), paths)


def test_check_lists_every_problem_of_a_config_in_one_pass() -> None:
    config = with_change({
        "deployments[0].options": {"colour": "red"},
        "deployments[1].provider": "openaj",
        "aliases.fast.targets": ["echo", "gone"],
        "profiles[0].params.tools": ["calculator", "hammer"],
        "profiles[1].params.coordinator": "nobody",
        "profiles[2].params.deployment": "gpt-5",
        "profiles[2].params.max_steps": "lots",
        "profiles[4].params.inner": {"kind": "wizard"},
        "profiles[5].params.workers": "echo",
    })
    result = check(config)
    assert_problems(result, [
        "deployments[0].options.colour", "deployments[1].provider", "aliases.fast.targets[1]",
        "profiles[0].params.tools[1]", "profiles[1].params.coordinator",
        "profiles[2].params.deployment", "profiles[2].params.max_steps",
        "profiles[4].params.inner.kind", "profiles[5].params.workers",
    ])
    assert "profiles[2].params.deployment: no deployment or alias named 'gpt-5'" in result.stderr
    assert "unknown tool 'hammer'" in result.stderr
    assert "unknown provider kind 'openaj'" in result.stderr


def test_a_good_config_passes() -> None:
    result = check(good_config())
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok: 2 deployments, 6 profiles"


def test_serve_refuses_a_bad_config_with_the_same_lines_and_never_listens() -> None:
    config = write_config(with_change({"profiles[2].params.deployment": "gpt-5",
                                       "deployments[1].options": {"colour": "red"}}))
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tako", "serve", "--config", str(config),
                             "--port", str(port)], cwd=ROOT, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0, "serve started listening"
        time.sleep(0.05)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == CONFIG_ERROR, out + err
    assert "Traceback" not in err
    assert problem_lines(err) == problem_lines(check(config).stderr)
    assert "profiles[2].params.deployment: no deployment or alias named 'gpt-5'" in err


def test_mcp_tools_are_known_when_listed_or_prefixed() -> None:
    config = good_config()
    config["tools"] = {"mcp_servers": [
        {"name": "docs", "url": "http://127.0.0.1:9/mcp", "tools": ["read_file"]},
        {"name": "web", "url": "http://127.0.0.1:9/mcp", "prefix": "web"},
    ]}
    config["profiles"][0]["params"]["tools"] = ["calculator", "read_file", "web__search",
                                               "grep"]
    result = check(config)
    assert_problems(result, ["profiles[0].params.tools[3]"])
    assert "unknown tool 'grep'; known: calculator, current_time, read_file, web__*" in (
        result.stderr)


def _markdown_yaml_blocks(path: Path) -> list[Any]:
    text = path.read_text()
    return [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", text, re.S)]


def _docs_configs() -> dict[str, dict[str, Any]]:
    """Each full config in the docs, and each profiles fragment joined to the deployments
    of its document's first full config."""
    configs: dict[str, dict[str, Any]] = {}
    for doc in sorted((ROOT / "docs").glob("*.md")):
        blocks = _markdown_yaml_blocks(doc)
        full = [b for b in blocks if isinstance(b, dict) and "deployments" in b]
        for i, block in enumerate(blocks):
            name = f"docs/{doc.name}#{i}"
            if isinstance(block, dict) and "deployments" in block:
                configs[name] = block
            elif isinstance(block, list) and full:
                configs[name] = {"deployments": full[0]["deployments"], "profiles": block}
    readme = [b for b in _markdown_yaml_blocks(ROOT / "README.md")
              if isinstance(b, dict) and "server" in b]
    configs.update({f"README.md#{i}": b for i, b in enumerate(readme)})
    return configs


def _repository_configs() -> dict[str, tuple[Path, dict[str, str]]]:
    """Each config with the environment it runs with (the k8s pod's Redis URL comes from
    its Secret)."""
    configs = {str(p.relative_to(ROOT)): (p, {})
               for p in sorted((ROOT / "deploy" / "config").glob("*.yaml"))}
    configmap = yaml.safe_load((ROOT / "deploy" / "k8s" / "configmap.yaml").read_text())
    configs["deploy/k8s/configmap.yaml"] = (
        write_config(yaml.safe_load(configmap["data"]["tako.yaml"])),
        {"TAKO_RUNTIME__REDIS_URL": "redis://redis:6379/0"})
    configs.update({name: (write_config(c), {}) for name, c in _docs_configs().items()})
    configs["tests/support/gateway.py basic_config"] = (write_config(basic_config()), {})
    return configs


REPOSITORY_CONFIGS = _repository_configs()


def test_the_repository_has_example_configs_to_check() -> None:
    assert "deploy/config/tako.compose.yaml" in REPOSITORY_CONFIGS
    assert sum(name.startswith("docs/orchestrators.md") for name in REPOSITORY_CONFIGS) >= 5


@pytest.mark.parametrize("path, env", REPOSITORY_CONFIGS.values(), ids=list(REPOSITORY_CONFIGS))
def test_every_repository_config_passes_check(path: Path, env: dict[str, str]) -> None:
    result = check(path, env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: ")


def test_the_embedded_default_passes_check_with_every_vendor_configured() -> None:
    result = tako("check", env=VENDOR_ENV)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok: 9 deployments, 3 profiles"


def test_a_server_with_neither_tools_nor_prefix_leaves_names_to_start_up() -> None:
    config = good_config()
    config["tools"] = {"mcp_servers": [{"name": "misc", "transport": "stdio",
                                        "command": "true"}]}
    config["profiles"][0]["params"]["tools"] = ["calculator", "grep"]
    gateway = Gateway.from_settings(Settings(**config))
    assert gateway.unverified_tools == {"grep"}


def test_the_app_factory_raises_the_problems_check_prints() -> None:
    config = with_change({"profiles[2].params.deployment": "gpt-5",
                          "deployments[1].provider": "openaj"})
    with pytest.raises(ConfigError) as refused:
        create_app(Settings(**config))
    assert [str(p) for p in refused.value.problems] == problem_lines(check(config).stderr)
