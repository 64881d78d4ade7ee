"""The wheel the image builder makes, built once per run from a copy of its build context."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.dockerfile import copy_build_context, parse_dockerfile
from tests.deploy.repo_files import DOCKERFILE, REPO


@pytest.fixture(scope="session")
def built_wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``pip wheel`` over exactly what the Dockerfile's builder stage copies in."""
    work = tmp_path_factory.mktemp("wheel")
    context, out = work / "context", work / "dist"
    copy_build_context(REPO, parse_dockerfile(DOCKERFILE)[1][0], context)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(out), str(context)],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = out.glob("tako_gateway-*.whl")
    yield wheel
