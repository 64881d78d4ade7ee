"""The decision document every policy stage returns, and its conversion to PolicyDecision.

Shape (the result of ``data.tako.<stage>.decision``)::

    {"action": "allow" | "deny" | "redact_messages" | "redact_response"
               | "force_model" | "require_approval",
     "reason": str,                 # optional, empty for allow
     "messages": [OpenAI message],  # redact_messages; may also ride along force_model
     "response": str,               # redact_response
     "model": str}                  # force_model
"""

from __future__ import annotations

from typing import Any

from tako.core.errors import InternalError
from tako.core.protocols import PolicyDecision

STAGES = ("pre_chat", "pre_tool", "post_chat")
ACTIONS = frozenset(
    {"allow", "deny", "redact_messages", "redact_response", "force_model", "require_approval"}
)


def check_stage(stage: str) -> None:
    if stage not in STAGES:
        raise ValueError(f"unknown policy stage {stage!r}; expected one of {', '.join(STAGES)}")


def decision_path(package: str, stage: str) -> str:
    """The rule path below ``data``: ``tako/pre_chat/decision``."""
    return "/".join([*package.split("."), stage, "decision"])


def decision_from_result(stage: str, result: Any) -> PolicyDecision:
    """Validate a decision document; a malformed one is a policy bug, reported as such."""
    if not isinstance(result, dict):
        raise InternalError(f"policy stage {stage} returned no decision document")
    action = result.get("action")
    if action not in ACTIONS:
        raise InternalError(f"policy stage {stage} returned an unknown action {action!r}")
    messages = result.get("messages")
    response = result.get("response")
    model = result.get("model")
    if (
        (messages is not None and not isinstance(messages, list))
        or (response is not None and not isinstance(response, str))
        or (model is not None and not isinstance(model, str))
    ):
        raise InternalError(f"policy stage {stage} returned a malformed {action} decision")
    return PolicyDecision(
        action=str(action),
        reason=str(result.get("reason") or ""),
        messages=messages,
        response=response,
        model=model,
    )


def decision_to_result(decision: PolicyDecision) -> dict[str, Any]:
    """The decision document for a PolicyDecision (fields left unset are omitted)."""
    out: dict[str, Any] = {"action": decision.action}
    if decision.reason:
        out["reason"] = decision.reason
    if decision.messages is not None:
        out["messages"] = decision.messages
    if decision.response is not None:
        out["response"] = decision.response
    if decision.model is not None:
        out["model"] = decision.model
    return out
