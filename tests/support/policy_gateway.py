"""A gateway guarded by the policy tests' policies and PII guards, on the embedded engine
or on an OPA-compatible REST server, with an ``http-generic`` deployment ``scripted``
in front of a fake upstream."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tests.support.gateway import Gateway, basic_config, gateway
from tests.support.net import serve_asgi
from tests.support.opa_compat import OpaCompatibleApp

POLICY_DATA: dict[str, Any] = {
    "denied_models": {"acme": ["echo-slow"]},
    "forced_models": {"forced-co": "echo-b"},
    "blocked_phrases": ["project bluebird"],
    "denied_phrases": ["launch codes"],
    "blocked_tools": ["calculator"],
    "approval_tools": {"*": ["current_time"]},
    "redaction_text": "[REDACTED]",
}
PII = {"request": {"mode": "redact", "kinds": ["email"]},
       "response": {"mode": "mask", "kinds": ["aws_access_key_id", "credit_card"]}}


class WithHealth:
    """The OPA-compatible app plus OPA's ``/health``."""

    def __init__(self, inner: OpaCompatibleApp) -> None:
        self.inner = inner

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/health":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"{}"})
            return
        await self.inner(scope, receive, send)


def policy_config(upstream_url: str) -> dict[str, Any]:
    """The test config plus a forced-model tenant, ``echo-b``, ``scripted`` (at
    ``upstream_url``) and the ``echo-time`` profile; no policy yet."""
    cfg = basic_config()
    cfg["auth"]["keys"].append({"key": "sk-test-forced", "key_id": "forced",
                                "tenant_id": "forced-co", "user_id": "fay"})
    cfg["deployments"] += [
        {"name": "echo-b", "provider": "echo", "model": "echo-b"},
        {"name": "scripted", "provider": "http-generic", "model": "m",
         "base_url": upstream_url + "/v1"},
    ]
    cfg["profiles"].append({"name": "echo-time", "kind": "single",
                            "params": {"deployment": "echo", "tools": ["current_time"]}})
    return cfg


@contextmanager
def policy_gateway(engine: str, upstream_url: str) -> Iterator[Gateway]:
    """A gateway deciding with ``engine``: ``embedded`` or ``opa`` (over REST)."""
    cfg = policy_config(upstream_url)
    if engine == "embedded":
        cfg["policy"] = {"mode": "embedded", "data": POLICY_DATA, "pii": PII}
        with gateway(cfg) as g:
            yield g
        return
    with serve_asgi(WithHealth(OpaCompatibleApp(POLICY_DATA))) as opa_url:
        cfg["policy"] = {"mode": "opa", "opa_url": opa_url, "timeout_s": 2.0, "pii": PII}
        with gateway(cfg) as g:
            yield g
