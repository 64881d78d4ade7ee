"""The wheel the image builder makes, built once per run from a copy of its build context."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.wheel import build_image_wheel


@pytest.fixture(scope="session")
def built_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip wheel`` over exactly what the Dockerfile's builder stage copies in."""
    return build_image_wheel(tmp_path_factory.mktemp("wheel"))
