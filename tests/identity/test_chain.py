"""ChainResolver: first principal wins; a rejection or an outage ends the chain."""

from __future__ import annotations

import time

import pytest

from tako.app.identity.chain import ChainResolver
from tako.app.identity.jwt_resolver import JwtResolver
from tako.app.identity.keystore import KeySpecIn, KeyStoreResolver, MemoryKeyStore
from tako.core.errors import AuthenticationFailed, Unavailable
from tako.core.types import Principal
from tests.support.jwt_tokens import AUDIENCE, HS_SECRET, ISSUER, claims, rsa_pair, sign
from tests.support.net import free_port

RSA = rsa_pair()


class AcceptsEverything:
    """A last resolver that would let any token in, and counts how often it was asked."""

    def __init__(self) -> None:
        self.asked = 0

    async def resolve(self, token: str) -> Principal | None:
        self.asked += 1
        return Principal(tenant_id="anyone", user_id="anyone", key_id="anyone")


def _hs_jwt() -> JwtResolver:
    return JwtResolver([{"issuer": ISSUER, "audience": AUDIENCE, "algorithms": ["HS256"],
                         "secret": HS_SECRET}])


async def test_first_recognising_resolver_wins() -> None:
    store = MemoryKeyStore()
    minted = await store.create(KeySpecIn(tenant_id="acme", user_id="alice"))
    tail = AcceptsEverything()
    jwt_resolver = _hs_jwt()
    chain = ChainResolver([KeyStoreResolver(store), jwt_resolver, tail])
    by_key = await chain.resolve(minted.key)
    by_jwt = await chain.resolve(sign(claims(sub="bob"), HS_SECRET, "HS256"))
    assert by_key is not None and by_key.key_id == minted.record.key_id
    assert by_jwt is not None and by_jwt.user_id == "bob"
    assert tail.asked == 0
    anyone = await chain.resolve("something-else")
    assert anyone is not None and anyone.tenant_id == "anyone"
    assert tail.asked == 1
    await jwt_resolver.aclose()


async def test_rejection_by_a_recognising_resolver_ends_the_chain() -> None:
    tail = AcceptsEverything()
    jwt_resolver = _hs_jwt()
    chain = ChainResolver([jwt_resolver, tail])
    expired = sign(claims(exp=int(time.time()) - 3600), HS_SECRET, "HS256")
    with pytest.raises(AuthenticationFailed, match="expired"):
        await chain.resolve(expired)
    store = MemoryKeyStore()
    minted = await store.create(KeySpecIn(tenant_id="acme", user_id="alice"))
    await store.revoke(minted.record.key_id)
    with pytest.raises(AuthenticationFailed, match="revoked"):
        await ChainResolver([KeyStoreResolver(store), tail]).resolve(minted.key)
    assert tail.asked == 0
    await jwt_resolver.aclose()


async def test_outage_propagates_instead_of_passing_or_denying() -> None:
    tail = AcceptsEverything()
    jwt_resolver = JwtResolver([{"issuer": ISSUER, "audience": AUDIENCE,
                                 "algorithms": ["RS256"],
                                 "jwks_url": f"http://127.0.0.1:{free_port()}/jwks"}])
    chain = ChainResolver([jwt_resolver, tail])
    with pytest.raises(Unavailable):
        await chain.resolve(sign(claims(), RSA.private_pem, "RS256", "k1"))
    assert tail.asked == 0
    await jwt_resolver.aclose()


async def test_a_token_nobody_knows_resolves_to_none() -> None:
    chain = ChainResolver([KeyStoreResolver(MemoryKeyStore())])
    assert await chain.resolve("sk-tako-" + "x" * 43) is None
