"""Model prices from ``prices.json``; a deployment's own ``price`` overrides the table."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from tako.core.specs import DeploymentSpec, Price

_TABLE_PATH = Path(__file__).with_name("prices.json")


@cache
def _table() -> dict[str, Price]:
    raw = json.loads(_TABLE_PATH.read_text())
    return {name: Price(**value) for name, value in raw.items() if not name.startswith("_")}


def price_for(spec: DeploymentSpec) -> Price:
    if spec.price is not None:
        return spec.price
    table = _table()
    if spec.model in table:
        return table[spec.model]
    # Dated or regional variants ("gpt-4o-2024-08-06", "eu.anthropic...") price as their base.
    matches = [name for name in table if name in spec.model]
    if matches:
        return table[max(matches, key=len)]
    return Price()
