"""JwtResolver against crafted tokens: every check must hold and every reason be clear."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import ValidationError

from tako.app.identity.jwt_resolver import JwtIssuer, JwtResolver
from tako.core.errors import AuthenticationFailed, Unavailable
from tests.support.jwt_tokens import (
    AUDIENCE,
    HS_SECRET,
    ISSUER,
    claims,
    ec_pair,
    jwks_server,
    raw_token,
    rsa_pair,
    sign,
)
from tests.support.net import free_port

RSA = rsa_pair()
RSA_OTHER = rsa_pair()
EC = ec_pair()


def issuer(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"issuer": ISSUER, "audience": AUDIENCE}
    base.update(fields)
    return base


@pytest.fixture
async def rs_resolver() -> AsyncIterator[JwtResolver]:
    resolver = JwtResolver([issuer(algorithms=["RS256"], public_key_pem=RSA.public_pem,
                                   models_claim="models",
                                   budgets=[{"scope": "user", "period": "day", "usd": 3}])])
    yield resolver
    await resolver.aclose()


async def test_valid_hs256_token_maps_claims_to_principal() -> None:
    resolver = JwtResolver([issuer(algorithms=["HS256"], secret=HS_SECRET, name="corp-sso")])
    token = sign(claims(jti="t-1"), HS_SECRET, "HS256")
    principal = await resolver.resolve(token)
    assert principal is not None
    assert (principal.tenant_id, principal.user_id) == ("acme", "alice")
    assert principal.key_id == "corp-sso:alice"
    assert principal.scopes == frozenset({"chat", "models:read"})
    assert principal.allowed_models is None
    assert principal.metadata == {"auth": "jwt", "issuer": ISSUER, "jti": "t-1"}
    await resolver.aclose()


async def test_valid_rs256_token_with_models_and_issuer_budgets(rs_resolver: JwtResolver) -> None:
    token = sign(claims(models=["gpt-4o", "echo"], scope=["a", "b"]), RSA.private_pem, "RS256")
    principal = await rs_resolver.resolve(token)
    assert principal is not None
    assert principal.allowed_models == frozenset({"gpt-4o", "echo"})
    assert principal.scopes == frozenset({"a", "b"})
    assert principal.metadata["budgets"] == [{"scope": "user", "period": "day", "usd": 3}]


async def test_valid_es256_token() -> None:
    resolver = JwtResolver([issuer(algorithms=["ES256"], public_key_pem=EC.public_pem)])
    principal = await resolver.resolve(sign(claims(sub="bob"), EC.private_pem, "ES256"))
    assert principal is not None and principal.user_id == "bob"
    await resolver.aclose()


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (claims(exp=int(time.time()) - 3600), "expired"),
        (claims(nbf=int(time.time()) + 3600), "not yet valid"),
        (claims(aud="some-other-api"), "audience"),
        (claims(aud=None), "audience"),
        (claims(exp=None), "exp"),
        (claims(tenant=None), "'tenant' claim"),
        (claims(scope=42), "'scope'"),
    ],
    ids=["expired", "not-yet-valid", "wrong-audience", "no-audience", "no-exp", "no-tenant",
         "bad-scope-claim"],
)
async def test_known_issuer_token_failing_a_check_is_rejected_with_reason(
        rs_resolver: JwtResolver, payload: dict[str, Any], reason: str) -> None:
    token = sign(payload, RSA.private_pem, "RS256")
    with pytest.raises(AuthenticationFailed) as info:
        await rs_resolver.resolve(token)
    assert reason in info.value.message
    assert token not in info.value.message
    assert info.value.status == 401


async def test_expiry_within_leeway_is_accepted(rs_resolver: JwtResolver) -> None:
    token = sign(claims(exp=int(time.time()) - 5), RSA.private_pem, "RS256")
    assert await rs_resolver.resolve(token) is not None


async def test_token_signed_with_another_key_is_rejected(rs_resolver: JwtResolver) -> None:
    token = sign(claims(), RSA_OTHER.private_pem, "RS256")
    with pytest.raises(AuthenticationFailed, match="signature verification failed"):
        await rs_resolver.resolve(token)


async def test_unknown_issuer_and_non_jwt_tokens_are_not_recognised(
        rs_resolver: JwtResolver) -> None:
    foreign = sign(claims(iss="https://elsewhere.test/"), RSA_OTHER.private_pem, "RS256")
    assert await rs_resolver.resolve(foreign) is None
    assert await rs_resolver.resolve("sk-tako-demo") is None
    assert await rs_resolver.resolve("not.a.jwt") is None
    assert await rs_resolver.resolve("a" * 20 + ".." + "b") is None


async def test_tenant_falls_back_to_the_issuer_default() -> None:
    resolver = JwtResolver([issuer(algorithms=["ES256"], public_key_pem=EC.public_pem,
                                   tenant_id="employees", tenant_claim="org")])
    principal = await resolver.resolve(sign(claims(), EC.private_pem, "ES256"))
    assert principal is not None and principal.tenant_id == "employees"
    with_org = await resolver.resolve(sign(claims(org="research"), EC.private_pem, "ES256"))
    assert with_org is not None and with_org.tenant_id == "research"
    await resolver.aclose()


async def test_alg_none_is_rejected(rs_resolver: JwtResolver) -> None:
    for alg in ("none", "None", "NONE"):
        token = raw_token({"alg": alg, "typ": "JWT"}, claims(), hmac_key=None)
        with pytest.raises(AuthenticationFailed, match="alg none"):
            await rs_resolver.resolve(token)


async def test_unknown_critical_header_is_rejected() -> None:
    resolver = JwtResolver([issuer(algorithms=["HS256"], secret=HS_SECRET)])
    token = raw_token({"alg": "HS256", "crit": ["exp-v2"], "exp-v2": 1}, claims(),
                      hmac_key=HS_SECRET.encode())
    with pytest.raises(AuthenticationFailed, match="critical header"):
        await resolver.resolve(token)
    await resolver.aclose()


async def test_hs256_signed_with_the_rsa_public_key_is_rejected(rs_resolver: JwtResolver) -> None:
    forged = raw_token({"alg": "HS256", "typ": "JWT"}, claims(),
                       hmac_key=RSA.public_pem.encode())
    with pytest.raises(AuthenticationFailed, match="HS256 is not allowed"):
        await rs_resolver.resolve(forged)


async def test_rs256_token_is_rejected_by_an_hmac_issuer() -> None:
    resolver = JwtResolver([issuer(algorithms=["HS256"], secret=HS_SECRET)])
    with pytest.raises(AuthenticationFailed, match="RS256 is not allowed"):
        await resolver.resolve(sign(claims(), RSA.private_pem, "RS256"))
    await resolver.aclose()


def test_issuer_config_is_validated() -> None:
    with pytest.raises(ValidationError, match="one family"):
        JwtIssuer.model_validate(issuer(algorithms=["HS256", "RS256"], secret=HS_SECRET))
    with pytest.raises(ValidationError, match="not jwks_url"):
        JwtIssuer.model_validate(issuer(algorithms=["HS256"], secret=HS_SECRET,
                                        jwks_url="http://x/jwks"))
    with pytest.raises(ValidationError, match="at least 32 bytes"):
        JwtIssuer.model_validate(issuer(algorithms=["HS256"], secret="short"))
    with pytest.raises(ValidationError, match="exactly one of"):
        JwtIssuer.model_validate(issuer(algorithms=["RS256"]))
    with pytest.raises(ValidationError, match="unsupported"):
        JwtIssuer.model_validate(issuer(algorithms=["none"], secret=HS_SECRET))
    with pytest.raises(ValueError, match="does not fit"):
        JwtResolver([issuer(algorithms=["ES256"], public_key_pem=RSA.public_pem)])
    with pytest.raises(ValidationError, match="period"):
        JwtIssuer.model_validate(issuer(algorithms=["HS256"], secret=HS_SECRET,
                                        budgets=[{"scope": "user", "period": "week", "usd": 1}]))


def _jwks_issuer(url: str, **fields: Any) -> dict[str, Any]:
    return issuer(algorithms=["RS256", "RS384"], jwks_url=url, jwks_ttl_s=300,
                  jwks_refresh_min_interval_s=0.2, **fields)


async def test_jwks_rotation_is_picked_up_on_unknown_kid() -> None:
    with jwks_server([RSA.public_jwk("k1")]) as idp:
        resolver = JwtResolver([_jwks_issuer(idp.url)])
        cache = resolver.jwks_cache(ISSUER)
        assert cache is not None
        assert await resolver.resolve(sign(claims(), RSA.private_pem, "RS256", "k1"))
        assert await resolver.resolve(sign(claims(), RSA.private_pem, "RS256", "k1"))
        assert idp.hits == 1  # cached

        idp.keys = [RSA.public_jwk("k1"), RSA_OTHER.public_jwk("k2")]
        await asyncio.sleep(0.25)
        principal = await resolver.resolve(sign(claims(sub="carol"), RSA_OTHER.private_pem,
                                                "RS256", "k2"))
        assert principal is not None and principal.user_id == "carol"
        assert idp.hits == 2

        # A flood of invented key ids costs at most one more fetch per refresh interval.
        bogus = [sign(claims(), RSA_OTHER.private_pem, "RS256", f"bogus-{i}") for i in range(40)]
        outcomes = await asyncio.gather(*(resolver.resolve(t) for t in bogus),
                                        return_exceptions=True)
        assert all(isinstance(o, AuthenticationFailed) and "unknown" in o.message
                   for o in outcomes)
        assert idp.hits <= 3
        await resolver.aclose()


async def test_jwks_key_of_the_wrong_kind_is_not_used() -> None:
    ec_entry = EC.public_jwk("k1")
    with jwks_server([ec_entry]) as idp:
        resolver = JwtResolver([_jwks_issuer(idp.url)])
        with pytest.raises(AuthenticationFailed, match="unknown to issuer"):
            await resolver.resolve(sign(claims(), RSA.private_pem, "RS256", "k1"))
        await resolver.aclose()


async def test_jwks_unreachable_without_cached_keys_is_unavailable() -> None:
    dead = f"http://127.0.0.1:{free_port()}/jwks.json"
    resolver = JwtResolver([_jwks_issuer(dead)])
    with pytest.raises(Unavailable) as info:
        await resolver.resolve(sign(claims(), RSA.private_pem, "RS256", "k1"))
    assert info.value.status == 503
    assert "cannot be fetched" in info.value.message
    await resolver.aclose()


async def test_stale_keys_keep_serving_while_the_jwks_endpoint_is_down() -> None:
    with jwks_server([RSA.public_jwk("k1")]) as idp:
        resolver = JwtResolver([issuer(algorithms=["RS256"], jwks_url=idp.url, jwks_ttl_s=0.1,
                                       jwks_refresh_min_interval_s=0)])
        assert await resolver.resolve(sign(claims(), RSA.private_pem, "RS256", "k1"))
    await asyncio.sleep(0.15)  # the endpoint is gone and the set is past its TTL
    assert await resolver.resolve(sign(claims(), RSA.private_pem, "RS256", "k1"))
    with pytest.raises(Unavailable):
        await resolver.resolve(sign(claims(), RSA_OTHER.private_pem, "RS256", "k-new"))
    await resolver.aclose()

