"""A profile of every orchestrator kind with all of its deployments on one model, ``m``,
and room to loop (many turns, deep recursion, many calls)."""

from __future__ import annotations

from typing import Any

PROFILES: dict[str, dict[str, Any]] = {
    "conductor": {"coordinator": "m", "workers": ["m"]},
    "trinity": {"roles": {"thinker": "m", "worker": "m", "verifier": "m"}, "max_turns": 20},
    "selfcaller": {"inner": {"kind": "single", "params": {"deployment": "m"}},
                   "verifier": {"kind": "llm", "deployment": "m"}, "max_depth": 20,
                   "threshold": 0.99},
    "abmcts": {"workers": ["m"], "verifier": {"kind": "llm", "deployment": "m"},
               "max_calls": 50, "batch_size": 1},
}
