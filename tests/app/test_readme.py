"""Every command and snippet in README.md works as written.

The README's fenced blocks, after its first one (``make run`` / ``make test``, checked by
``test_readme_starts_with_the_two_commands`` and never run from here):

- ``bash`` / ``sh`` / ``console`` blocks run in a fresh ``bash -euo pipefail`` in the
  repository, as a reader's shell would be after those two commands: the virtualenv not
  activated, no ``TAKO_*`` variables but the admin key, and a ``.curlrc`` that makes curl
  fail on an HTTP error. ``BENCH_SECONDS`` and ``BENCH_SEEDS`` keep ``make bench*`` short.
- ``python`` blocks run under the virtualenv's Python (the one ``make run`` sets up); every
  ``print(...)  # text`` must print ``text``.
- ``yaml`` blocks go through ``tako check --config``: one with ``deployments`` is a full
  config; any other is a fragment, checked over the first full one (its sections replace).

A block that talks to ``127.0.0.1:8000`` or ``localhost:8000`` (where ``make run`` serves)
runs against a real ``tako serve`` on the embedded default, started here on a free port,
with the address rewritten. A block marked ``<!-- needs: X -->`` is skipped with that
reason, unless X is an environment variable that is set.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tako.app.config import ServerSettings
from tests.support.gateway import Gateway, start_gateway
from tests.support.readme import FencedBlock, console_commands, fenced_blocks

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
BLOCKS = fenced_blocks(README)
SETUP_BLOCK, RUNNABLE_BLOCKS = BLOCKS[0], BLOCKS[1:]
SHELL_LANGUAGES = {"bash", "sh", "console"}
README_GATEWAY = re.compile(r"\b(?:127\.0\.0\.1|localhost):8000\b")
ALWAYS_SKIPPED_NEEDS = {
    "docker": "needs Docker: docker compose builds and starts the whole stack",
    "minutes": "takes minutes",
}
ADMIN_KEY = "adm-readme-" + secrets.token_hex(8)
CURLRC = "--fail-with-body\n--silent\n--show-error\n--max-time 30\n"
QUICK_BENCH = {"BENCH_SECONDS": "1", "BENCH_SEEDS": "3"}
SHELL_TIMEOUT_S = 90


def blocks_in(*languages: str) -> list[Any]:
    return [pytest.param(block, id=block.name) for block in RUNNABLE_BLOCKS
            if block.language in languages]


def skip_unless_available(block: FencedBlock) -> None:
    for need in block.needs:
        if need in ALWAYS_SKIPPED_NEEDS:
            pytest.skip(f"{block.name}: {ALWAYS_SKIPPED_NEEDS[need]}")
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*", need), (
            f"{block.name}: unknown need {need!r} (docker, minutes or a variable name)")
        if not os.environ.get(need):
            pytest.skip(f"{block.name}: needs {need} in the environment")


def fresh_shell_env(home: Path, gateway: Gateway | None) -> dict[str, str]:
    """The environment of a new shell: this interpreter's virtualenv not on PATH."""
    venv_bin = str(Path(sys.executable).parent)
    dropped = {"VIRTUAL_ENV", "PYTHONHOME", "MAKEFLAGS", "MFLAGS", "MAKELEVEL"}
    env = {name: value for name, value in os.environ.items()
           if name not in dropped and not name.startswith("TAKO_")}
    env["PATH"] = os.pathsep.join(part for part in env.get("PATH", "").split(os.pathsep)
                                  if part and part != venv_bin)
    (home / ".curlrc").write_text(CURLRC)
    env.update(CURL_HOME=str(home), **QUICK_BENCH)
    if gateway is not None:
        env["TAKO_ADMIN_KEY"] = ADMIN_KEY
    return env


@pytest.fixture(scope="module")
def readme_gateway() -> Iterator[Gateway]:
    """``make run``'s gateway: the embedded default, with an admin key."""
    gateway = start_gateway(None, env={"TAKO_ADMIN_KEY": ADMIN_KEY})
    try:
        yield gateway
    finally:
        gateway.kill()


def for_gateway(block: FencedBlock, request: pytest.FixtureRequest) -> tuple[str, Gateway | None]:
    """The block's text, pointed at the test's gateway when it talks to ``make run``'s."""
    if not README_GATEWAY.search(block.text):
        return block.text, None
    gateway: Gateway = request.getfixturevalue("readme_gateway")
    return README_GATEWAY.sub(f"127.0.0.1:{gateway.port}", block.text), gateway


def describe(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\nstdout:\n{result.stdout[-3000:]}\n" \
           f"stderr:\n{result.stderr[-3000:]}"


def test_readme_starts_with_the_two_commands() -> None:
    lines = README.read_text().splitlines()
    commands = [line.split("#")[0].strip() for line in lines[:6]
                if line.startswith("make ")]
    assert commands == ["make run", "make test"]
    assert [line.split("#")[0].strip() for line in SETUP_BLOCK.text.splitlines()] == commands
    assert "http://127.0.0.1:8000" in SETUP_BLOCK.text
    assert ServerSettings().port == 8000, "make run no longer serves where the README says"
    makefile = (ROOT / "Makefile").read_text()
    assert "\nrun: setup" in makefile and "\ntest: setup" in makefile
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_every_readme_block_is_one_this_file_runs() -> None:
    known = SHELL_LANGUAGES | {"python", "yaml"}
    assert [(b.name, b.language) for b in BLOCKS if b.language not in known] == []


def test_readme_links_point_at_files() -> None:
    targets = re.findall(r"\]\(([^)#\s]+)\)", README.read_text())
    local = [target for target in targets if "://" not in target]
    assert local, "the README links to no file"
    assert [target for target in local if not (ROOT / target).exists()] == []


@pytest.mark.parametrize("block", blocks_in(*SHELL_LANGUAGES))
def test_readme_shell_block_runs(block: FencedBlock, request: pytest.FixtureRequest,
                                 tmp_path: Path) -> None:
    skip_unless_available(block)
    text, gateway = for_gateway(block, request)
    script, shown = console_commands(text) if block.language == "console" else (text, [])
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=ROOT,
                            env=fresh_shell_env(tmp_path, gateway), capture_output=True,
                            text=True, timeout=SHELL_TIMEOUT_S)
    assert result.returncode == 0, describe(result)
    assert [line for line in shown if line not in result.stdout] == [], describe(result)


@pytest.mark.parametrize("block", blocks_in("python"))
def test_readme_python_block_runs(block: FencedBlock, request: pytest.FixtureRequest,
                                  tmp_path: Path) -> None:
    skip_unless_available(block)
    text, gateway = for_gateway(block, request)
    snippet = tmp_path / "snippet.py"
    snippet.write_text(text)
    result = subprocess.run([sys.executable, str(snippet)], cwd=tmp_path,
                            env=fresh_shell_env(tmp_path, gateway), capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, describe(result)
    missing = [line for line in block.expected_outputs() if line not in result.stdout]
    assert missing == [], describe(result)


def config_text_for(block: FencedBlock) -> str:
    """The block as written when it is a full config, else over the first full one."""
    if "deployments" in yaml.safe_load(block.text):
        return block.text
    first_full = next(b for b in BLOCKS if b.language == "yaml"
                      and "deployments" in yaml.safe_load(b.text))
    return yaml.safe_dump({**yaml.safe_load(first_full.text), **yaml.safe_load(block.text)})


@pytest.mark.parametrize("block", blocks_in("yaml"))
def test_readme_yaml_block_passes_tako_check(block: FencedBlock, tmp_path: Path) -> None:
    skip_unless_available(block)
    path = tmp_path / "tako.yaml"
    path.write_text(config_text_for(block))
    result = subprocess.run([sys.executable, "-m", "tako", "check", "--config", str(path)],
                            cwd=tmp_path, env=fresh_shell_env(tmp_path, None),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, describe(result)
    config = yaml.safe_load(path.read_text())
    counts = (f"ok: {len(config['deployments'])} deployments, "
              f"{len(config.get('profiles', []))} profiles")
    assert result.stdout.startswith(counts), describe(result)
