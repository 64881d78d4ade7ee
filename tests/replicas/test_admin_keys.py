"""Keys minted through the admin API work with the openai SDK on every replica, and a
revocation is seen by another replica within a second."""

from __future__ import annotations

import time
from contextlib import ExitStack

import httpx
import openai
import pytest

from tests.support.gateway import gateway
from tests.support.redis_server import RedisProcess
from tests.support.replicas import config

ADMIN_KEY = "admin-secret-for-tests"
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}


def test_admin_minted_keys_across_replicas(redis_proc: RedisProcess, key_prefix: str) -> None:
    cfg = config(redis_proc.url, key_prefix)
    cfg["auth"]["redis_keys"] = True
    with ExitStack() as stack:
        a, b = (stack.enter_context(gateway(cfg, env={"TAKO_ADMIN_KEY": ADMIN_KEY}))
                for _ in range(2))
        assert httpx.get(a.url + "/admin/keys", headers={
            "authorization": "Bearer wrong"}).status_code == 401
        created = httpx.post(a.url + "/admin/keys", headers=ADMIN, json={
            "tenant_id": "globex", "user_id": "gina", "name": "ci", "models": ["echo"],
            "budgets": [{"scope": "key", "period": "day", "usd": 5.0}]})
        assert created.status_code == 201, created.text
        secret, key_id = created.json()["key"], created.json()["id"]

        on_b = openai.OpenAI(base_url=b.base_url, api_key=secret, max_retries=0)
        reply = on_b.chat.completions.create(model="echo",
                                             messages=[{"role": "user", "content": "hi"}])
        assert reply.choices[0].message.content == "echo: hi"
        assert [m.id for m in on_b.models.list()] == ["echo"]

        listed = httpx.get(a.url + "/admin/keys", headers=ADMIN,
                           params={"tenant_id": "globex"}).text
        assert key_id in listed and secret not in listed

        spend = httpx.get(b.url + "/admin/spend", headers=ADMIN,
                          params={"scope": "key", "id": key_id, "period": "day"}).json()
        assert spend["object"] == "spend" and spend["tenant_id"] == "globex"
        assert spend["usd"] == pytest.approx(reply.usage.total_tokens * 0.001)

        rotated = httpx.post(a.url + f"/admin/keys/{key_id}/rotate", headers=ADMIN).json()
        new_secret = rotated["key"]
        assert new_secret != secret
        on_b_new = openai.OpenAI(base_url=b.base_url, api_key=new_secret, max_retries=0)
        assert on_b_new.models.list().data

        revoked_at = time.monotonic()
        assert httpx.delete(a.url + f"/admin/keys/{key_id}", headers=ADMIN).status_code == 200
        while True:
            try:
                on_b_new.models.list()
            except openai.AuthenticationError:
                break
            assert time.monotonic() - revoked_at < 1.0, "revocation not seen within 1 s"
            time.sleep(0.05)
        with pytest.raises(openai.AuthenticationError):
            on_b.models.list()
