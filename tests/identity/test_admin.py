"""The admin API over real HTTP: keys minted there work, rotate, revoke; secrets never leak."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tako.app.admin import admin_key_digest, admin_router
from tako.app.config import AuthSettings
from tako.app.identity.keystore import KeyStore, MemoryKeyStore, RedisKeyResolver, key_digest
from tako.core.errors import TakoError
from tests.support.keystores import MakeRedisStore
from tests.support.net import serve_asgi
from tests.support.waiting import until_rejected

ADMIN_KEY = "tako-admin-" + "z" * 32


@dataclass
class SpendBook:
    calls: list[tuple[str, str, str, str]] = field(default_factory=list)

    async def __call__(self, scope: str, id: str, period: str, tenant_id: str) -> float:
        self.calls.append((scope, id, period, tenant_id))
        return 1.25


@contextmanager
def admin_app(store: KeyStore, admin_sha256: str | None, spend: SpendBook | None
              ) -> Iterator[str]:
    """The admin router in a minimal app served on loopback. The store's connections live
    in the server's event loop, so they are closed there before the server stops."""
    app = FastAPI()
    server_loop: list[asyncio.AbstractEventLoop] = []

    @app.middleware("http")
    async def remember_loop(request: Request, call_next: Any) -> Any:
        if not server_loop:
            server_loop.append(asyncio.get_running_loop())
        return await call_next(request)

    @app.exception_handler(TakoError)
    async def tako_error(request: Request, exc: TakoError) -> JSONResponse:
        return JSONResponse(exc.to_body(), status_code=exc.status,
                            headers=exc.response_headers())

    app.include_router(admin_router(store, admin_sha256, spend))
    with serve_asgi(app) as base:
        try:
            yield base
        finally:
            if server_loop:
                asyncio.run_coroutine_threadsafe(store.aclose(), server_loop[0]).result(5)


@pytest.fixture
async def admin_http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                                 timeout=10) as client:
        yield client


def _assert_openai_error(response: httpx.Response, status: int, code: str | None) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    assert error["code"] == code
    assert error["message"]


async def test_key_lifecycle_through_the_admin_api(make_redis_store: MakeRedisStore,
                                                   admin_http: httpx.AsyncClient) -> None:
    spend = SpendBook()
    server_store = make_redis_store()
    replica = RedisKeyResolver(make_redis_store())  # another replica reading the same Redis
    await replica.start()
    with admin_app(server_store, hashlib.sha256(ADMIN_KEY.encode()).hexdigest(), spend) as base:
        created = await admin_http.post(f"{base}/admin/keys", json={
            "tenant_id": "acme", "user_id": "alice", "name": "ci", "models": ["echo"],
            "scopes": ["chat"], "budgets": [{"scope": "key", "period": "day", "usd": 5}],
            "rate_limits": [{"scope": "key", "rpm": 60}]})
        assert created.status_code == 201, created.text
        assert created.headers["cache-control"] == "no-store"
        body = created.json()
        key, key_id = body["key"], body["id"]
        assert key.startswith("sk-tako-") and body["prefix"] == key[:12]
        assert body["budgets"] == [{"scope": "key", "period": "day", "usd": 5}]

        principal = await replica.resolve(key)
        assert principal is not None
        assert (principal.tenant_id, principal.user_id, principal.key_id) == (
            "acme", "alice", key_id)
        assert principal.metadata["rate_limits"] == [{"scope": "key", "rpm": 60}]

        await admin_http.post(f"{base}/admin/keys", json={"tenant_id": "globex",
                                                          "user_id": "gina"})
        listed = await admin_http.get(f"{base}/admin/keys", params={"tenant_id": "acme"})
        assert listed.status_code == 200
        assert [r["id"] for r in listed.json()["data"]] == [key_id]
        assert key not in listed.text and key_digest(key) not in listed.text
        everyone = await admin_http.get(f"{base}/admin/keys")
        assert {r["tenant_id"] for r in everyone.json()["data"]} == {"acme", "globex"}

        rotated = await admin_http.post(f"{base}/admin/keys/{key_id}/rotate")
        assert rotated.status_code == 200
        new_key = rotated.json()["key"]
        assert new_key != key and rotated.json()["id"] == key_id
        assert await until_rejected(replica, key, "revoked", within_s=1.0) < 1.0
        assert (await replica.resolve(new_key)) is not None

        revoked = await admin_http.delete(f"{base}/admin/keys/{key_id}")
        assert revoked.status_code == 200 and revoked.json()["revoked"] is True
        assert await until_rejected(replica, new_key, "revoked", within_s=1.0) < 1.0
        shown = await admin_http.get(f"{base}/admin/keys/{key_id}")
        assert shown.json()["revoked"] is True and new_key not in shown.text

        by_key = await admin_http.get(f"{base}/admin/spend",
                                      params={"scope": "key", "id": key_id, "period": "month"})
        assert by_key.status_code == 200
        assert by_key.json()["usd"] == 1.25 and by_key.json()["tenant_id"] == "acme"
        by_user = await admin_http.get(f"{base}/admin/spend", params={
            "scope": "user", "id": "alice", "period": "day", "tenant_id": "acme"})
        assert by_user.json()["usd"] == 1.25
        assert spend.calls == [("key", key_id, "month", "acme"),
                               ("user", "alice", "day", "acme")]
    await replica.aclose()


async def test_wrong_or_missing_admin_key_is_401(admin_http: httpx.AsyncClient) -> None:
    store = MemoryKeyStore()
    with admin_app(store, hashlib.sha256(b"the-real-admin-key").hexdigest(), None) as base:
        wrong = await admin_http.post(f"{base}/admin/keys",
                                      json={"tenant_id": "acme", "user_id": "mallory"})
        _assert_openai_error(wrong, 401, "invalid_admin_key")
        async with httpx.AsyncClient() as anonymous:
            missing = await anonymous.get(f"{base}/admin/keys")
        _assert_openai_error(missing, 401, "missing_admin_key")
    assert await store.list_keys() == []


async def test_admin_api_without_an_admin_key_is_disabled(admin_http: httpx.AsyncClient
                                                          ) -> None:
    with admin_app(MemoryKeyStore(), None, None) as base:
        response = await admin_http.get(f"{base}/admin/keys")
        _assert_openai_error(response, 404, "admin_api_disabled")


async def test_bad_requests_get_openai_errors(admin_http: httpx.AsyncClient) -> None:
    store = MemoryKeyStore()
    with admin_app(store, hashlib.sha256(ADMIN_KEY.encode()).hexdigest(), SpendBook()) as base:
        no_tenant = await admin_http.post(f"{base}/admin/keys", json={"user_id": "alice"})
        _assert_openai_error(no_tenant, 400, None)
        assert no_tenant.json()["error"]["type"] == "invalid_request_error"
        assert no_tenant.json()["error"]["param"] == "tenant_id"
        bad_budget = await admin_http.post(f"{base}/admin/keys", json={
            "tenant_id": "acme", "user_id": "alice",
            "budgets": [{"scope": "key", "period": "fortnight", "usd": 1}]})
        assert bad_budget.status_code == 400
        assert bad_budget.json()["error"]["param"] == "budgets.0.period"
        typo = await admin_http.post(f"{base}/admin/keys", json={
            "tenant_id": "acme", "user_id": "alice", "model": ["echo"]})
        assert typo.status_code == 400 and typo.json()["error"]["param"] == "model"
        assert await store.list_keys() == []
        not_json = await admin_http.post(f"{base}/admin/keys", content=b"{nope")
        assert not_json.status_code == 400
        missing = await admin_http.post(f"{base}/admin/keys/key_missing/rotate")
        _assert_openai_error(missing, 404, "key_not_found")
        bad_scope = await admin_http.get(f"{base}/admin/spend",
                                         params={"scope": "planet", "id": "x"})
        assert bad_scope.status_code == 400 and bad_scope.json()["error"]["param"] == "scope"
        unknown_key_spend = await admin_http.get(f"{base}/admin/spend",
                                                 params={"scope": "key", "id": "key_missing"})
        assert unknown_key_spend.status_code == 400
        assert unknown_key_spend.json()["error"]["param"] == "tenant_id"


def test_admin_key_digest_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    digest = hashlib.sha256(b"k").hexdigest()
    assert admin_key_digest(AuthSettings(admin_key_sha256=digest.upper())) == digest
    monkeypatch.setenv("TAKO_TEST_ADMIN", "from-env")
    assert admin_key_digest(AuthSettings(admin_key_env="TAKO_TEST_ADMIN")) == hashlib.sha256(
        b"from-env").hexdigest()
    assert admin_key_digest(AuthSettings(admin_key_env="TAKO_TEST_UNSET_VAR")) is None
