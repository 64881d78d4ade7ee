"""Dockerfile: multi-stage, slim non-root runtime, health check, and a build context that
really produces the package (built here with setuptools exactly as the builder stage does)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from app.config import ServerSettings
from tests.deploy.dockerfile import Stage, copy_sources, dockerignore_excludes, parse_dockerfile
from tests.deploy.repo_files import DOCKERFILE, REPO
from tests.deploy.settings_env import settings_env_names

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
    assert PYPROJECT["project"]["scripts"]["tako"] == "app.cli:main"


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


def _included_packages() -> list[str]:
    patterns = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    return sorted(p.removesuffix("*") for p in patterns)


def test_build_context_holds_every_package_and_no_secrets() -> None:
    ignore = REPO / ".dockerignore"
    sources = copy_sources(_stages()[0])
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: not in the repository"
        assert not dockerignore_excludes(ignore, source), f"COPY {source} is .dockerignored"
    assert set(_included_packages()) <= set(sources), "a package is not copied into the image"
    for secret in (".env", ".env.local", ".git"):
        assert dockerignore_excludes(ignore, secret)
    assert not dockerignore_excludes(ignore, "policies/pre_chat.rego")


def test_build_context_builds_the_package_with_its_data(tmp_path: Path) -> None:
    context = tmp_path / "src"
    context.mkdir()
    ignore = REPO / ".dockerignore"
    for source in copy_sources(_stages()[0]):
        origin = REPO / source
        if origin.is_dir():
            shutil.copytree(origin, context / source, ignore=lambda d, names: [
                n for n in names if dockerignore_excludes(
                    ignore, str((Path(d) / n).relative_to(REPO)))])
        else:
            shutil.copy2(origin, context / source)
    lib, meta = tmp_path / "lib", tmp_path / "meta"
    meta.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", "from setuptools import setup; setup()", "-q",
         "egg_info", "--egg-base", str(meta), "build_py", "--build-lib", str(lib)],
        cwd=context, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    package_data = PYPROJECT["tool"]["setuptools"]["package-data"]
    shipped = 0
    for package, globs in package_data.items():
        for pattern in globs:
            for data_file in (REPO / package).glob(pattern):
                assert (lib / package / data_file.name).is_file(), f"{data_file} not built"
                shipped += 1
    assert shipped >= 3 and list((lib / "policies").glob("*.rego"))
    for package in _included_packages():
        assert (lib / package / "__init__.py").is_file(), package
    (info,) = meta.glob("*.egg-info")
    assert "tako = app.cli:main" in (info / "entry_points.txt").read_text()
    runtime_requires = (info / "requires.txt").read_text().split("\n[")[0]
    assert "pytest" not in runtime_requires and "fastapi" in runtime_requires
