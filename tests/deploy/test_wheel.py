"""The installed wheel is one top-level package, ``tako``: it sits beside an application
that has its own ``app`` and ``core`` packages without either shadowing the other."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import httpx

from tests.support.gateway import gateway

USER_PACKAGES = {"app": "USER_APP = 'the application'\n", "core": "USER_CORE = 'its core'\n"}


def _fresh_venv(root: Path) -> Path:
    """A new venv that finds third-party dependencies in this interpreter's site-packages
    through a plain path entry: that directory's own .pth files (the editable install of the
    checkout among them) are not run there, so ``tako`` can only come from the wheel."""
    venv.EnvBuilder(with_pip=False).create(root)
    (site,) = (root / "lib").glob("python3*/site-packages")
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return root / "bin"


def _install(wheel: Path, bin_dir: Path) -> Path:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(bin_dir / "python"), "install",
         "--no-deps", "--no-index", str(wheel)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    (site,) = (bin_dir.parent / "lib").glob("python3*/site-packages")
    return site


def test_the_wheel_holds_one_top_level_package(built_wheel: Path) -> None:
    with zipfile.ZipFile(built_wheel) as wheel:
        tops = {name.split("/")[0] for name in wheel.namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"tako"}


def test_installed_beside_an_app_and_core_of_its_own(built_wheel: Path, tmp_path: Path) -> None:
    bin_dir = _fresh_venv(tmp_path / "venv")
    site = _install(built_wheel, bin_dir)
    installed = {p.name for p in site.iterdir()} - {"dependencies.pth", "__pycache__"}
    assert {n for n in installed if not n.endswith(".dist-info")} == {"tako"}

    project = tmp_path / "project"
    for name, body in USER_PACKAGES.items():
        (project / name).mkdir(parents=True)
        (project / name / "__init__.py").write_text(body)
    probe = ("import app, core, tako, tako.app.cli, tako.core.types\n"
             "assert app.USER_APP and core.USER_CORE\n"
             "assert tako.app.cli.__file__.startswith(tako.__path__[0])\n"
             "print(tako.__file__)\n"
             "print(tako.run_sync({'kind': 'single', 'params': {'deployment': 'e'}},\n"
             "    {'messages': [{'role': 'user', 'content': 'hi'}]},\n"
             "    {'e': tako.build_provider({'name': 'e', 'provider': 'echo', 'model': 'e'})}"
             ").content)\n")
    result = subprocess.run([str(bin_dir / "python"), "-c", probe], cwd=project,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    where, answer = result.stdout.split()[0], result.stdout.split("\n")[1]
    assert where.startswith(str(site)) and answer == "echo: hi"

    with gateway(None, command=[str(bin_dir / "tako")], cwd=project) as gw:
        reply = httpx.post(gw.url + "/v1/chat/completions", timeout=10,
                           headers={"Authorization": "Bearer sk-tako-demo"},
                           json={"model": "echo",
                                 "messages": [{"role": "user", "content": "from the wheel"}]})
    assert reply.status_code == 200
    assert reply.json()["choices"][0]["message"]["content"] == "echo: from the wheel"
