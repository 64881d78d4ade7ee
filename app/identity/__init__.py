"""Who is calling: JWTs from trusted issuers and API keys minted through the admin API.

``build_identity`` turns ``auth`` settings into the key store the admin API manages and the
resolvers the gateway asks, in order, after its static config keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tako.app.config import AuthSettings
from tako.app.identity.chain import ChainResolver
from tako.app.identity.jwt_resolver import JwksCache, JwtIssuer, JwtResolver
from tako.app.identity.keystore import (
    KeyRecord,
    KeySpecIn,
    KeyStore,
    KeyStoreResolver,
    MemoryKeyStore,
    MintedKey,
    RedisKeyResolver,
    RedisKeyStore,
    key_digest,
    looks_minted,
    mint_secret,
)
from tako.core.protocols import AuthResolver

__all__ = [
    "ChainResolver", "Identity", "JwksCache", "JwtIssuer", "JwtResolver", "KeyRecord",
    "KeySpecIn", "KeyStore", "KeyStoreResolver", "MemoryKeyStore", "MintedKey",
    "RedisKeyResolver", "RedisKeyStore", "build_identity", "key_digest", "looks_minted",
    "mint_secret",
]


@dataclass
class Identity:
    """The key store and the resolvers built from settings; ``start`` and ``aclose`` follow
    the app's lifespan."""

    store: KeyStore
    resolvers: list[AuthResolver] = field(default_factory=list)

    async def start(self) -> None:
        for resolver in self.resolvers:
            if isinstance(resolver, RedisKeyResolver):
                await resolver.start()

    async def aclose(self) -> None:
        for resolver in self.resolvers:
            if isinstance(resolver, (RedisKeyResolver, JwtResolver)):
                await resolver.aclose()
        await self.store.aclose()


def build_identity(auth: AuthSettings, *, redis_url: str | None = None,
                   key_prefix: str = "tako:keys") -> Identity:
    """Stored keys (Redis when ``auth.redis_keys``, else in memory), then JWT issuers."""
    resolvers: list[AuthResolver] = []
    store: KeyStore
    if auth.redis_keys:
        if not redis_url:
            raise ValueError("auth.redis_keys is on but no Redis URL is configured "
                             "(runtime.redis_url)")
        redis_store = RedisKeyStore.from_url(redis_url, prefix=key_prefix)
        store = redis_store
        resolvers.append(RedisKeyResolver(redis_store))
    else:
        store = MemoryKeyStore()
        resolvers.append(KeyStoreResolver(store))
    if auth.jwt:
        resolvers.append(JwtResolver(auth.jwt))
    return Identity(store=store, resolvers=resolvers)
