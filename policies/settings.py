"""Policy and PII settings; the gateway's config embeds them under ``policy:``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

PiiKind = Literal[
    "email",
    "phone",
    "ipv4",
    "ipv6",
    "credit_card",
    "us_ssn",
    "iban",
    "aws_access_key_id",
    "aws_secret_access_key",
    "openai_api_key",
    "github_token",
    "jwt",
    "private_key",
]

ALL_PII_KINDS: tuple[PiiKind, ...] = get_args(PiiKind)


class PiiFilterSettings(BaseModel):
    """What one direction (request or response) does with the PII and secrets it finds.

    ``mode``: ``off`` leaves text alone; ``mask`` keeps a hint (``j***@e***.com``,
    ``****1111``); ``hash`` writes a stable tag (``<EMAIL:ab12cd34>``, sha256 of
    ``hash_salt`` + value); ``redact`` writes the kind (``<EMAIL>``); ``block`` rejects the
    text with a policy error naming the kinds found, never the values.
    """

    model_config = ConfigDict(extra="forbid")

    mode: Literal["off", "mask", "hash", "redact", "block"] = "off"
    kinds: list[PiiKind] = Field(default_factory=lambda: list(ALL_PII_KINDS))
    hash_salt: str = ""


class PiiSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request: PiiFilterSettings = Field(default_factory=PiiFilterSettings)
    response: PiiFilterSettings = Field(default_factory=PiiFilterSettings)


class PolicySettings(BaseModel):
    """How tako decides on requests.

    ``mode``: ``embedded`` evaluates the shipped Rego in-process; ``opa`` asks an OPA
    server at ``opa_url`` (``POST /v1/data/<opa_package>/<stage>/decision``); ``off`` allows
    everything. ``data`` is the policy data (``data.tako.config`` in Rego): the keys the
    shipped policies read are listed in policies/README.md and each .rego file.
    ``fail_mode`` says what an unreachable or slow OPA means: ``fail_closed`` rejects the
    request with 503, ``fail_open`` allows it and logs a warning. The embedded engine
    evaluates inputs up to ``embedded_inline_max_bytes`` of JSON on the event loop (well
    under a millisecond) and larger ones on ``embedded_threads`` worker threads.
    """

    model_config = ConfigDict(extra="forbid")

    mode: Literal["embedded", "opa", "off"] = "embedded"
    opa_url: str = "http://127.0.0.1:8181"
    opa_package: str = "tako"
    timeout_s: float = Field(default=0.25, gt=0)
    fail_mode: Literal["fail_closed", "fail_open"] = "fail_closed"
    data: dict[str, Any] = Field(default_factory=dict)
    policy_dir: Path | None = None
    embedded_threads: int = Field(default=1, ge=1)
    embedded_inline_max_bytes: int = Field(default=16384, ge=0)
    pii: PiiSettings = Field(default_factory=PiiSettings)
