"""Polling for a revocation to take effect, with a hard bound."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tako.core.errors import AuthenticationFailed


async def until_rejected(resolver: Any, key: str, reason: str, within_s: float = 1.0) -> float:
    """Seconds until ``resolver`` refuses ``key`` with ``reason``; fails after ``within_s``."""
    start = time.monotonic()
    while True:
        try:
            await resolver.resolve(key)
        except AuthenticationFailed as exc:
            assert reason in exc.message
            return time.monotonic() - start
        elapsed = time.monotonic() - start
        assert elapsed < within_s, f"key still accepted after {elapsed:.2f}s"
        await asyncio.sleep(0.01)
