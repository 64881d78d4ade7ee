"""What OpenAI refuses with a 400, tako refuses too, against a real ``tako serve``: content
parts, tool schemas, tool_choice, the types of stream and n, the content type; echoed
values are cut short. The admin API refuses absurd amounts before it stores a key."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.gateway import TEST_KEY, Gateway, basic_config, gateway
from tests.support.openai_schema import validate_error

ADMIN_KEY = "tako-admin-" + "v" * 32
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "the weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}


@pytest.fixture(scope="module")
def gw() -> Iterator[Gateway]:
    with gateway(basic_config(), env={"TAKO_ADMIN_KEY": ADMIN_KEY}) as running:
        yield running


def chat(gw: Gateway, **fields: Any) -> httpx.Response:
    body = {"model": "echo", "messages": [{"role": "user", "content": "hi"}], **fields}
    return httpx.post(gw.base_url + "/chat/completions", json=body, timeout=10,
                      headers={"authorization": f"Bearer {TEST_KEY}"})


def user_parts(*parts: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"role": "user", "content": list(parts)}]


def bad_tool(parameters: Any, name: str = "get_weather") -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": parameters}}


LAX_CASES = {
    "unknown content part type": {"messages": user_parts({"type": "video", "video": "x"})},
    "text part without text": {"messages": user_parts({"type": "text"})},
    "image part without image_url": {"messages": user_parts({"type": "image_url"})},
    "schema of the wrong type": {"tools": [bad_tool({"type": "string"})]},
    "schema that is not a schema": {"tools": [bad_tool(
        {"type": "object", "properties": {"city": {"type": "town"}}})]},
    "function name with spaces": {"tools": [bad_tool({"type": "object"}, "get weather")]},
    "tool_choice naming no tool": {"tools": [WEATHER], "tool_choice": {
        "type": "function", "function": {"name": "get_time"}}},
    "tool_choice required without tools": {"tool_choice": "required"},
    "tool_choice of an unknown mode": {"tools": [WEATHER], "tool_choice": "always"},
    "stream as a string": {"stream": "yes"},
    "stream as a number": {"stream": 1},
    "n as a string": {"n": "1"},
    "n as a float": {"n": 1.5},
}


@pytest.mark.parametrize("case", list(LAX_CASES))
def test_lax_input_is_400(gw: Gateway, case: str) -> None:
    answer = chat(gw, **LAX_CASES[case])
    assert answer.status_code == 400, answer.text
    validate_error(answer.json())
    assert answer.json()["error"]["type"] == "invalid_request_error"


def test_content_part_errors_point_at_the_part(gw: Gateway) -> None:
    error = chat(gw, **LAX_CASES["unknown content part type"]).json()["error"]
    assert error["param"] == "messages.0.content.0.type"


def test_valid_tools_and_parts_pass(gw: Gateway) -> None:
    answer = chat(gw, tools=[WEATHER], stream=False, n=1, tool_choice={
        "type": "function", "function": {"name": "get_weather"}},
        messages=user_parts({"type": "text", "text": "weather in Paris?"}))
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          None])
def test_body_must_be_declared_json(gw: Gateway, content_type: str | None) -> None:
    headers = {"authorization": f"Bearer {TEST_KEY}"}
    if content_type:
        headers["content-type"] = content_type
    answer = httpx.post(gw.base_url + "/chat/completions", timeout=10, headers=headers,
                        content=b'{"model": "echo", "messages": [{"role": "user", '
                                b'"content": "hi"}]}')
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "unsupported_content_type"


def test_json_with_charset_is_accepted(gw: Gateway) -> None:
    answer = httpx.post(gw.base_url + "/chat/completions", timeout=10,
                        headers={"authorization": f"Bearer {TEST_KEY}",
                                 "content-type": "application/json; charset=utf-8"},
                        content=b'{"model": "echo", "messages": [{"role": "user", '
                                b'"content": "hi"}]}')
    assert answer.status_code == 200


def test_a_huge_model_name_is_not_echoed(gw: Gateway) -> None:
    answer = chat(gw, model="m" * 100_000)
    assert answer.status_code in (400, 404)
    assert len(answer.content) < 2_000


# ---- the admin API ----

def admin(gw: Gateway, method: str, path: str, **kw: Any) -> httpx.Response:
    return httpx.request(method, gw.url + path, timeout=10,
                         headers={"authorization": f"Bearer {ADMIN_KEY}",
                                  "content-type": "application/json"}, **kw)


POISONED_MINTS = {
    "usd 1e300": b'{"budgets": [{"scope": "key", "period": "day", "usd": 1e300}]}',
    "usd 1e309 (infinite)": b'{"budgets": [{"scope": "key", "period": "day", "usd": 1e309}]}',
    "usd NaN": b'{"budgets": [{"scope": "key", "period": "day", "usd": NaN}]}',
    "usd -Infinity": b'{"budgets": [{"scope": "key", "period": "day", "usd": -Infinity}]}',
    "tokens 10**20": b'{"budgets": [{"scope": "key", "period": "day", '
                     b'"tokens": 100000000000000000000}]}',
    "rpm 10**12": b'{"rate_limits": [{"scope": "key", "rpm": 1000000000000}]}',
}


@pytest.mark.parametrize("case", list(POISONED_MINTS))
def test_absurd_amounts_are_refused_before_anything_is_stored(gw: Gateway, case: str) -> None:
    tenant = "poison-" + case.split()[0]
    body = POISONED_MINTS[case].replace(b"{", b'{"tenant_id": "%s", "user_id": "u", '
                                        % tenant.encode(), 1)
    answer = admin(gw, "POST", "/admin/keys", content=body)
    assert answer.status_code == 400, answer.text
    validate_error(answer.json())
    listed = admin(gw, "GET", f"/admin/keys?tenant_id={tenant}").json()["data"]
    assert listed == []


def test_a_key_with_a_large_sane_budget_is_minted_and_chats(gw: Gateway) -> None:
    minted = admin(gw, "POST", "/admin/keys", json={
        "tenant_id": "rich", "user_id": "u",
        "budgets": [{"scope": "key", "period": "day", "usd": 1e6}]})
    assert minted.status_code == 201, minted.text
    assert minted.headers["cache-control"] == "no-store"
    key = minted.json()["key"]
    answer = httpx.post(gw.base_url + "/chat/completions", timeout=10,
                        headers={"authorization": f"Bearer {key}"},
                        json={"model": "echo", "messages": [{"role": "user", "content": "hi"}]})
    assert answer.status_code == 200, answer.text
