"""The wheel the image builder makes, built from a copy of the Dockerfile's build context."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.dockerfile import copy_build_context, parse_dockerfile
from tests.support.repo_files import DOCKERFILE, REPO


def build_image_wheel(work: Path) -> Path:
    """``pip wheel`` over exactly what the Dockerfile's builder stage copies in, under
    ``work``; the wheel's path."""
    context, out = work / "context", work / "dist"
    copy_build_context(REPO, parse_dockerfile(DOCKERFILE)[1][0], context)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(out), str(context)],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = out.glob("tako_gateway-*.whl")
    return wheel
