"""How much the reliability runtime adds per request, in memory and on Redis.

Measures, on one principal with two rate limits (rpm, tpm) and two budgets (tenant/day,
key/month):
  admit+reconcile   Runtime.admit, then the reservation settled with a different actual cost
  guarded call      admit, guard(...).chat() through breaker and retry on an in-process
                    deployment that answers at once, reconcile
sequentially (c=1: ops/s, p50, p99) and with 16 concurrent tasks (c=16: ops/s).

    make bench-runtime
    .venv/bin/python bench/runtime_bench.py [--seconds 2] [--redis-url redis://...]

``--seconds`` (per measurement) defaults to ``$BENCH_SECONDS``, else 2. Without
--redis-url (or REDIS_URL) a throwaway redis-server is started on a free port.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tako.core.types import ChatChunk, ChatRequest, ChatResponse, Message, Principal, Usage  # noqa: E402
from tako.runtime import Runtime, RuntimeSettings  # noqa: E402

PRINCIPAL = Principal("bench-tenant", "bench-user", "bench-key")
REQUEST = ChatRequest(model="bench", messages=[Message(role="user", content="hello")],
                      max_tokens=64)


class InstantProvider:
    id = "instant"
    model = "instant-model"

    def estimate_cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens + completion_tokens) * 1e-6

    async def chat(self, req: ChatRequest) -> ChatResponse:
        return ChatResponse(id="b", model=self.model, created=0, content="ok",
                            usage=Usage(prompt_tokens=5, completion_tokens=2, cost_usd=7e-6))

    async def stream(self, req: ChatRequest) -> AsyncIterator[ChatChunk]:
        raise NotImplementedError
        yield  # pragma: no cover

    async def aclose(self) -> None:
        return None


def settings(backend: str, url: str | None) -> RuntimeSettings:
    return RuntimeSettings.model_validate({
        "backend": backend, "redis_url": url, "key_prefix": f"bench{time.time_ns()}",
        "rate_limits": [{"scope": "key", "rpm": 10**9, "tpm": 10**12}],
        "budgets": [{"scope": "tenant", "period": "day", "usd": 10**6},
                    {"scope": "key", "period": "month", "usd": 10**6}],
    })


def operations(runtime: Runtime) -> dict[str, Callable[[], Awaitable[None]]]:
    provider = InstantProvider()

    async def admit_reconcile() -> None:
        admission = await runtime.admit(PRINCIPAL, "bench", 70, 7e-5)
        first = admission.take_first()
        assert first is not None
        await runtime.accountant.settle(admission, first, 7e-6, 7)

    async def guarded_call() -> None:
        admission = await runtime.admit(PRINCIPAL, "bench", 70, 7e-5)
        await runtime.alias_provider(admission, "bench", [provider]).chat(REQUEST)

    return {"admit+reconcile": admit_reconcile, "guarded call": guarded_call}


async def sequential(op: Callable[[], Awaitable[None]],
                     seconds: float) -> tuple[float, list[float]]:
    latencies: list[float] = []
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        t0 = time.perf_counter()
        await op()
        latencies.append(time.perf_counter() - t0)
    return len(latencies) / (time.perf_counter() - started), latencies


async def concurrent(op: Callable[[], Awaitable[None]], seconds: float, tasks: int) -> float:
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await op()
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(tasks)))
    return done / (time.perf_counter() - started)


def quantile(values: list[float], q: float) -> float:
    if len(values) < 100:
        return max(values)
    return statistics.quantiles(values, n=100)[int(q * 100) - 1]


async def bench(backend: str, url: str | None, seconds: float) -> list[tuple[str, ...]]:
    runtime = Runtime.from_settings(settings(backend, url))
    await runtime.start()
    rows = []
    try:
        for name, op in operations(runtime).items():
            for _ in range(200):
                await op()  # warm up
            rate, latencies = await sequential(op, seconds)
            rate16 = await concurrent(op, seconds, 16)
            rows.append((backend, name, f"{rate:,.0f}",
                         f"{statistics.median(latencies) * 1e6:,.0f}",
                         f"{quantile(latencies, 0.99) * 1e6:,.0f}", f"{rate16:,.0f}"))
    finally:
        await runtime.aclose()
    return rows


async def main_async(url: str, seconds: float) -> None:
    rows = [("backend", "operation", "c=1 ops/s", "p50 us", "p99 us", "c=16 ops/s")]
    rows += await bench("memory", None, seconds)
    rows += await bench("redis", url, seconds)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, row in enumerate(rows):
        print("  ".join(cell.rjust(w) if j > 1 else cell.ljust(w)
                        for j, (cell, w) in enumerate(zip(row, widths, strict=True))))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float,
                        default=float(os.environ.get("BENCH_SECONDS") or 2.0))
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL"))
    args = parser.parse_args()
    if args.redis_url:
        context = nullcontext(args.redis_url)
    else:
        from tests.support.redis_server import redis_server

        context = redis_server()
    with context as server:
        url = server if isinstance(server, str) else server.url
        asyncio.run(main_async(url, args.seconds))


if __name__ == "__main__":
    main()
