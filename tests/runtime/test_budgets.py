"""Budget reservations per scope and period, reconciliation, and exhaustion."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tako.core.errors import QuotaExceeded
from tako.core.types import Principal
from tests.fakes.provider import Reply, ScriptedProvider, request

ROOT = Path(__file__).resolve().parents[2]
ALICE = Principal("acme", "alice", "key-a")
BOB = Principal("acme", "bob", "key-b")


async def test_reservation_is_replaced_by_the_actual_cost(make_runtime):
    runtime = await make_runtime(budgets=[{"scope": "tenant", "period": "day", "usd": 5},
                                          {"scope": "tenant", "period": "month", "usd": 50}])
    admission = await runtime.admit(ALICE, "m", 100, 0.4)
    assert await runtime.spend("tenant", "acme", "day", "acme") == pytest.approx(0.4)
    cheap = runtime.alias_provider(
        admission, "alias", [ScriptedProvider("d1", [Reply(usd=0.1)])])
    await cheap.chat(request())
    assert await runtime.spend("tenant", "acme", "day", "acme") == pytest.approx(0.1)
    assert await runtime.spend("tenant", "acme", "month", "acme") == pytest.approx(0.1)
    assert admission.cost_usd == pytest.approx(0.1)

    admission = await runtime.admit(ALICE, "m", 100, 0.4)
    dear = runtime.alias_provider(
        admission, "alias", [ScriptedProvider("d1", [Reply(usd=0.7)])])
    await dear.chat(request())
    assert await runtime.spend("tenant", "acme", "day", "acme") == pytest.approx(0.8)
    assert await runtime.spend("tenant", "acme", "month", "acme") == pytest.approx(0.8)


async def test_exhausted_budget_raises_quota_exceeded_not_to_be_retried(make_runtime, backend):
    from tests.support.runtimes import RecordedEvents

    events = RecordedEvents()
    runtime = await make_runtime(events, budgets=[{"scope": "user", "period": "day", "usd": 1}])
    await runtime.admit(ALICE, "m", 10, 0.4)
    await runtime.admit(ALICE, "m", 10, 0.4)
    with pytest.raises(QuotaExceeded) as denied:
        await runtime.admit(ALICE, "m", 10, 0.4)
    assert denied.value.status == 429
    assert denied.value.response_headers()["x-should-retry"] == "false"
    assert "user 'alice'" in denied.value.message and "daily" in denied.value.message
    assert events.rejections == ["budget"]
    await runtime.admit(BOB, "m", 10, 0.4)  # another user's budget is untouched
    assert await runtime.spend("user", "alice", "day", "acme") == pytest.approx(0.8)


async def test_token_budget(make_runtime):
    runtime = await make_runtime(budgets=[{"scope": "key", "period": "month", "tokens": 1000}])
    admission = await runtime.admit(ALICE, "m", 600, 0.0)
    with pytest.raises(QuotaExceeded) as denied:
        await runtime.admit(ALICE, "m", 600, 0.0)
    assert "1000 tokens" in denied.value.message
    guarded = runtime.alias_provider(
        admission, "a", [ScriptedProvider("d", [Reply(prompt=50,
                                                                          completion=50)])])
    await guarded.chat(request())  # 600 held becomes 100 used
    await runtime.admit(ALICE, "m", 600, 0.0)


async def test_release_returns_the_reservation(make_runtime):
    runtime = await make_runtime(budgets=[{"scope": "key", "period": "day", "usd": 1}])
    admission = await runtime.admit(ALICE, "m", 10, 0.9)
    with pytest.raises(QuotaExceeded):
        await runtime.admit(ALICE, "m", 10, 0.9)
    await runtime.release(admission)
    await runtime.release(admission)  # twice is harmless
    assert await runtime.spend("key", "key-a", "day", "acme") == 0
    await runtime.admit(ALICE, "m", 10, 0.9)


async def test_per_request_budget(make_runtime):
    runtime = await make_runtime(budgets=[{"scope": "key", "period": "request", "usd": 0.5}])
    with pytest.raises(QuotaExceeded) as denied:
        await runtime.admit(ALICE, "m", 10, 0.6)
    assert "this request" in denied.value.message
    admission = await runtime.admit(ALICE, "m", 10, 0.2)
    # each later call reserves its own estimate: 108 tokens at 1e-3 USD = 0.108
    worker = ScriptedProvider("w", default=Reply(usd=0.15), price_per_token=1e-3)
    guarded = runtime.alias_provider(
        admission, "a", [worker])
    await guarded.chat(request(max_tokens=100))  # the admission's 0.2, settled to 0.15
    with pytest.raises(QuotaExceeded):
        for _ in range(5):
            await guarded.chat(request(max_tokens=100))
    assert worker.calls == 3  # 0.45 spent; a fourth call's 0.108 would pass 0.5
    assert admission.cost_usd == pytest.approx(0.45)


async def test_override_budget_from_principal_metadata(make_runtime):
    runtime = await make_runtime(budgets=[{"scope": "key", "period": "day", "usd": 100}])
    tight = Principal("acme", "eve", "key-e",
                      metadata={"budgets": [{"scope": "key", "period": "day", "usd": 0.3}]})
    await runtime.admit(tight, "m", 10, 0.2)
    with pytest.raises(QuotaExceeded):
        await runtime.admit(tight, "m", 10, 0.2)
    for _ in range(3):
        await runtime.admit(ALICE, "m", 10, 0.2)


async def test_orchestrator_calls_through_one_guard_cannot_overspend(make_runtime):
    runtime = await make_runtime(budgets=[{"scope": "tenant", "period": "day", "usd": 1.0}])
    admission = await runtime.admit(ALICE, "m", 200, 0.2)
    # every call costs what was estimated for it (~105 tokens at 1e-3)
    worker = ScriptedProvider("w", default=Reply(usd=0.105), price_per_token=1e-3)
    guarded = runtime.alias_provider(
        admission, "a", [worker])

    async def call() -> bool:
        try:
            await guarded.chat(request(max_tokens=100))
            return True
        except QuotaExceeded:
            return False

    results = await asyncio.gather(*(call() for _ in range(30)))
    spent = await runtime.spend("tenant", "acme", "day", "acme")
    assert spent <= 1.0 + 1e-9
    assert sum(results) == worker.calls >= 8
    assert spent == pytest.approx(admission.cost_usd)


async def test_concurrent_admits_never_reserve_more_than_the_budget(make_runtime, backend):
    runtime = await make_runtime(budgets=[{"scope": "tenant", "period": "day", "usd": 1.0}])
    replicas = [runtime]
    if backend == "redis":
        replicas.append(await make_runtime(
            budgets=[{"scope": "tenant", "period": "day", "usd": 1.0}]))

    async def admit(i: int) -> bool:
        try:
            await replicas[i % len(replicas)].admit(ALICE, "m", 10, 0.013)
            return True
        except QuotaExceeded:
            return False

    results = await asyncio.gather(*(admit(i) for i in range(200)))
    assert sum(results) == 76  # floor(1.0 / 0.013)
    spent = await runtime.spend("tenant", "acme", "day", "acme")
    assert spent == pytest.approx(76 * 0.013)
    assert spent <= 1.0


async def test_two_processes_share_one_budget_exactly(redis_proc):
    """Two gateway processes on one Redis: 2 x 100 concurrent admits against $1."""
    import os
    import sys

    root = ROOT
    code = (
        "import asyncio, sys\n"
        "from tako.core.errors import QuotaExceeded\n"
        "from tako.core.types import Principal\n"
        "from tako.runtime import Runtime, RuntimeSettings\n"
        "async def main():\n"
        "    s = RuntimeSettings(backend='redis', redis_url=sys.argv[1], key_prefix='procs',\n"
        "        redis_timeout_s=5,\n"
        "        budgets=[{'scope': 'tenant', 'period': 'day', 'usd': 1.0}])\n"
        "    rt = Runtime.from_settings(s); await rt.start()\n"
        "    p = Principal('acme', 'alice', 'key-a')\n"
        "    print('ready', flush=True); sys.stdin.readline()\n"
        "    async def one():\n"
        "        try:\n"
        "            await rt.admit(p, 'm', 10, 0.013); return 1\n"
        "        except QuotaExceeded:\n"
        "            return 0\n"
        "    print(sum(await asyncio.gather(*(one() for _ in range(100)))))\n"
        "    await rt.aclose()\n"
        "asyncio.run(main())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(root)}
    procs = [await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, redis_proc.url, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=root)
        for _ in range(2)]
    for p in procs:  # both connected: let them admit together
        assert p.stdout is not None
        assert (await asyncio.wait_for(p.stdout.readline(), 30)).strip() == b"ready"
    outputs = await asyncio.gather(*(p.communicate(b"go\n") for p in procs))
    assert [p.returncode for p in procs] == [0, 0], [err.decode()[-2000:] for _, err in outputs]
    counts = [int(out.strip()) for out, _ in outputs]
    assert sum(counts) == 76


async def test_concurrent_calls_of_one_request_respect_the_request_budget(make_runtime):
    runtime = await make_runtime(budgets=[{"scope": "key", "period": "request", "usd": 0.5},
                                          {"scope": "key", "period": "day", "usd": 100}])
    admission = await runtime.admit(ALICE, "m", 108, 0.108)
    worker = ScriptedProvider("w", default=Reply(usd=0.108), price_per_token=1e-3)
    guarded = runtime.alias_provider(
        admission, "a", [worker])

    async def call() -> bool:
        try:
            await guarded.chat(request(max_tokens=100))
            return True
        except QuotaExceeded:
            return False

    results = await asyncio.gather(*(call() for _ in range(10)))
    # every call holds 0.108 before it starts: four fit in 0.5, a fifth would not
    assert sum(results) == worker.calls == 4
    assert admission.cost_usd <= 0.5 + 1e-9


async def test_lua_month_ids_match_the_utc_calendar(redis_proc):
    """admit.lua derives month ids from the server clock; check its calendar arithmetic
    against Python's over a century of days."""
    import datetime as dt

    from redis.asyncio import Redis

    source = (ROOT / "runtime" / "admit.lua").read_text()
    start = source.index("local function month_of")
    body = source[start:source.index("local month = month_of(day)")]
    script = body + (
        "local out = {}\n"
        "for i = 1, #ARGV do out[i] = month_of(tonumber(ARGV[i])) end\n"
        "return out\n")
    days = list(range(0, 60000, 13)) + [10956, 11016, 11017, 11045, 11046, 19782, 19783]
    client = Redis.from_url(redis_proc.url)
    try:
        months = await client.eval(script, 0, *days)
    finally:
        await client.aclose()
    epoch = dt.date(1970, 1, 1)
    expected = [(epoch + dt.timedelta(days=d)).year * 100 + (epoch + dt.timedelta(days=d)).month
                for d in days]
    assert [int(m) for m in months] == expected


async def test_spend_is_counted_per_scope_without_any_budget(make_runtime):
    runtime = await make_runtime()
    admission = await runtime.admit(ALICE, "m", 100, 0.4)
    await runtime.alias_provider(
        admission, "alias", [ScriptedProvider("d1", [Reply(usd=0.25)])]).chat(
        request())
    for scope, scope_id in (("key", "key-a"), ("user", "alice"), ("tenant", "acme")):
        for period in ("day", "month"):
            assert await runtime.spend(scope, scope_id, period, "acme") == pytest.approx(0.25)
    assert await runtime.spend("user", "bob", "day", "acme") == 0


async def test_spend_tracking_can_be_switched_off(make_runtime):
    runtime = await make_runtime(track_spend=False)
    admission = await runtime.admit(ALICE, "m", 100, 0.4)
    await runtime.alias_provider(
        admission, "alias", [ScriptedProvider("d1", [Reply(usd=0.25)])]).chat(
        request())
    assert await runtime.spend("tenant", "acme", "day", "acme") == 0
