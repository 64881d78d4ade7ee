"""The ``TAKO_*`` environment variable names tako's config accepts, built from its models."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from tako.app.config import Settings
from tako.policies.settings import PolicySettings

# Sections the Settings model keeps as a plain mapping, validated by their own package.
SECTION_MODELS: dict[str, type[BaseModel]] = {"policy": PolicySettings}


def _section_model(name: str, annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return SECTION_MODELS.get(name)


def settings_env_names() -> set[str]:
    prefix = Settings.model_config.get("env_prefix", "")
    delimiter = Settings.model_config.get("env_nested_delimiter", "__")
    names = set()
    for name, info in Settings.model_fields.items():
        model = _section_model(name, info.annotation)
        if model is None:
            names.add(f"{prefix}{name}".upper())
        else:
            names |= {f"{prefix}{name}{delimiter}{sub}".upper() for sub in model.model_fields}
    return names
