"""Dockerfile: multi-stage, slim non-root runtime, health check, and a build context that
really produces the package (built here with setuptools exactly as the builder stage does)."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from tako.app.config import ServerSettings
from tests.support.dockerfile import Stage, copy_sources, dockerignore_excludes, parse_dockerfile
from tests.support.repo_files import DOCKERFILE, REPO
from tests.support.settings_env import settings_env_names

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def _stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE)[1]


def _final_env() -> dict[str, str]:
    env = {}
    for args in _stages()[-1].all("ENV"):
        for item in args.split():
            name, _, value = item.partition("=")
            env[name] = value
    return env


def test_multi_stage_build_ends_on_slim_python_without_compilers() -> None:
    stages = _stages()
    assert len(stages) >= 2
    final = stages[-1]
    assert final.base == "python:3.11-slim"
    assert any(f"--from={stages[0].name}" in c for c in final.all("COPY"))
    final_text = " ".join(args for _, args in final.instructions)
    for tool in ("build-essential", "gcc", "apt-get install", "pip install"):
        assert tool not in final_text, f"the runtime stage installs {tool}"


def test_runtime_runs_as_a_non_root_user() -> None:
    user = _stages()[-1].last("USER").split(":")[0]
    assert user not in ("root", "0")


def test_healthcheck_uses_python_against_healthz() -> None:
    check = _stages()[-1].last("HEALTHCHECK")
    command = json.loads(check[check.index("CMD") + 3:].strip())
    assert command[0] == "python" and "/healthz" in command[-1]
    # The command must at least compile: run its code with nothing listening.
    result = subprocess.run([sys.executable, "-c", command[-1]], capture_output=True,
                            text=True, timeout=30,
                            env={"TAKO_SERVER__PORT": "9", "PATH": "/usr/bin:/bin"})
    assert result.returncode != 0 and "SyntaxError" not in result.stderr


def test_stop_signal_and_exec_form_cmd_run_tako_serve() -> None:
    final = _stages()[-1]
    assert final.last("STOPSIGNAL") == "SIGTERM"
    assert json.loads(final.last("CMD")) == ["tako", "serve"]
    assert PYPROJECT["project"]["scripts"]["tako"] == "tako.app.cli:main"


def test_image_env_is_tako_settings_and_the_exposed_port_matches() -> None:
    env = _final_env()
    known = settings_env_names()
    for name in env:
        if name.startswith("TAKO_"):
            assert name in known, f"{name} is not a tako setting"
    assert env["TAKO_SERVER__HOST"] == "0.0.0.0"
    assert "PROMETHEUS_MULTIPROC_DIR" in env
    assert "TAKO_SERVER__WORKERS" in settings_env_names()  # workers: config or env
    port = int(env["TAKO_SERVER__PORT"])
    assert port == ServerSettings().port
    assert _stages()[-1].last("EXPOSE") == str(port)


def _repository_packages() -> list[str]:
    """The folders the ``tako`` package links to (``tako/app`` -> ``app``) and ``tako``."""
    links = [p for p in (REPO / "tako").iterdir() if p.is_symlink()]
    return sorted(["tako", *(str(p.readlink()).removeprefix("../") for p in links)])


def test_build_context_holds_every_package_and_no_secrets() -> None:
    ignore = REPO / ".dockerignore"
    sources = copy_sources(_stages()[0])
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: not in the repository"
        assert not dockerignore_excludes(ignore, source), f"COPY {source} is .dockerignored"
    assert set(_repository_packages()) <= set(sources), "a package is not copied into the image"
    for secret in (".env", ".env.local", ".git"):
        assert dockerignore_excludes(ignore, secret)
    assert not dockerignore_excludes(ignore, "policies/pre_chat.rego")


def test_build_context_builds_the_package_with_its_data(built_wheel: Path) -> None:
    with zipfile.ZipFile(built_wheel) as wheel:
        names = wheel.namelist()
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        entry_text = wheel.read(entry_points).decode()
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        requires = [line for line in wheel.read(metadata).decode().splitlines()
                    if line.startswith("Requires-Dist:") and "extra ==" not in line]
    package_data = PYPROJECT["tool"]["setuptools"]["package-data"]
    shipped = 0
    for package, globs in package_data.items():
        folder = package.replace(".", "/")
        for pattern in globs:
            for data_file in (REPO / folder).glob(pattern):
                inside = data_file.relative_to(REPO / folder).as_posix()
                assert f"{folder}/{inside}" in names, f"{data_file} not built"
                shipped += 1
    assert shipped >= 3 and any(n.startswith("tako/policies/") and n.endswith(".rego")
                                for n in names)
    for package in _repository_packages():
        prefix = "" if package == "tako" else "tako/"
        assert f"{prefix}{package}/__init__.py" in names, package
    assert "tako = tako.app.cli:main" in entry_text
    assert not any("pytest" in r for r in requires) and any("fastapi" in r for r in requires)
