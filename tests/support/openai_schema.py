"""Validate bodies against OpenAI's published OpenAPI schemas (tests/data/openai-openapi.yaml,
MIT, see its LICENSE and VERSION files beside it)."""

from __future__ import annotations

import json
import pickle
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SPEC_PATH = Path(__file__).resolve().parents[1] / "data" / "openai-openapi.yaml"
CACHE_DIR = Path(__file__).resolve().parents[2] / ".tmp"


def _fix_nullable(node: Any) -> Any:
    """3.0-style ``nullable: true`` means null is allowed too."""
    if isinstance(node, dict):
        fixed = {k: _fix_nullable(v) for k, v in node.items()}
        if fixed.pop("nullable", False):
            t = fixed.get("type")
            if isinstance(t, str):
                fixed["type"] = [t, "null"]
            elif isinstance(t, list) and "null" not in t:
                fixed["type"] = [*t, "null"]
            elif "$ref" in fixed or "anyOf" in fixed or "oneOf" in fixed or "allOf" in fixed:
                fixed = {"anyOf": [fixed, {"type": "null"}]}
            if "enum" in fixed and None not in fixed["enum"]:
                fixed["enum"] = [*fixed["enum"], None]
        return fixed
    if isinstance(node, list):
        return [_fix_nullable(v) for v in node]
    return node


@cache
def _schemas() -> dict[str, Any]:
    path = SPEC_PATH
    CACHE_DIR.mkdir(exist_ok=True)
    cached = CACHE_DIR / f"openai-schemas-{path.stat().st_size}.pickle"
    if cached.exists():
        return pickle.loads(cached.read_bytes())  # noqa: S301 - our own cache file
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    spec = yaml.load(path.read_text(), Loader=loader)
    schemas = _fix_nullable(spec["components"]["schemas"])
    cached.write_bytes(pickle.dumps(schemas))
    return schemas


@cache
def _validator(name: str) -> jsonschema.protocols.Validator:
    schemas = _schemas()
    root = {"$ref": f"#/components/schemas/{name}", "components": {"schemas": schemas}}
    cls = jsonschema.validators.validator_for({"$schema": "https://json-schema.org/draft/2020-12/schema"})
    return cls(root)


def validate(name: str, body: Any) -> None:
    """Raise jsonschema.ValidationError when ``body`` does not match schema ``name``."""
    if isinstance(body, (bytes, str)):
        body = json.loads(body)
    _validator(name).validate(body)


def validate_chunk(chunk: Any) -> None:
    validate("CreateChatCompletionStreamResponse", chunk)


def validate_completion(body: Any) -> None:
    validate("CreateChatCompletionResponse", body)


def validate_error(body: Any) -> None:
    validate("ErrorResponse", body)
