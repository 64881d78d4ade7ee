"""Water-marks only ever grow, whoever writes them and in whatever order."""

from __future__ import annotations

import asyncio
import random


async def test_raise_to_is_monotonic_under_concurrency(make_runtime, backend):
    first = await make_runtime()
    stores = [first.state_store]
    if backend == "redis":
        stores.append((await make_runtime()).state_store)
    assert await first.state_store.get("mark") is None
    rng = random.Random(5)
    values = [rng.uniform(0, 1000) for _ in range(300)]

    async def write(i: int, value: float) -> tuple[float, float]:
        return value, await stores[i % len(stores)].raise_to("mark", value)

    results = await asyncio.gather(*(write(i, v) for i, v in enumerate(values)))
    assert all(stored >= value for value, stored in results)
    assert await first.state_store.get("mark") == max(values)
    assert await stores[-1].raise_to("mark", 1.5) == max(values)
    assert await first.state_store.raise_to("mark", 5000.25) == 5000.25
    assert await stores[-1].get("mark") == 5000.25
