"""The configuration gateway replicas sharing one Redis run with, and the request they
send."""

from __future__ import annotations

from typing import Any

from tests.support.gateway import TEST_KEY

PRICE = {"input": 1000.0, "output": 1000.0}  # $0.001 per token: spend is easy to see


def config(redis_url: str, prefix: str, **runtime: Any) -> dict[str, Any]:
    return {
        "auth": {"keys": [{"key": TEST_KEY, "key_id": "alpha", "tenant_id": "acme",
                           "user_id": "ann"}]},
        "deployments": [{"name": "echo", "provider": "echo", "model": "echo", "price": PRICE}],
        "runtime": {"backend": "redis", "redis_url": redis_url, "key_prefix": prefix,
                    **runtime},
    }


BODY = {"model": "echo", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}
