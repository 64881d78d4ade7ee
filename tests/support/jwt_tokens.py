"""Signing material and a JWKS endpoint for the JWT resolver tests."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jose import jwk, jwt
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.support.net import serve_asgi

ISSUER = "https://idp.example.test/"
AUDIENCE = "tako-gateway"
HS_SECRET = "a-shared-hmac-secret-of-at-least-32-bytes!"


@dataclass(frozen=True)
class KeyPair:
    private_pem: str
    public_pem: str
    alg: str

    def public_jwk(self, kid: str) -> dict[str, Any]:
        entry: dict[str, Any] = jwk.construct(self.public_pem, self.alg).to_dict()
        entry.update({"kid": kid, "use": "sig", "alg": self.alg})
        return entry


def _pems(private: Any) -> tuple[str, str]:
    private_pem = private.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()).decode()
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private_pem, public_pem


def rsa_pair() -> KeyPair:
    return KeyPair(*_pems(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
                   alg="RS256")


def ec_pair() -> KeyPair:
    return KeyPair(*_pems(ec.generate_private_key(ec.SECP256R1())), alg="ES256")


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "tenant": "acme",
                            "scope": "chat models:read", "iat": now, "exp": now + 600}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


@lru_cache(maxsize=32)
def _signing_key(key: str, alg: str) -> Any:
    return jwk.construct(key, alg)  # loading an RSA private key once saves ~50 ms a token


def sign(payload: dict[str, Any], key: str, alg: str, kid: str | None = None) -> str:
    headers = {"kid": kid} if kid else None
    return str(jwt.encode(payload, _signing_key(key, alg), algorithm=alg, headers=headers))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def raw_token(header: dict[str, Any], payload: dict[str, Any], hmac_key: bytes | None) -> str:
    """A token assembled by hand, as an attacker would: any header, optional HMAC."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
    signature = b""
    if hmac_key is not None:
        signature = hmac.new(hmac_key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


@dataclass
class JwksServer:
    keys: list[dict[str, Any]] = field(default_factory=list)
    hits: int = 0
    url: str = ""


@contextmanager
def jwks_server(keys: list[dict[str, Any]]) -> Iterator[JwksServer]:
    """An identity provider's JWKS endpoint on loopback; ``keys`` can be swapped live."""
    state = JwksServer(keys=list(keys))

    async def jwks(request: Request) -> JSONResponse:
        state.hits += 1
        return JSONResponse({"keys": state.keys})

    app = Starlette(routes=[Route("/.well-known/jwks.json", jwks)])
    with serve_asgi(app) as base:
        state.url = f"{base}/.well-known/jwks.json"
        yield state
