"""Finding the Rego modules: the ones shipped with tako, or an operator's directory."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def shipped_policy_dir() -> Path:
    """The directory holding the .rego files shipped as package data of ``policies``."""
    return Path(str(resources.files("tako.policies")))


def load_modules(policy_dir: Path | None = None) -> dict[str, str]:
    """``{file name: source}`` for every ``*.rego`` in ``policy_dir`` (default: shipped)."""
    directory = policy_dir or shipped_policy_dir()
    modules = {p.name: p.read_text(encoding="utf-8") for p in sorted(directory.glob("*.rego"))}
    if not modules:
        raise FileNotFoundError(f"no .rego policies in {directory}")
    return modules


def policy_data(config: dict[str, object]) -> dict[str, object]:
    """The data document the policies read: operator settings under ``data.tako.config``."""
    return {"tako": {"config": config}}
