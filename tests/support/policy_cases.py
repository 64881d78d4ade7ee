"""Policy data and a table of stage inputs with the decision document each must produce."""

from __future__ import annotations

from typing import Any

POLICY_DATA: dict[str, Any] = {
    "denied_models": {"acme": ["gpt-4o"], "*": ["banned-model"]},
    "allowed_models": {"restricted": ["small"]},
    "forced_models": {"cheapco": "small"},
    "blocked_tools": ["shell"],
    "approval_tools": {"acme": ["deploy"], "*": ["send_email"]},
    "blocked_phrases": ["project bluebird"],
    "denied_phrases": ["launch codes"],
}


def principal(tenant: str = "acme") -> dict[str, Any]:
    return {"tenant_id": tenant, "user_id": "u1", "key_id": "k1", "scopes": ["chat"]}


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def tool(name: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}


def pre_chat(
    tenant: str = "acme",
    model: str = "gpt-4o-mini",
    messages: list[dict[str, Any]] | None = None,
    tools: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "principal": principal(tenant),
        "model": model,
        "messages": messages or [user("hello")],
        "tools": tools or [],
        "metadata": {"request_id": "r1"},
    }


def pre_tool(name: str, tenant: str = "acme") -> dict[str, Any]:
    return {
        "principal": principal(tenant),
        "model": "gpt-4o-mini",
        "tool": name,
        "arguments": {"path": "/tmp"},
    }


def post_chat(text: str, tenant: str = "acme") -> dict[str, Any]:
    return {"principal": principal(tenant), "model": "gpt-4o-mini", "response": text}


MULTIPART = [
    {"role": "system", "content": "You help with project bluebird."},
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "Status of project bluebird, \"quoted\" \\ é?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        ],
    },
]
MULTIPART_REDACTED = [
    {"role": "system", "content": "You help with [REDACTED]."},
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "Status of [REDACTED], \"quoted\" \\ é?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        ],
    },
]

ALLOW = {"action": "allow"}

# (case id, stage, input, expected decision document)
CASES: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = [
    ("pre_chat allow", "pre_chat", pre_chat(), ALLOW),
    (
        "pre_chat denied model for tenant",
        "pre_chat",
        pre_chat(model="gpt-4o"),
        {"action": "deny", "reason": "model gpt-4o is not allowed for tenant acme"},
    ),
    ("pre_chat model denied only elsewhere", "pre_chat", pre_chat("other", "gpt-4o"), ALLOW),
    (
        "pre_chat model denied for every tenant",
        "pre_chat",
        pre_chat("other", "banned-model"),
        {"action": "deny", "reason": "model banned-model is not allowed for tenant other"},
    ),
    (
        "pre_chat model outside tenant allow-list",
        "pre_chat",
        pre_chat("restricted", "big"),
        {
            "action": "deny",
            "reason": "model big is not in the allowed models of tenant restricted",
        },
    ),
    ("pre_chat model inside allow-list", "pre_chat", pre_chat("restricted", "small"), ALLOW),
    (
        "pre_chat blocked tool",
        "pre_chat",
        pre_chat(tools=[tool("search"), tool("shell")]),
        {"action": "deny", "reason": "tool shell is blocked"},
    ),
    ("pre_chat harmless tools", "pre_chat", pre_chat(tools=[tool("search")]), ALLOW),
    (
        "pre_chat denied phrase in a text part, any case",
        "pre_chat",
        pre_chat(messages=[{"role": "user", "content": [{"type": "text", "text": "LAUNCH Codes?"}]}
                           ]),
        {"action": "deny", "reason": "messages contain the denied phrase launch codes"},
    ),
    (
        "pre_chat several deny reasons, sorted",
        "pre_chat",
        pre_chat(model="gpt-4o", messages=[user("launch codes")], tools=[tool("shell")]),
        {
            "action": "deny",
            "reason": "messages contain the denied phrase launch codes; "
            "model gpt-4o is not allowed for tenant acme; tool shell is blocked",
        },
    ),
    (
        "pre_chat redact messages, strings and text parts",
        "pre_chat",
        pre_chat(messages=MULTIPART),
        {
            "action": "redact_messages",
            "reason": "blocked phrases redacted",
            "messages": MULTIPART_REDACTED,
        },
    ),
    (
        "pre_chat force model",
        "pre_chat",
        pre_chat("cheapco", "big"),
        {"action": "force_model", "reason": "tenant cheapco is pinned to model small",
         "model": "small"},
    ),
    (
        "pre_chat force model carries redacted messages",
        "pre_chat",
        pre_chat("cheapco", "big", messages=MULTIPART),
        {
            "action": "force_model",
            "reason": "tenant cheapco is pinned to model small",
            "model": "small",
            "messages": MULTIPART_REDACTED,
        },
    ),
    ("pre_chat already on the forced model", "pre_chat", pre_chat("cheapco", "small"), ALLOW),
    (
        "pre_tool blocked",
        "pre_tool",
        pre_tool("shell"),
        {"action": "deny", "reason": "tool shell is blocked"},
    ),
    (
        "pre_tool approval for tenant",
        "pre_tool",
        pre_tool("deploy"),
        {"action": "require_approval", "reason": "tool deploy requires approval"},
    ),
    ("pre_tool approval is per tenant", "pre_tool", pre_tool("deploy", "other"), ALLOW),
    (
        "pre_tool approval for every tenant",
        "pre_tool",
        pre_tool("send_email", "other"),
        {"action": "require_approval", "reason": "tool send_email requires approval"},
    ),
    ("pre_tool allow", "pre_tool", pre_tool("search"), ALLOW),
    ("post_chat allow", "post_chat", post_chat("All good."), ALLOW),
    (
        "post_chat redact response",
        "post_chat",
        post_chat("Project bluebird is project bluebird.\n"),
        {
            "action": "redact_response",
            "reason": "blocked phrases redacted",
            "response": "Project bluebird is [REDACTED].\n",
        },
    ),
    (
        "post_chat denied phrase",
        "post_chat",
        post_chat("Here are the Launch Codes: 0000"),
        {"action": "deny", "reason": "response contains the denied phrases launch codes"},
    ),
]
