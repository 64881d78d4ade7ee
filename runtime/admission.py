"""What an admitted request carries through its life: its reservations, the rate-limit
headers to send back, and the time spent waiting on upstreams."""

from __future__ import annotations

from dataclasses import dataclass, field

from tako.core.types import Principal, Usage
from tako.runtime.plan import Plan


@dataclass(slots=True, eq=False)
class Reservation:
    """Budget held for one upstream call until it is settled with the actual cost."""

    usd_nano: int
    tokens: int
    counters: list[tuple[str, str, int]]  # (counter key, usd|tok, ttl_s)
    tpm_tokens: int  # tokens charged to the tpm buckets when reserved
    unaccounted: bool = False
    settled: bool = False


@dataclass(slots=True, eq=False)
class Admission:
    principal: Principal
    model: str
    est_tokens: int
    est_cost_usd: float
    plan: Plan
    headers: dict[str, str] = field(default_factory=dict)
    upstream_seconds: float = 0.0
    cost_usd: float = 0.0  # settled spend of every call so far
    request_usd: float = 0.0  # held or settled within this request (per-request budgets)
    request_tokens: int = 0
    unaccounted: bool = False  # admitted while the state store was unreachable (fail_open)
    first: Reservation | None = None
    # charged from an estimate because the upstream reported no usage (a stream cut short,
    # or one that ended without usage): the request's record adds it to what it reports
    estimated: Usage = field(default_factory=Usage)

    def take_first(self) -> Reservation | None:
        """The admission's reservation, handed to the first upstream call only."""
        first, self.first = self.first, None
        return first


def duration(ms: float) -> str:
    """OpenAI's reset format: ``20ms``, ``1.5s``, ``6m0s``."""
    if ms < 1000:
        return f"{max(0, round(ms))}ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.3g}s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{rest:.0f}s"
