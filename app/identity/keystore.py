"""API keys minted at run time: stored by SHA-256 digest only, in Redis or in memory.

A key looks like ``sk-tako-<43 url-safe characters>`` (32 random bytes). Its plain text is
returned once, when it is minted or rotated; afterwards tako only knows its digest. The
lookup is by digest, so a guessed key is never compared character by character against a
stored secret.

Redis layout (``prefix`` defaults to ``tako:keys``; on Redis Cluster, a ``redis+cluster://``
URL, a prefix without a hash tag becomes ``{tako:keys}`` so the multi-key updates stay in one
slot):

- ``<prefix>:<sha256>``      JSON ``KeyRecord`` (the hot-path lookup)
- ``<prefix>:id:<key_id>``   the digest of the key's current secret
- ``<prefix>:tenant:<tid>``  set of the tenant's key ids
- ``<prefix>:tenants``       set of tenants that have keys
- channel ``<prefix>:invalidate`` carries the digest of every key created, rotated or
  revoked, so every replica drops its cached copy at once.

Rotation keeps the ``key_id`` (budgets and rate limits keyed on it carry over) and revokes
the old secret; revoked secrets keep a tombstone so using one gets a clear 401.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any, Protocol

import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict, Field, field_validator
from redis.exceptions import RedisError, WatchError

from tako.core.errors import AuthenticationFailed, NotFound, Unavailable
from tako.core.types import Principal
from tako.runtime.redis_cluster import cluster_client, is_cluster_url
from tako.runtime.redis_sentinel import aclose_sentinel, is_sentinel_url, sentinel_client
from tako.runtime.settings import BudgetLimit, RateLimit

log = logging.getLogger("tako.identity.keys")

KEY_PREFIX = "sk-tako-"
_MINTED_SHAPE = re.compile(r"sk-tako-[A-Za-z0-9_-]{32,128}")
_DISPLAY_CHARS = len(KEY_PREFIX) + 4


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def mint_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def looks_minted(token: str) -> bool:
    """True for tokens shaped like keys this store mints (cheap pre-check before a lookup)."""
    return _MINTED_SHAPE.fullmatch(token) is not None


# Bounds on what a minted key may be given: budget counters are kept in nano-USD and
# tokens as 64-bit integers, so larger amounts would overflow them.
MAX_KEY_BUDGET_USD = 1e9
MAX_KEY_BUDGET_TOKENS = 10**15
MAX_KEY_RATE_PER_MINUTE = 10**9


class KeyRecord(BaseModel):
    """What tako knows about one API key: never the key, never its full digest."""

    key_id: str
    tenant_id: str
    user_id: str
    name: str | None = None
    models: list[str] | None = None
    scopes: list[str] = Field(default_factory=list)
    budgets: list[dict[str, Any]] = Field(default_factory=list)
    rate_limits: list[dict[str, Any]] = Field(default_factory=list)
    created_at: int
    rotated_at: int | None = None
    revoked: bool = False
    revoked_at: int | None = None
    prefix: str

    def principal(self) -> Principal:
        metadata: dict[str, Any] = {"auth": "api_key"}
        if self.name:
            metadata["key_name"] = self.name
        if self.budgets:
            metadata["budgets"] = [dict(b) for b in self.budgets]
        if self.rate_limits:
            metadata["rate_limits"] = [dict(r) for r in self.rate_limits]
        return Principal(
            tenant_id=self.tenant_id,
            user_id=self.user_id,
            key_id=self.key_id,
            scopes=frozenset(self.scopes),
            allowed_models=frozenset(self.models) if self.models is not None else None,
            metadata=metadata,
        )


class KeySpecIn(BaseModel):
    """What a caller chooses when minting a key. Budgets and rate limits take the runtime's
    shapes (``{"scope": "key", "period": "day", "usd": 5}``, ``{"scope": "key", "rpm": 60}``)
    and replace the configured defaults for the same scope (and period)."""

    model_config = ConfigDict(extra="forbid")

    tenant_id: str = Field(min_length=1, max_length=200)
    user_id: str = Field(min_length=1, max_length=200)
    name: str | None = Field(default=None, max_length=200)
    models: list[str] | None = None
    scopes: list[str] = Field(default_factory=list)
    budgets: list[BudgetLimit] = Field(default_factory=list)
    rate_limits: list[RateLimit] = Field(default_factory=list)

    @field_validator("budgets")
    @classmethod
    def _budgets_within_bounds(cls, budgets: list[BudgetLimit]) -> list[BudgetLimit]:
        for budget in budgets:
            if budget.usd is not None and not (math.isfinite(budget.usd)
                                               and budget.usd <= MAX_KEY_BUDGET_USD):
                raise ValueError(f"usd must be a finite amount of at most "
                                 f"{MAX_KEY_BUDGET_USD:,.0f}")
            if budget.tokens is not None and budget.tokens > MAX_KEY_BUDGET_TOKENS:
                raise ValueError(f"tokens must be at most {MAX_KEY_BUDGET_TOKENS:,}")
        return budgets

    @field_validator("rate_limits")
    @classmethod
    def _rates_within_bounds(cls, limits: list[RateLimit]) -> list[RateLimit]:
        for limit in limits:
            if max(limit.rpm or 0, limit.tpm or 0) > MAX_KEY_RATE_PER_MINUTE:
                raise ValueError(f"rpm and tpm must be at most {MAX_KEY_RATE_PER_MINUTE:,}")
        return limits


class MintedKey(BaseModel):
    """A freshly minted secret (shown once) and its record."""

    key: str
    record: KeyRecord


class KeyStore(Protocol):
    async def create(self, spec: KeySpecIn) -> MintedKey: ...

    async def rotate(self, key_id: str) -> MintedKey: ...

    async def revoke(self, key_id: str) -> KeyRecord: ...

    async def get(self, key_id: str) -> KeyRecord | None: ...

    async def list_keys(self, tenant_id: str | None = None) -> list[KeyRecord]: ...

    async def lookup(self, digest: str) -> KeyRecord | None:
        """The record stored under a key's digest (revoked ones included), or None."""
        ...

    async def aclose(self) -> None: ...


def _now() -> int:
    return int(time.time())


def _new_record(spec: KeySpecIn, key: str) -> KeyRecord:
    return KeyRecord(key_id="key_" + secrets.token_hex(8), created_at=_now(),
                     prefix=key[:_DISPLAY_CHARS], tenant_id=spec.tenant_id,
                     user_id=spec.user_id, name=spec.name, models=spec.models,
                     scopes=spec.scopes,
                     budgets=[b.model_dump(exclude_none=True) for b in spec.budgets],
                     rate_limits=[r.model_dump(exclude_none=True) for r in spec.rate_limits])


def _unknown(key_id: str) -> NotFound:
    return NotFound(f"no API key with id {key_id!r}", param="key_id", code="key_not_found")


class MemoryKeyStore:
    """The embedded single-process store: same behaviour, lost on restart."""

    def __init__(self) -> None:
        self._by_digest: dict[str, KeyRecord] = {}
        self._digest_by_id: dict[str, str] = {}

    async def create(self, spec: KeySpecIn) -> MintedKey:
        key = mint_secret()
        record = _new_record(spec, key)
        self._by_digest[key_digest(key)] = record
        self._digest_by_id[record.key_id] = key_digest(key)
        return MintedKey(key=key, record=record)

    async def rotate(self, key_id: str) -> MintedKey:
        old_digest = self._digest_by_id.get(key_id)
        if old_digest is None:
            raise _unknown(key_id)
        now = _now()
        old = self._by_digest[old_digest]
        self._by_digest[old_digest] = old.model_copy(update={"revoked": True,
                                                             "revoked_at": now})
        key = mint_secret()
        record = old.model_copy(update={"prefix": key[:_DISPLAY_CHARS], "rotated_at": now,
                                        "revoked": False, "revoked_at": None})
        self._by_digest[key_digest(key)] = record
        self._digest_by_id[key_id] = key_digest(key)
        return MintedKey(key=key, record=record)

    async def revoke(self, key_id: str) -> KeyRecord:
        digest = self._digest_by_id.get(key_id)
        if digest is None:
            raise _unknown(key_id)
        record = self._by_digest[digest]
        if not record.revoked:
            record = record.model_copy(update={"revoked": True, "revoked_at": _now()})
            self._by_digest[digest] = record
        return record

    async def get(self, key_id: str) -> KeyRecord | None:
        digest = self._digest_by_id.get(key_id)
        return self._by_digest[digest] if digest else None

    async def list_keys(self, tenant_id: str | None = None) -> list[KeyRecord]:
        records = [self._by_digest[d] for d in self._digest_by_id.values()]
        return sorted((r for r in records if tenant_id is None or r.tenant_id == tenant_id),
                      key=lambda r: (r.tenant_id, r.created_at, r.key_id))

    async def lookup(self, digest: str) -> KeyRecord | None:
        return self._by_digest.get(digest)

    async def aclose(self) -> None:
        return None


class RedisKeyStore:
    """Keys shared by every replica through Redis. Redis errors become ``Unavailable``."""

    def __init__(self, client: aioredis.Redis, *, prefix: str = "tako:keys") -> None:
        self.client = client
        self.prefix = prefix
        self.channel = f"{prefix}:invalidate"

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "tako:keys") -> RedisKeyStore:
        """A ``redis+cluster://`` URL gives a Redis Cluster client, and a prefix without a
        hash tag is made one (``{tako:keys}``) so each update stays in one slot."""
        if is_cluster_url(url):
            tagged = prefix if "{" in prefix else f"{{{prefix}}}"
            return cls(cluster_client(url, 2.0, 64), prefix=tagged)
        if is_sentinel_url(url):  # the master the sentinels name, followed across failovers
            return cls(sentinel_client(url, 2.0, 64), prefix=prefix)
        return cls(aioredis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0),
                   prefix=prefix)

    async def subscription(self) -> Any:
        """A pub/sub connection; a cluster client learns the slot map first."""
        initialize = getattr(self.client, "initialize", None)
        if initialize is not None:
            await initialize()
        return self.client.pubsub()

    async def _announce(self, digest: str) -> None:
        """Tell every replica to drop its cached copy of ``digest``, after the change is
        stored (Redis Cluster refuses PUBLISH inside a transaction). A lost notice only
        leaves caches to expire by age, within a second."""
        try:
            await self.client.publish(self.channel, digest)
        except RedisError as exc:
            log.warning("could not announce an API key change (%s); replicas' caches "
                        "expire it within a second", type(exc).__name__)

    def _record_key(self, digest: str) -> str:
        return f"{self.prefix}:{digest}"

    def _id_key(self, key_id: str) -> str:
        return f"{self.prefix}:id:{key_id}"

    def _tenant_key(self, tenant_id: str) -> str:
        return f"{self.prefix}:tenant:{tenant_id}"

    async def create(self, spec: KeySpecIn) -> MintedKey:
        key = mint_secret()
        record = _new_record(spec, key)
        digest = key_digest(key)
        with _unavailable("minting an API key"):
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.set(self._record_key(digest), record.model_dump_json())
                pipe.set(self._id_key(record.key_id), digest)
                pipe.sadd(self._tenant_key(record.tenant_id), record.key_id)
                pipe.sadd(f"{self.prefix}:tenants", record.tenant_id)
                await pipe.execute()
        await self._announce(digest)
        return MintedKey(key=key, record=record)

    async def rotate(self, key_id: str) -> MintedKey:
        key = mint_secret()
        digest = key_digest(key)
        with _unavailable("rotating an API key"):
            async with self.client.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        await pipe.watch(self._id_key(key_id))
                        old_digest = await pipe.get(self._id_key(key_id))
                        if old_digest is None:
                            raise _unknown(key_id)
                        old_digest = _text(old_digest)
                        raw = await pipe.get(self._record_key(old_digest))
                        if raw is None:
                            raise _unknown(key_id)
                        old = KeyRecord.model_validate_json(raw)
                        now = _now()
                        revoked = old.model_copy(update={"revoked": True, "revoked_at": now})
                        record = old.model_copy(update={
                            "prefix": key[:_DISPLAY_CHARS], "rotated_at": now,
                            "revoked": False, "revoked_at": None})
                        pipe.multi()  # type: ignore[no-untyped-call]
                        pipe.set(self._record_key(old_digest), revoked.model_dump_json())
                        pipe.set(self._record_key(digest), record.model_dump_json())
                        pipe.set(self._id_key(key_id), digest)
                        await pipe.execute()
                        await self._announce(old_digest)
                        return MintedKey(key=key, record=record)
                    except WatchError:
                        continue

    async def revoke(self, key_id: str) -> KeyRecord:
        with _unavailable("revoking an API key"):
            async with self.client.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        await pipe.watch(self._id_key(key_id))
                        digest = await pipe.get(self._id_key(key_id))
                        if digest is None:
                            raise _unknown(key_id)
                        digest = _text(digest)
                        raw = await pipe.get(self._record_key(digest))
                        if raw is None:
                            raise _unknown(key_id)
                        record = KeyRecord.model_validate_json(raw)
                        if not record.revoked:
                            record = record.model_copy(update={"revoked": True,
                                                               "revoked_at": _now()})
                        pipe.multi()  # type: ignore[no-untyped-call]
                        pipe.set(self._record_key(digest), record.model_dump_json())
                        await pipe.execute()
                        await self._announce(digest)
                        return record
                    except WatchError:
                        continue

    async def get(self, key_id: str) -> KeyRecord | None:
        with _unavailable("reading an API key"):
            digest = await self.client.get(self._id_key(key_id))
            if digest is None:
                return None
            return await self.lookup(_text(digest))

    async def list_keys(self, tenant_id: str | None = None) -> list[KeyRecord]:
        with _unavailable("listing API keys"):
            if tenant_id is None:
                tenants = sorted(_text(t) for t in
                                 await self.client.smembers(f"{self.prefix}:tenants"))
            else:
                tenants = [tenant_id]
            ids: list[str] = []
            for tenant in tenants:
                ids += sorted(_text(i) for i in
                              await self.client.smembers(self._tenant_key(tenant)))
            if not ids:
                return []
            digests = await self.client.mget([self._id_key(i) for i in ids])
            found = [_text(d) for d in digests if d is not None]
            raws = await self.client.mget([self._record_key(d) for d in found]) if found else []
        records = [KeyRecord.model_validate_json(r) for r in raws if r is not None]
        return sorted(records, key=lambda r: (r.tenant_id, r.created_at, r.key_id))

    async def lookup(self, digest: str) -> KeyRecord | None:
        with _unavailable("checking an API key"):
            raw = await self.client.get(self._record_key(digest))
        return KeyRecord.model_validate_json(raw) if raw is not None else None

    async def aclose(self) -> None:
        await aclose_sentinel(self.client)  # a plain client's close, plus its sentinels'


def _text(value: bytes | str) -> str:
    """Redis replies are bytes, or str on clients made with ``decode_responses=True``."""
    return value.decode() if isinstance(value, bytes) else value


@contextlib.contextmanager
def _unavailable(action: str) -> Iterator[None]:
    try:
        yield
    except RedisError as exc:
        raise Unavailable(f"the API key store (Redis) is unreachable while {action}: "
                          f"{type(exc).__name__}", code="keystore_unavailable") from exc


_REVOKED = object()


class KeyStoreResolver:
    """AuthResolver for minted keys: unknown tokens give None, revoked ones a 401."""

    def __init__(self, store: KeyStore) -> None:
        self.store = store

    async def resolve(self, token: str) -> Principal | None:
        if not looks_minted(token):
            return None
        return _outcome(await self.store.lookup(key_digest(token)))

    async def aclose(self) -> None:
        return None


def _outcome(found: Any) -> Principal | None:
    if found is _REVOKED or (isinstance(found, KeyRecord) and found.revoked):
        raise AuthenticationFailed("this API key has been revoked", code="revoked_api_key")
    if isinstance(found, KeyRecord):
        return found.principal()
    return found if isinstance(found, Principal) else None


class RedisKeyResolver:
    """AuthResolver for keys kept in Redis, with a small per-replica cache.

    A cached answer lives at most ``cache_ttl_s`` (1 s by default, never more), and is
    dropped at once when any replica publishes a change for that key, so a revocation
    holds on every replica within one second even while the notification channel is down.
    """

    def __init__(self, store: RedisKeyStore, *, cache_ttl_s: float = 1.0,
                 cache_size: int = 10_000, subscribe: bool = True) -> None:
        if not 0 <= cache_ttl_s <= 1.0:
            raise ValueError("cache_ttl_s must be within [0, 1] seconds")
        self.store = store
        self._ttl = cache_ttl_s
        self._size = cache_size
        self._cache: OrderedDict[str, tuple[float, Any]] = OrderedDict()
        self._subscribe = subscribe
        self._listener: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._generation = 0  # bumped by every invalidation
        self.lookups = 0

    async def start(self) -> None:
        """Begin listening for invalidations; returns once the subscription is active."""
        if not self._subscribe:
            return
        if self._listener is None or self._listener.done():
            self._subscribed.clear()
            self._listener = asyncio.create_task(self._listen(), name="tako-key-invalidations")
        await self.wait_subscribed(within_s=2.0)

    async def wait_subscribed(self, within_s: float) -> bool:
        """True once the invalidation channel is live (False after ``within_s`` seconds)."""
        try:
            await asyncio.wait_for(self._subscribed.wait(), timeout=within_s)
        except TimeoutError:
            return False
        return True

    async def resolve(self, token: str) -> Principal | None:
        if not looks_minted(token):
            return None
        if self._subscribe and self._listener is None:
            self._subscribed.clear()
            self._listener = asyncio.create_task(self._listen(), name="tako-key-invalidations")
        digest = key_digest(token)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            return _outcome(hit[1])
        self.lookups += 1
        generation = self._generation
        record = await self.store.lookup(digest)
        value: Any = record.principal() if record and not record.revoked else (
            _REVOKED if record else None)
        # An invalidation that lands while the lookup is in flight may describe a newer
        # state than the answer read: use the answer once, do not cache it.
        if self._ttl > 0 and generation == self._generation:
            self._cache[digest] = (now + self._ttl, value)
            self._cache.move_to_end(digest)
            while len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return _outcome(value)

    def invalidate(self, digest: str | None = None) -> None:
        self._generation += 1
        if digest is None:
            self._cache.clear()
        else:
            self._cache.pop(digest, None)

    async def _listen(self) -> None:
        backoff = 0.1
        while True:
            pubsub: Any = None
            try:
                pubsub = await self.store.subscription()
                await pubsub.subscribe(self.store.channel)
                while True:
                    message = await pubsub.get_message(timeout=5.0)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        self.invalidate()  # anything missed while unsubscribed is gone
                        self._subscribed.set()
                        backoff = 0.1
                    elif message["type"] == "message":
                        self.invalidate(_text(message["data"]))
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                self._subscribed.clear()
                log.warning("API key invalidation channel lost (%s); cached keys now "
                            "expire by age only, reconnecting", type(exc).__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()

    async def aclose(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
            self._listener = None
