"""Loud but bounded logging while the shared state store is unreachable."""

from __future__ import annotations

import logging
import time

log = logging.getLogger("tako.runtime")


class OutageLog:
    """Logs a warning at once, then at most every ``every_s`` with the count since."""

    def __init__(self, every_s: float = 5.0) -> None:
        self.every_s = every_s
        self._last = 0.0
        self._suppressed = 0

    def warn(self, what: str, cause: str) -> None:
        now = time.monotonic()
        if now - self._last < self.every_s:
            self._suppressed += 1
            return
        extra = f" ({self._suppressed} more since the last warning)" if self._suppressed else ""
        log.warning("Redis unreachable (%s): %s%s", cause, what, extra)
        self._last = now
        self._suppressed = 0
