"""The order in which a call tries an alias's deployments."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def attempt_order(items: Sequence[T], weights: Sequence[float] | None,
                  rng: random.Random) -> list[T]:
    """As listed, or a weighted random order (each position drawn without replacement in
    proportion to weight: the heaviest deployment is most often first)."""
    if weights is None:
        return list(items)
    if len(weights) != len(items):
        raise ValueError("one weight per deployment is needed")
    keyed = []
    for item, weight in zip(items, weights, strict=True):
        if weight <= 0:
            keyed.append((-1.0, item))
        else:
            keyed.append((rng.random() ** (1.0 / weight), item))
    keyed.sort(key=lambda pair: pair[0], reverse=True)
    return [item for _, item in keyed]
