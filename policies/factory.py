"""Building the configured PolicyEngine."""

from __future__ import annotations

from typing import Any

from tako.core.protocols import PolicyDecision, PolicyEngine
from tako.policies.decision import check_stage
from tako.policies.embedded import EmbeddedRegoEngine
from tako.policies.opa_rest import OpaRestEngine
from tako.policies.settings import PolicySettings


class AllowAllEngine:
    """``mode: off``: every stage allows."""

    async def evaluate(self, stage: str, data: dict[str, Any]) -> PolicyDecision:
        check_stage(stage)
        return PolicyDecision(action="allow")

    async def aclose(self) -> None:
        return None


def build_policy_engine(settings: PolicySettings) -> PolicyEngine:
    if settings.mode == "off":
        return AllowAllEngine()
    if settings.mode == "opa":
        return OpaRestEngine(
            settings.opa_url,
            settings.timeout_s,
            settings.fail_mode,
            package=settings.opa_package,
        )
    return EmbeddedRegoEngine(
        settings.data,
        policy_dir=settings.policy_dir,
        threads=settings.embedded_threads,
        inline_max_bytes=settings.embedded_inline_max_bytes,
    )
