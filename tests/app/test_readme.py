"""The README's first lines and its configuration example stay true."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_readme_starts_with_the_two_commands() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    commands = [line.split("#")[0].strip() for line in lines[:6]
                if line.startswith("make ")]
    assert commands == ["make run", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    assert "\nrun: setup" in makefile and "\ntest: setup" in makefile
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_readme_config_example_is_valid(tmp_path: Path) -> None:
    text = (ROOT / "README.md").read_text()
    start = text.index("```yaml\nserver:") + len("```yaml\n")
    example = tmp_path / "tako.yaml"
    example.write_text(text[start:text.index("```", start)])
    result = subprocess.run([sys.executable, "-m", "tako.app.cli", "check", "--config",
                             str(example)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: 3 deployments, 1 profiles")
