"""The admin API under ``/admin``: mint, list, rotate and revoke API keys; read spend.

It answers only to the admin key (``Authorization: Bearer <admin key>``), configured as its
SHA-256 (``auth.admin_key_sha256``) or read from ``auth.admin_key_env`` at start-up. With
neither, every admin route answers 404 ``admin_api_disabled``. Secrets appear exactly once,
in the answer that mints them (sent with ``Cache-Control: no-store``); listings show a short
display prefix only. Errors use OpenAI's error shape.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from tako.app.config import AuthSettings
from tako.app.identity.keystore import KeyRecord, KeySpecIn, KeyStore, MintedKey
from tako.core.errors import AuthenticationFailed, InvalidRequest, NotFound

SpendLookup = Callable[[str, str, str, str], Awaitable[float]]

SPEND_SCOPES = ("key", "user", "tenant")
SPEND_PERIODS = ("day", "month")
_NO_STORE = {"Cache-Control": "no-store"}


def admin_key_digest(auth: AuthSettings) -> str | None:
    """The admin key's SHA-256 from settings: the configured digest, else the hash of the
    environment variable ``auth.admin_key_env`` when it is set; None disables the admin API."""
    if auth.admin_key_sha256:
        return auth.admin_key_sha256.strip().lower()
    if auth.admin_key_env and os.environ.get(auth.admin_key_env):
        return hashlib.sha256(os.environ[auth.admin_key_env].encode()).hexdigest()
    return None


def _record_body(record: KeyRecord) -> dict[str, Any]:
    return {"object": "api_key", "id": record.key_id, **record.model_dump()}


def _minted_body(minted: MintedKey) -> dict[str, Any]:
    return {**_record_body(minted.record), "key": minted.key}


def _minted_response(minted: MintedKey, status: int) -> Response:
    """The secret's one showing, rendered in full before it is sent."""
    body = orjson.dumps(_minted_body(minted))
    return Response(body, status_code=status, media_type="application/json",
                    headers=_NO_STORE)


async def _key_spec(request: Request) -> KeySpecIn:
    try:
        body = await request.json()
    except ValueError:
        raise InvalidRequest("the request body must be a JSON object") from None
    try:
        return KeySpecIn.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        raise InvalidRequest(f"invalid key request: {param}: {first['msg']}",
                             param=param) from None


def _spend_query(scope: str | None, key: str | None, period: str) -> tuple[str, str]:
    if scope not in SPEND_SCOPES:
        raise InvalidRequest(f"scope must be one of {', '.join(SPEND_SCOPES)}", param="scope")
    if period not in SPEND_PERIODS:
        raise InvalidRequest(f"period must be one of {', '.join(SPEND_PERIODS)}",
                             param="period")
    if not key:
        raise InvalidRequest("id is required (the key id, user id or tenant id)", param="id")
    return scope, key


async def _spend_tenant(store: KeyStore, scope: str, key: str, tenant: str | None) -> str:
    """The tenant whose counters hold the scope: given, the id itself, or the key's."""
    if scope == "tenant":
        if tenant is not None and tenant != key:
            raise InvalidRequest("for scope=tenant, tenant_id must equal id",
                                 param="tenant_id")
        return key
    if scope == "key" and tenant is None:
        record = await store.get(key)
        tenant = record.tenant_id if record else None
    if tenant is None:
        raise InvalidRequest(f"tenant_id is required for scope={scope}", param="tenant_id")
    return tenant


def _admin_check(admin_key_sha256: str | None) -> Callable[[Request], Awaitable[None]]:
    """The dependency every admin route has: the admin key as a bearer token."""
    expected = admin_key_sha256.strip().lower().encode() if admin_key_sha256 else None

    async def require_admin(request: Request) -> None:
        if expected is None:
            raise NotFound("the admin API is disabled: configure auth.admin_key_sha256 or set "
                           "the admin key environment variable (TAKO_ADMIN_KEY)",
                           code="admin_api_disabled")
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise AuthenticationFailed("the admin API needs 'Authorization: Bearer <admin key>'",
                                       code="missing_admin_key")
        digest = hashlib.sha256(presented.strip().encode()).hexdigest().encode()
        if not hmac.compare_digest(digest, expected):
            raise AuthenticationFailed("incorrect admin key", code="invalid_admin_key")

    return require_admin


def admin_router(store: KeyStore, admin_key_sha256: str | None,
                 spend: SpendLookup | None) -> APIRouter:
    """Routes under ``/admin``; include with ``app.include_router(admin_router(...))``."""
    require_admin = _admin_check(admin_key_sha256)

    router = APIRouter(prefix="/admin", dependencies=[Depends(require_admin)],
                       include_in_schema=False)

    @router.post("/keys")
    async def create_key(request: Request) -> Response:
        spec = await _key_spec(request)
        minted = await store.create(spec)
        try:
            return _minted_response(minted, status=201)
        except Exception:
            # no key may exist whose secret was never shown: take it back
            await store.revoke(minted.record.key_id)
            raise

    @router.get("/keys")
    async def list_keys(tenant_id: str | None = None) -> JSONResponse:
        records = await store.list_keys(tenant_id or None)
        return JSONResponse({"object": "list", "data": [_record_body(r) for r in records]})

    @router.get("/keys/{key_id}")
    async def get_key(key_id: str) -> JSONResponse:
        record = await store.get(key_id)
        if record is None:
            raise NotFound(f"no API key with id {key_id!r}", param="key_id",
                           code="key_not_found")
        return JSONResponse(_record_body(record))

    @router.post("/keys/{key_id}/rotate")
    async def rotate_key(key_id: str) -> Response:
        minted = await store.rotate(key_id)
        return _minted_response(minted, status=200)

    @router.delete("/keys/{key_id}")
    async def revoke_key(key_id: str) -> JSONResponse:
        record = await store.revoke(key_id)
        return JSONResponse({**_record_body(record), "deleted": True})

    @router.get("/spend")
    async def read_spend(scope: str | None = None, id: str | None = None,
                         period: str = "day", tenant_id: str | None = None) -> JSONResponse:
        if spend is None:
            raise NotFound("spend reporting is not configured on this gateway",
                           code="spend_unavailable")
        scope, key = _spend_query(scope, id, period)
        tenant = await _spend_tenant(store, scope, key, tenant_id or None)
        usd = await spend(scope, key, period, tenant)
        return JSONResponse({"object": "spend", "scope": scope, "id": key, "period": period,
                             "tenant_id": tenant, "usd": usd})

    return router
