"""Minted API keys: create, resolve, rotate, revoke; in memory and on a real Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tako.app.identity.keystore import (
    KeySpecIn,
    KeyStore,
    KeyStoreResolver,
    RedisKeyResolver,
    RedisKeyStore,
    key_digest,
    looks_minted,
)
from tako.core.errors import NotFound, Unavailable
from tests.support.keystores import MakeRedisStore
from tests.support.redis_server import redis_server
from tests.support.waiting import until_rejected

SPEC = KeySpecIn(tenant_id="acme", user_id="alice", name="ci bot", models=["echo"],
                 scopes=["chat"], budgets=[{"scope": "key", "period": "day", "usd": 5}],
                 rate_limits=[{"scope": "key", "rpm": 60}])


@pytest.fixture
async def resolver(store: KeyStore) -> AsyncIterator[Any]:
    made: KeyStoreResolver | RedisKeyResolver
    if isinstance(store, RedisKeyStore):
        made = RedisKeyResolver(store)
        await made.start()
    else:
        made = KeyStoreResolver(store)
    yield made
    await made.aclose()


async def test_minted_key_resolves_to_its_principal(store: KeyStore, resolver: Any) -> None:
    minted = await store.create(SPEC)
    assert minted.key.startswith("sk-tako-") and len(minted.key) >= len("sk-tako-") + 43
    assert looks_minted(minted.key)
    assert minted.record.prefix == minted.key[:12]
    principal = await resolver.resolve(minted.key)
    assert principal is not None
    assert (principal.tenant_id, principal.user_id, principal.key_id) == (
        "acme", "alice", minted.record.key_id)
    assert principal.allowed_models == frozenset({"echo"})
    assert principal.scopes == frozenset({"chat"})
    assert principal.metadata["budgets"] == [{"scope": "key", "period": "day", "usd": 5}]
    assert principal.metadata["rate_limits"] == [{"scope": "key", "rpm": 60}]


async def test_unknown_and_foreign_tokens_are_not_recognised(store: KeyStore,
                                                             resolver: Any) -> None:
    await store.create(SPEC)
    assert await resolver.resolve("sk-tako-" + "A" * 43) is None
    assert await resolver.resolve("sk-tako-demo") is None
    assert await resolver.resolve("eyJhbGciOi.x.y") is None


async def test_rotation_keeps_the_key_id_and_revokes_the_old_secret(store: KeyStore,
                                                                    resolver: Any) -> None:
    first = await store.create(SPEC)
    assert await resolver.resolve(first.key) is not None
    second = await store.rotate(first.record.key_id)
    assert second.key != first.key
    assert second.record.key_id == first.record.key_id
    assert second.record.rotated_at is not None
    await until_rejected(resolver, first.key, "revoked")
    principal = await resolver.resolve(second.key)
    assert principal is not None and principal.key_id == first.record.key_id


async def test_revoked_key_is_refused_and_listed_as_revoked(store: KeyStore,
                                                            resolver: Any) -> None:
    minted = await store.create(SPEC)
    assert await resolver.resolve(minted.key) is not None
    record = await store.revoke(minted.record.key_id)
    assert record.revoked and record.revoked_at is not None
    await until_rejected(resolver, minted.key, "revoked")
    listed = await store.list_keys("acme")
    assert [(r.key_id, r.revoked) for r in listed] == [(minted.record.key_id, True)]


async def test_listing_is_per_tenant_and_holds_no_secret(store: KeyStore) -> None:
    a1 = await store.create(SPEC)
    a2 = await store.create(SPEC.model_copy(update={"user_id": "bob"}))
    b1 = await store.create(SPEC.model_copy(update={"tenant_id": "globex"}))
    acme = await store.list_keys("acme")
    assert {r.key_id for r in acme} == {a1.record.key_id, a2.record.key_id}
    everyone = await store.list_keys()
    assert {r.key_id for r in everyone} == {a1.record.key_id, a2.record.key_id,
                                            b1.record.key_id}
    dumped = " ".join(r.model_dump_json() for r in everyone)
    for minted in (a1, a2, b1):
        assert minted.key not in dumped
        assert key_digest(minted.key) not in dumped
    assert await store.get(b1.record.key_id) == b1.record


async def test_unknown_key_id_is_not_found(store: KeyStore) -> None:
    with pytest.raises(NotFound):
        await store.rotate("key_missing")
    with pytest.raises(NotFound):
        await store.revoke("key_missing")
    assert await store.get("key_missing") is None


async def test_revocation_reaches_every_replica_at_once(
        make_redis_store: MakeRedisStore) -> None:
    admin_side, replica_a, replica_b = make_redis_store(), make_redis_store(), make_redis_store()
    resolvers = [RedisKeyResolver(replica_a), RedisKeyResolver(replica_b)]
    for r in resolvers:
        await r.start()
    minted = await admin_side.create(SPEC)
    for r in resolvers:
        assert await r.resolve(minted.key) is not None  # now cached on both replicas
    await admin_side.revoke(minted.record.key_id)
    delays = await asyncio.gather(*(until_rejected(r, minted.key, "revoked", within_s=0.5)
                                    for r in resolvers))
    # The cache would hold an answer for up to 1 s; the notification beats it.
    assert max(delays) < 0.5
    for r in resolvers:
        await r.aclose()


async def test_cache_alone_bounds_staleness_to_one_second(
        make_redis_store: MakeRedisStore) -> None:
    admin_side, replica = make_redis_store(), make_redis_store()
    resolver = RedisKeyResolver(replica, subscribe=False)
    minted = await admin_side.create(SPEC)
    for _ in range(20):
        assert await resolver.resolve(minted.key) is not None
    assert resolver.lookups == 1
    await admin_side.revoke(minted.record.key_id)
    await until_rejected(resolver, minted.key, "revoked", within_s=1.1)
    await resolver.aclose()


def test_cache_longer_than_a_second_is_refused(make_redis_store: MakeRedisStore) -> None:
    with pytest.raises(ValueError, match="within"):
        RedisKeyResolver(make_redis_store(), cache_ttl_s=5)


async def test_redis_outage_is_unavailable_then_recovers() -> None:
    with redis_server() as proc:
        admin_side = RedisKeyStore.from_url(proc.url, prefix="outage:keys")
        replica = RedisKeyStore.from_url(proc.url, prefix="outage:keys")
        resolver = RedisKeyResolver(replica)
        await resolver.start()
        minted = await admin_side.create(SPEC)
        proc.stop()
        with pytest.raises(Unavailable) as info:
            await resolver.resolve(minted.key)
        assert info.value.status == 503
        with pytest.raises(Unavailable):
            await admin_side.create(SPEC)
        proc.start()  # a fresh, empty server: the key is gone, and that is a plain 401 path
        deadline = time.monotonic() + 5
        while True:
            try:
                assert await resolver.resolve(minted.key) is None
                break
            except Unavailable:
                assert time.monotonic() < deadline, "resolver did not reconnect"
                await asyncio.sleep(0.05)
        # The invalidation channel reconnects too: a revocation still lands at once.
        again = await admin_side.create(SPEC)
        assert await resolver.resolve(again.key) is not None
        assert await resolver.wait_subscribed(within_s=6)
        await admin_side.revoke(again.record.key_id)
        assert await until_rejected(resolver, again.key, "revoked", within_s=0.5) < 0.5
        await resolver.aclose()
        await admin_side.aclose()
        await replica.aclose()
