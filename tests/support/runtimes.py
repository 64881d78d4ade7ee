"""Runtimes for the runtime tests, on the in-memory backend or on a real Redis, and a
recorder of the events a runtime reports."""

from __future__ import annotations

import itertools
from typing import Any

from tako.runtime import Runtime, RuntimeSettings

_prefixes = itertools.count()


class RecordedEvents:
    """The runtime's event sink, keeping every rejection, unaccounted spend, breaker
    transition and retry it is told of."""

    def __init__(self) -> None:
        self.rejections: list[str] = []
        self.unaccounted: list[float] = []
        self.breaker: list[tuple[str, str]] = []
        self.retries: list[str] = []

    def rejected(self, kind: str) -> None:
        self.rejections.append(kind)

    def unaccounted_spend(self, usd: float) -> None:
        self.unaccounted.append(usd)

    def breaker_state(self, deployment: str, state: str) -> None:
        self.breaker.append((deployment, state))

    def retried(self, deployment: str) -> None:
        self.retries.append(deployment)


def fresh_key_prefix(stem: str = "t") -> str:
    """A key prefix no other test in this process uses."""
    return f"{stem}{next(_prefixes)}"


async def started_runtime(backend: str, redis_url: str | None, prefix: str,
                          events: Any = None, **fields: Any) -> Runtime:
    """A started runtime on ``backend`` with fast retries and a generous Redis timeout
    unless ``fields`` (RuntimeSettings fields) say otherwise."""
    fields.setdefault("retry", {"base_delay_s": 0.001, "max_delay_s": 0.005})
    # a loaded test machine can stall the event loop well past the 0.5 s default
    fields.setdefault("redis_timeout_s", 5.0)
    settings = RuntimeSettings.model_validate(
        {"backend": backend, "redis_url": redis_url, "key_prefix": prefix, **fields})
    runtime = Runtime.from_settings(settings, events)
    await runtime.start()
    return runtime
