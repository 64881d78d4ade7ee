"""Bearer JWTs from configured identity providers become tako principals.

Each trusted issuer is one ``JwtIssuer`` entry under ``auth.jwt`` in the config. The issuer
fixes its signing algorithm family (HMAC, RSA or ECDSA) and where its keys come from: a
shared secret, a PEM public key, or a JWKS URL that tako fetches, caches and refreshes when
a token names a key id it has not seen (at most once per ``jwks_refresh_min_interval_s``,
so a flood of made-up key ids cannot hammer the identity provider).

Outcomes of ``JwtResolver.resolve``:

- not a JWT, or a JWT whose ``iss`` is not configured: ``None`` (another resolver may know it);
- a JWT from a configured issuer that fails any check (signature, algorithm, ``exp``, ``nbf``,
  ``aud``, required claims): ``AuthenticationFailed`` with the reason, never the token;
- the issuer's JWKS cannot be fetched and no usable key is cached: ``Unavailable`` (503).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping
from typing import Any, Literal

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jose import jwk, jwt  # type: ignore[import-untyped]
from jose.backends.base import Key  # type: ignore[import-untyped]
from jose.exceptions import (  # type: ignore[import-untyped]
    ExpiredSignatureError,
    JOSEError,
    JWTClaimsError,
)
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from tako.core.errors import AuthenticationFailed, Unavailable
from tako.core.types import Principal
from tako.runtime.settings import BudgetLimit, RateLimit

log = logging.getLogger("tako.identity.jwt")

Family = Literal["HS", "RS", "ES"]

ALGORITHM_FAMILIES: dict[str, Family] = {
    "HS256": "HS", "HS384": "HS", "HS512": "HS",
    "RS256": "RS", "RS384": "RS", "RS512": "RS",
    "ES256": "ES", "ES384": "ES", "ES512": "ES",
}
_JWK_KTY: dict[Family, str] = {"HS": "oct", "RS": "RSA", "ES": "EC"}
_EC_CURVES = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
_CRYPTOGRAPHY_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
_MIN_HMAC_SECRET_BYTES = 32
_MAX_TOKEN_CHARS = 16_384


class JwtIssuer(BaseModel):
    """One trusted token issuer.

    ``algorithms`` must all belong to one family: HS (give ``secret`` or ``secret_env``),
    RS or ES (give ``public_key_pem`` or ``jwks_url``). Claim names map the token onto the
    principal: ``tenant_claim`` (or the fixed ``tenant_id`` when the token has none),
    ``user_claim``, ``scopes_claim`` (a space-separated string or a list) and
    ``models_claim`` (a list; absent means the issuer's ``allowed_models``, and ``None``
    there means every model). ``budgets`` and ``rate_limits`` apply to every principal of
    this issuer, in the same shape as API keys use.
    """

    model_config = ConfigDict(extra="forbid")

    issuer: str
    audience: str | list[str]
    algorithms: list[str] = Field(default_factory=lambda: ["RS256"], min_length=1)
    name: str = "jwt"
    secret: SecretStr | None = None
    secret_env: str | None = None
    public_key_pem: str | None = None
    jwks_url: str | None = None
    tenant_claim: str = "tenant"
    tenant_id: str | None = None
    user_claim: str = "sub"
    scopes_claim: str = "scope"
    models_claim: str | None = None
    allowed_models: list[str] | None = None
    budgets: list[BudgetLimit] = Field(default_factory=list)
    rate_limits: list[RateLimit] = Field(default_factory=list)
    leeway_s: int = Field(default=30, ge=0, le=600)
    require_exp: bool = True
    jwks_ttl_s: float = Field(default=300.0, gt=0)
    jwks_refresh_min_interval_s: float = Field(default=10.0, ge=0)
    jwks_timeout_s: float = Field(default=5.0, gt=0)

    @property
    def family(self) -> Family:
        return ALGORITHM_FAMILIES[self.algorithms[0]]

    @property
    def audiences(self) -> frozenset[str]:
        return frozenset([self.audience] if isinstance(self.audience, str) else self.audience)

    def hmac_secret(self) -> str | None:
        if self.secret is not None:
            return self.secret.get_secret_value()
        if self.secret_env:
            return os.environ.get(self.secret_env)
        return None

    @model_validator(mode="after")
    def _check_keys(self) -> JwtIssuer:
        unknown = [a for a in self.algorithms if a not in ALGORITHM_FAMILIES]
        if unknown:
            raise ValueError(f"issuer {self.issuer}: unsupported algorithms {unknown} "
                             f"(use one of {sorted(ALGORITHM_FAMILIES)})")
        families = {ALGORITHM_FAMILIES[a] for a in self.algorithms}
        if len(families) != 1:
            raise ValueError(f"issuer {self.issuer}: algorithms must be of one family "
                             f"(HS, RS or ES), got {self.algorithms}")
        if not self.audiences:
            raise ValueError(f"issuer {self.issuer}: audience must not be empty")
        asymmetric = [k for k in ("public_key_pem", "jwks_url") if getattr(self, k)]
        if self.family == "HS":
            if asymmetric:
                raise ValueError(f"issuer {self.issuer}: HMAC algorithms take a secret, "
                                 f"not {asymmetric[0]}")
            if self.secret is None and not self.secret_env:
                raise ValueError(f"issuer {self.issuer}: HMAC algorithms need secret or "
                                 "secret_env")
            secret = self.hmac_secret()
            if secret is not None and len(secret.encode()) < _MIN_HMAC_SECRET_BYTES:
                raise ValueError(f"issuer {self.issuer}: the HMAC secret must be at least "
                                 f"{_MIN_HMAC_SECRET_BYTES} bytes")
        else:
            if self.secret is not None or self.secret_env:
                raise ValueError(f"issuer {self.issuer}: {self.family} algorithms verify "
                                 "with a public key, not a shared secret")
            if len(asymmetric) != 1:
                raise ValueError(f"issuer {self.issuer}: give exactly one of "
                                 "public_key_pem or jwks_url")
        return self


class JwksCache:
    """The issuer's JSON Web Key Set, fetched over HTTP and kept for ``jwks_ttl_s``.

    A fetch happens when the set is older than its TTL or when a token names an unknown
    key id, but never more often than ``jwks_refresh_min_interval_s``; concurrent callers
    share one fetch. When a refresh fails the last good set keeps serving.
    """

    def __init__(self, issuer: JwtIssuer, client: httpx.AsyncClient) -> None:
        assert issuer.jwks_url is not None
        self._issuer = issuer
        self._url = issuer.jwks_url
        self._client = client
        self._keys: list[dict[str, Any]] | None = None
        self._fetched_at = 0.0
        self._attempted_at: float | None = None
        self._last_error: str | None = None
        self._lock = asyncio.Lock()
        self._built: dict[tuple[str, str], Key] = {}
        self.fetches = 0

    async def keys_for(self, kid: str | None, alg: str) -> list[Key]:
        """Candidate verification keys for a token header; raises Unavailable when the set
        cannot be fetched and nothing usable is cached."""
        if self._keys is None or self._age() > self._issuer.jwks_ttl_s:
            await self._refresh(force=False)
        found = self._matching(kid, alg)
        if not found and kid is not None:
            await self._refresh(force=True)
            found = self._matching(kid, alg)
        if found:
            return found
        if self._keys is None or self._last_error is not None:
            raise Unavailable(
                f"the signing keys of issuer {self._issuer.issuer} cannot be fetched "
                f"({self._last_error or 'no key set yet'})",
                code="jwks_unavailable", retry_after=self._issuer.jwks_refresh_min_interval_s,
            )
        if kid is not None:
            raise AuthenticationFailed(
                f"token signed with key id {kid!r}, unknown to issuer {self._issuer.issuer}")
        raise AuthenticationFailed(
            f"issuer {self._issuer.issuer} publishes no {alg} key for this token")

    def _age(self) -> float:
        return time.monotonic() - self._fetched_at

    def _matching(self, kid: str | None, alg: str) -> list[Key]:
        out: list[Key] = []
        for entry in self._keys or ():
            entry_kid = entry.get("kid")
            if kid is not None and entry_kid != kid:
                continue
            if not _jwk_fits(entry, alg):
                continue
            cache_key = (str(entry_kid), alg) if entry_kid is not None else None
            if cache_key is not None and cache_key in self._built:
                out.append(self._built[cache_key])
                continue
            try:
                built = jwk.construct(entry, alg)
            except JOSEError as exc:
                log.warning("issuer %s: skipping unusable JWK %r: %s", self._issuer.issuer,
                            entry_kid, exc)
                continue
            if cache_key is not None:
                self._built[cache_key] = built
            out.append(built)
        return out

    async def _refresh(self, *, force: bool) -> None:
        attempted = self._attempted_at
        async with self._lock:
            if self._attempted_at != attempted:
                return  # another caller fetched while this one waited
            now = time.monotonic()
            too_soon = (self._attempted_at is not None and
                        now - self._attempted_at < self._issuer.jwks_refresh_min_interval_s)
            if too_soon:
                return
            if not force and self._keys is not None and self._age() <= self._issuer.jwks_ttl_s:
                return
            self._attempted_at = now
            self.fetches += 1
            try:
                response = await self._client.get(self._url,
                                                  timeout=self._issuer.jwks_timeout_s)
                response.raise_for_status()
                body = response.json()
                keys = body.get("keys") if isinstance(body, Mapping) else None
                if not isinstance(keys, list):
                    raise ValueError("the response has no 'keys' list")
            except (httpx.HTTPError, ValueError) as exc:
                self._last_error = f"{type(exc).__name__}: {exc}"[:300]
                log.warning("issuer %s: JWKS fetch from %s failed: %s", self._issuer.issuer,
                            self._url, self._last_error)
                return
            self._keys = [dict(k) for k in keys if isinstance(k, Mapping)]
            self._built.clear()
            self._fetched_at = time.monotonic()
            self._last_error = None


def _check_public_key_kind(issuer: JwtIssuer) -> None:
    """Refuses a PEM whose key type or curve does not match the issuer's algorithms."""
    assert issuer.public_key_pem is not None
    pem = issuer.public_key_pem.encode()
    try:
        if b"BEGIN CERTIFICATE" in pem:
            public_key: Any = x509.load_pem_x509_certificate(pem).public_key()
        else:
            public_key = serialization.load_pem_public_key(pem)
    except ValueError as exc:
        raise ValueError(f"issuer {issuer.issuer}: public_key_pem is not a PEM public key "
                         f"or certificate: {exc}") from exc
    for alg in issuer.algorithms:
        if issuer.family == "RS":
            fits = isinstance(public_key, rsa.RSAPublicKey)
        else:
            fits = (isinstance(public_key, ec.EllipticCurvePublicKey)
                    and _CRYPTOGRAPHY_CURVES.get(public_key.curve.name) == _EC_CURVES[alg])
        if not fits:
            raise ValueError(f"issuer {issuer.issuer}: public_key_pem does not fit {alg} "
                             f"(it holds a {type(public_key).__name__})")


def _jwk_fits(entry: Mapping[str, Any], alg: str) -> bool:
    family = ALGORITHM_FAMILIES[alg]
    if entry.get("kty") != _JWK_KTY[family]:
        return False
    if entry.get("use") not in (None, "sig"):
        return False
    if entry.get("alg") not in (None, alg):
        return False
    return not (family == "ES" and entry.get("crv") != _EC_CURVES[alg])


class _IssuerVerifier:
    """Checks tokens of one issuer and maps their claims onto a principal."""

    def __init__(self, issuer: JwtIssuer, client: httpx.AsyncClient) -> None:
        self.issuer = issuer
        self._static_keys: dict[str, Key] = {}
        self.jwks: JwksCache | None = None
        if issuer.jwks_url:
            self.jwks = JwksCache(issuer, client)
        elif issuer.family == "HS":
            secret = issuer.hmac_secret()
            if secret is None:
                raise ValueError(f"issuer {issuer.issuer}: environment variable "
                                 f"{issuer.secret_env} is not set")
            self._static_keys = {alg: jwk.construct(secret, alg) for alg in issuer.algorithms}
        else:
            assert issuer.public_key_pem is not None
            _check_public_key_kind(issuer)
            try:
                self._static_keys = {alg: jwk.construct(issuer.public_key_pem, alg)
                                     for alg in issuer.algorithms}
            except JOSEError as exc:
                raise ValueError(f"issuer {issuer.issuer}: public_key_pem does not fit "
                                 f"{issuer.algorithms}: {exc}") from exc

    async def verify(self, token: str, header: Mapping[str, Any]) -> Principal:
        iss = self.issuer.issuer
        alg = header.get("alg")
        if not isinstance(alg, str) or alg.lower() == "none":
            raise AuthenticationFailed(f"unsigned token (alg none) from issuer {iss}")
        if alg not in self.issuer.algorithms:
            raise AuthenticationFailed(
                f"token algorithm {alg} is not allowed for issuer {iss} "
                f"(allowed: {', '.join(self.issuer.algorithms)})")
        if "crit" in header:
            raise AuthenticationFailed(f"token from issuer {iss} names critical header "
                                       "extensions this gateway does not implement")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise AuthenticationFailed(f"malformed key id in a token from issuer {iss}")
        keys = await self.jwks.keys_for(kid, alg) if self.jwks else [self._static_keys[alg]]
        claims = self._decode(token, keys, alg)
        return self._principal(claims)

    def _decode(self, token: str, keys: list[Key], alg: str) -> dict[str, Any]:
        iss = self.issuer.issuer
        options = {"verify_aud": False, "leeway": self.issuer.leeway_s,
                   "require_exp": self.issuer.require_exp, "require_iss": True}
        try:
            claims: dict[str, Any] = jwt.decode(token, keys, algorithms=[alg], options=options,
                                                issuer=iss)
        except ExpiredSignatureError:
            raise AuthenticationFailed(f"token from issuer {iss} has expired") from None
        except JWTClaimsError as exc:
            raise AuthenticationFailed(f"token from issuer {iss} rejected: {exc}") from None
        except JOSEError as exc:
            reason = str(exc) or type(exc).__name__
            if "ignature" in reason:
                reason = "signature verification failed"
            raise AuthenticationFailed(f"token from issuer {iss} rejected: {reason}") from None
        aud = claims.get("aud")
        token_audiences = {aud} if isinstance(aud, str) else set(aud or ())
        if not token_audiences & self.issuer.audiences:
            raise AuthenticationFailed(
                f"token from issuer {iss} is not meant for this gateway (audience mismatch)")
        return claims

    def _principal(self, claims: Mapping[str, Any]) -> Principal:
        cfg = self.issuer
        tenant = claims.get(cfg.tenant_claim, cfg.tenant_id)
        if not isinstance(tenant, str) or not tenant:
            raise AuthenticationFailed(
                f"token from issuer {cfg.issuer} has no {cfg.tenant_claim!r} claim")
        user = claims.get(cfg.user_claim)
        if not isinstance(user, str) or not user:
            raise AuthenticationFailed(
                f"token from issuer {cfg.issuer} has no {cfg.user_claim!r} claim")
        models: list[str] | None = cfg.allowed_models
        if cfg.models_claim and cfg.models_claim in claims:
            models = _string_list(claims[cfg.models_claim], cfg.models_claim, cfg.issuer)
        metadata: dict[str, Any] = {"auth": "jwt", "issuer": cfg.issuer}
        if isinstance(claims.get("jti"), str):
            metadata["jti"] = claims["jti"]
        if cfg.budgets:
            metadata["budgets"] = [b.model_dump(exclude_none=True) for b in cfg.budgets]
        if cfg.rate_limits:
            metadata["rate_limits"] = [r.model_dump(exclude_none=True) for r in cfg.rate_limits]
        return Principal(
            tenant_id=tenant,
            user_id=user,
            key_id=f"{cfg.name}:{user}",
            scopes=frozenset(_string_list(claims.get(cfg.scopes_claim), cfg.scopes_claim,
                                          cfg.issuer)),
            allowed_models=frozenset(models) if models is not None else None,
            metadata=metadata,
        )


def _string_list(value: Any, claim: str, issuer: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise AuthenticationFailed(f"token from issuer {issuer}: claim {claim!r} must be a "
                               "string or a list of strings")


class JwtResolver:
    """An AuthResolver for bearer JWTs of the configured issuers."""

    def __init__(self, issuers: list[JwtIssuer] | list[dict[str, Any]],
                 *, client: httpx.AsyncClient | None = None) -> None:
        parsed = [i if isinstance(i, JwtIssuer) else JwtIssuer.model_validate(i)
                  for i in issuers]
        names = [i.issuer for i in parsed]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"JWT issuers configured twice: {dupes}")
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(follow_redirects=False)
        self._verifiers = {i.issuer: _IssuerVerifier(i, self._client) for i in parsed}

    def jwks_cache(self, issuer: str) -> JwksCache | None:
        verifier = self._verifiers.get(issuer)
        return verifier.jwks if verifier else None

    async def resolve(self, token: str) -> Principal | None:
        if not self._verifiers or len(token) > _MAX_TOKEN_CHARS or token.count(".") != 2:
            return None
        try:
            header = jwt.get_unverified_header(token)
            claims = jwt.get_unverified_claims(token)
        except JOSEError:
            return None
        iss = claims.get("iss")
        verifier = self._verifiers.get(iss) if isinstance(iss, str) else None
        if verifier is None:
            return None
        return await verifier.verify(token, header)

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()
