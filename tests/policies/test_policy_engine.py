"""Rego decisions through the PolicyEngine API, embedded vs OPA REST parity, OPA failures."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tako.core.errors import InternalError, Unavailable
from tako.policies import (
    AllowAllEngine,
    EmbeddedRegoEngine,
    OpaRestEngine,
    PolicySettings,
    build_policy_engine,
)
from tako.policies.decision import decision_to_result
from tests.support.net import free_port, serve_asgi
from tests.support.opa_compat import OpaCompatibleApp
from tests.support.policy_cases import CASES, POLICY_DATA, pre_chat, pre_tool, user

CASE_IDS = [case[0] for case in CASES]


@pytest.fixture(scope="module")
def embedded() -> Iterator[EmbeddedRegoEngine]:
    engine = EmbeddedRegoEngine(POLICY_DATA)
    yield engine
    asyncio.run(engine.aclose())


@pytest.fixture(scope="module")
def opa_url() -> Iterator[str]:
    with serve_asgi(OpaCompatibleApp(POLICY_DATA)) as url:
        yield url


@pytest.fixture
async def opa(opa_url: str) -> AsyncIterator[OpaRestEngine]:
    engine = OpaRestEngine(opa_url, timeout_s=2.0, fail_mode="fail_closed")
    yield engine
    await engine.aclose()


def test_every_stage_and_action_is_covered() -> None:
    covered = {(stage, expected["action"]) for _, stage, _, expected in CASES}
    assert {s for s, _ in covered} == {"pre_chat", "pre_tool", "post_chat"}
    assert {a for _, a in covered} == {
        "allow", "deny", "redact_messages", "redact_response", "force_model", "require_approval"
    }


@pytest.mark.parametrize(("name", "stage", "data", "expected"), CASES, ids=CASE_IDS)
async def test_embedded_decisions(
    embedded: EmbeddedRegoEngine, name: str, stage: str, data: dict[str, Any],
    expected: dict[str, Any],
) -> None:
    decision = await embedded.evaluate(stage, data)
    assert decision_to_result(decision) == expected


async def test_opa_rest_engine_matches_embedded_on_every_case(
    embedded: EmbeddedRegoEngine, opa: OpaRestEngine
) -> None:
    for name, stage, data, expected in CASES:
        local = await embedded.evaluate(stage, data)
        remote = await opa.evaluate(stage, data)
        assert remote == local, name
        assert decision_to_result(remote) == expected, name


async def test_opa_request_is_the_data_api_shape(opa_url: str) -> None:
    app = OpaCompatibleApp(POLICY_DATA)
    with serve_asgi(app) as url:
        engine = OpaRestEngine(url, timeout_s=2.0)
        try:
            assert engine.endpoint("pre_tool") == f"{url}/v1/data/tako/pre_tool/decision"
            await engine.evaluate("pre_tool", pre_tool("shell"))
        finally:
            await engine.aclose()
    assert app.requests == [{"input": pre_tool("shell")}]


@pytest.mark.parametrize("inline_max_bytes", [0, 16384], ids=["worker-threads", "inline"])
async def test_concurrent_embedded_evaluations_keep_inputs_apart(inline_max_bytes: int) -> None:
    engine = EmbeddedRegoEngine(POLICY_DATA, threads=2, inline_max_bytes=inline_max_bytes)
    long_text = "lorem ipsum " * 3000  # past the inline limit: goes to a worker thread
    inputs = [
        pre_chat(model="gpt-4o") if i % 2 else pre_chat(messages=[user(long_text + str(i))])
        for i in range(40)
    ]
    try:
        decisions = await asyncio.gather(*(engine.evaluate("pre_chat", d) for d in inputs))
    finally:
        await engine.aclose()
    assert [d.action for d in decisions] == ["deny" if i % 2 else "allow" for i in range(40)]


@pytest.mark.parametrize(
    ("stage", "data"),
    [
        ("pre_chat", {"principal": {}, "model": "m", "messages": None, "tools": None}),
        ("pre_chat", {"model": None}),
        (
            "pre_chat",
            {
                "principal": {"tenant_id": None},
                "model": 3,
                "messages": [
                    {"role": "user", "content": None},
                    {"role": "user"},
                    {"role": "user", "content": [{"type": "text"}, {"type": "image_url"}, "x"]},
                ],
                "tools": [None, 3, {"function": None}],
            },
        ),
        ("pre_tool", {}),
        ("pre_tool", {"tool": None, "arguments": None}),
        ("post_chat", {"response": None}),
    ],
)
async def test_odd_inputs_are_allowed_not_crashed(
    embedded: EmbeddedRegoEngine, stage: str, data: dict[str, Any]
) -> None:
    assert decision_to_result(await embedded.evaluate(stage, data)) == {"action": "allow"}


async def test_unknown_stage_is_rejected(embedded: EmbeddedRegoEngine) -> None:
    with pytest.raises(ValueError, match="unknown policy stage"):
        await embedded.evaluate("pre_flight", pre_chat())


async def test_policy_dir_override_and_malformed_decision(tmp_path: Path) -> None:
    for stage in ("pre_chat", "pre_tool", "post_chat"):
        (tmp_path / f"{stage}.rego").write_text(
            f'package tako.{stage}\n\n'
            'decision := {"action": "deny", "reason": data.tako.config.why} '
            'if input.model == "x"\n'
            'else := {"action": "maybe"}\n'
        )
    engine = build_policy_engine(
        PolicySettings(mode="embedded", policy_dir=tmp_path, data={"why": "custom"})
    )
    assert (await engine.evaluate("pre_chat", pre_chat(model="x"))).reason == "custom"
    with pytest.raises(InternalError, match="unknown action 'maybe'"):
        await engine.evaluate("pre_chat", pre_chat(model="y"))


async def test_factory_modes() -> None:
    off = build_policy_engine(PolicySettings(mode="off", data=POLICY_DATA))
    assert isinstance(off, AllowAllEngine)
    assert (await off.evaluate("pre_chat", pre_chat(model="gpt-4o"))).action == "allow"
    opa = build_policy_engine(
        PolicySettings(mode="opa", opa_url="http://127.0.0.1:1/", timeout_s=0.5,
                       fail_mode="fail_open")
    )
    assert isinstance(opa, OpaRestEngine)
    assert (opa.url, opa.timeout_s, opa.fail_mode) == ("http://127.0.0.1:1", 0.5, "fail_open")
    await opa.aclose()
    embedded = build_policy_engine(PolicySettings(data=POLICY_DATA))
    assert isinstance(embedded, EmbeddedRegoEngine)
    assert (await embedded.evaluate("pre_chat", pre_chat(model="gpt-4o"))).action == "deny"


# --- OPA timeout and fail modes ---------------------------------------------------------


@pytest.fixture(scope="module")
def slow_opa_url() -> Iterator[str]:
    with serve_asgi(OpaCompatibleApp(POLICY_DATA, delay_s=1.5)) as url:
        yield url


async def test_slow_opa_fail_closed_raises_unavailable_within_timeout(slow_opa_url: str) -> None:
    engine = OpaRestEngine(slow_opa_url, timeout_s=0.2, fail_mode="fail_closed")
    started = time.monotonic()
    try:
        with pytest.raises(Unavailable) as info:
            await engine.evaluate("pre_chat", pre_chat(model="gpt-4o"))
    finally:
        await engine.aclose()
    assert time.monotonic() - started < 1.0
    assert info.value.status == 503
    assert "did not answer within 0.2s" in info.value.message


async def test_slow_opa_fail_open_allows(slow_opa_url: str, caplog: pytest.LogCaptureFixture
                                          ) -> None:
    engine = OpaRestEngine(slow_opa_url, timeout_s=0.2, fail_mode="fail_open")
    try:
        with caplog.at_level("WARNING", logger="tako.policy"):
            decision = await engine.evaluate("pre_chat", pre_chat(model="gpt-4o"))
    finally:
        await engine.aclose()
    assert decision.action == "allow"
    assert "fail_open" in decision.reason
    assert any("fail_open" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("fail_mode", ["fail_closed", "fail_open"])
async def test_unreachable_opa_follows_fail_mode(fail_mode: str) -> None:
    engine = OpaRestEngine(f"http://127.0.0.1:{free_port()}", timeout_s=1.0,
                           fail_mode=fail_mode)  # type: ignore[arg-type]
    try:
        if fail_mode == "fail_closed":
            with pytest.raises(Unavailable, match="OPA request failed"):
                await engine.evaluate("pre_tool", pre_tool("shell"))
        else:
            assert (await engine.evaluate("pre_tool", pre_tool("shell"))).action == "allow"
    finally:
        await engine.aclose()


@pytest.mark.parametrize(
    ("app", "message"),
    [
        (OpaCompatibleApp(POLICY_DATA, status=500), "OPA answered HTTP 500"),
        (OpaCompatibleApp(POLICY_DATA, omit_result=True), "OPA has no decision"),
    ],
    ids=["http-500", "no-result"],
)
async def test_unusable_opa_answers_follow_fail_mode(app: OpaCompatibleApp, message: str) -> None:
    with serve_asgi(app) as url:
        closed = OpaRestEngine(url, timeout_s=2.0, fail_mode="fail_closed")
        opened = OpaRestEngine(url, timeout_s=2.0, fail_mode="fail_open")
        try:
            with pytest.raises(Unavailable, match=message):
                await closed.evaluate("pre_tool", pre_tool("shell"))
            assert (await opened.evaluate("pre_tool", pre_tool("shell"))).action == "allow"
        finally:
            await closed.aclose()
            await opened.aclose()
