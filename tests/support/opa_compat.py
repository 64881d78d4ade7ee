"""An OPA-compatible REST data API (``POST /v1/data/<path>``) for tests.

It is backed by the embedded engine's compiled policy, so the OPA engine can be compared
with the embedded one decision for decision, and it can be made slow or broken.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from tako.policies.bundle import load_modules, policy_data
from tako.policies.decision import STAGES
from tako.policies.embedded import CompiledPolicy

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def _read_body(receive: Receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def _send_json(send: Send, status: int, payload: Any) -> None:
    body = orjson.dumps(payload)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


class OpaCompatibleApp:
    """Serves ``/v1/data/tako/<stage>/decision`` like OPA with tako's policies loaded."""

    def __init__(self, config: dict[str, Any], delay_s: float = 0.0, status: int = 200,
                 omit_result: bool = False) -> None:
        self.policy = CompiledPolicy(load_modules(), policy_data(config))
        self.delay_s = delay_s
        self.status = status
        self.omit_result = omit_result
        self.requests: list[dict[str, Any]] = []

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = await _read_body(receive)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        path = scope["path"]
        prefix, suffix = "/v1/data/tako/", "/decision"
        stage = path[len(prefix):-len(suffix)]
        if scope["method"] != "POST" or not path.startswith(prefix) or stage not in STAGES:
            await _send_json(send, 404, {"code": "resource_not_found", "message": path})
            return
        if self.status != 200:
            await _send_json(send, self.status, {"code": "internal_error", "message": "boom"})
            return
        document = orjson.loads(body)
        self.requests.append(document)
        result = self.policy.evaluate_result(stage, document["input"])
        if result is None or self.omit_result:
            await _send_json(send, 200, {})
            return
        await _send_json(send, 200, {"result": result})
