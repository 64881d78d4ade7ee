"""MCP tools against a real MCP server (the SDK's MCPServer) over loopback HTTP and stdio."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import openai
import pytest

from tako.core.protocols import RunContext
from tako.core.types import Principal
from tako.tools.mcp import McpServerSpec, McpTool, McpTools, connect_mcp
from tako.tools.registry import ToolRegistry
from tests.fakes.mcp_server import http_app
from tests.support.gateway import TEST_KEY, basic_config, gateway
from tests.support.net import free_port, serve_asgi

SERVER_SCRIPT = Path(__file__).resolve().parents[1] / "fakes" / "mcp_server.py"


def _ctx() -> RunContext:
    def no_provider(alias: str) -> None:
        raise AssertionError("MCP tools call no provider")

    return RunContext(principal=Principal(tenant_id="acme", user_id="ann", key_id="alpha"),
                      request_id="req-1", provider=no_provider,  # type: ignore[arg-type]
                      tools=ToolRegistry())


def _by_name(tools: McpTools) -> dict[str, McpTool]:
    return {t.name: t for t in tools.tools}


@pytest.fixture(scope="module")
def mcp_url() -> Iterator[str]:
    with serve_asgi(http_app()) as url:
        yield url + "/mcp"


@pytest.fixture
async def connected(mcp_url: str) -> AsyncIterator[McpTools]:
    tools = await connect_mcp([McpServerSpec(name="demo", url=mcp_url, timeout_s=10)])
    try:
        yield tools
    finally:
        await tools.aclose()


async def test_lists_the_server_tools_as_tool_specs(connected: McpTools) -> None:
    tools = _by_name(connected)
    assert sorted(tools) == ["add", "fail", "shout"]
    shout = tools["shout"].spec.function
    assert shout.name == "shout"
    assert shout.description == "Upper-case the text and add an exclamation mark."
    assert shout.parameters is not None
    assert shout.parameters["required"] == ["text"]
    assert shout.parameters["properties"]["text"]["type"] == "string"
    assert sorted(tools["add"].spec.function.parameters["required"]) == ["a", "b"]  # type: ignore[index]


async def test_prefix_names_the_tools_and_calls_the_original(mcp_url: str) -> None:
    tools = await connect_mcp([McpServerSpec(name="demo", url=mcp_url, prefix="demo")])
    try:
        by_name = _by_name(tools)
        assert sorted(by_name) == ["demo__add", "demo__fail", "demo__shout"]
        assert by_name["demo__add"].spec.function.name == "demo__add"
        assert await by_name["demo__add"].invoke({"a": 40, "b": 2}, _ctx()) == "42"
    finally:
        await tools.aclose()


async def test_invoke_returns_the_text_content(connected: McpTools) -> None:
    tools = _by_name(connected)
    assert await tools["add"].invoke({"a": 2, "b": 3}, _ctx()) == "5"
    assert await tools["shout"].invoke({"text": "hello mcp"}, _ctx()) == "HELLO MCP!"


async def test_concurrent_calls_share_one_session(connected: McpTools) -> None:
    add = _by_name(connected)["add"]
    answers = await asyncio.gather(*(add.invoke({"a": i, "b": 1000}, _ctx())
                                     for i in range(20)))
    assert answers == [str(i + 1000) for i in range(20)]
    assert len(connected.connections) == 1


async def test_an_error_result_becomes_error_text(connected: McpTools) -> None:
    tools = _by_name(connected)
    answer = await tools["fail"].invoke({"reason": "no way"}, _ctx())
    assert answer.startswith("error: ")
    assert "refused: no way" in answer
    bad_arguments = await tools["add"].invoke({"a": "many"}, _ctx())
    assert bad_arguments.startswith("error: ")
    assert "add" in bad_arguments


async def test_a_server_that_goes_away_answers_with_error_text() -> None:
    with serve_asgi(http_app()) as url:
        tools = await connect_mcp([McpServerSpec(name="fleeting", url=url + "/mcp",
                                                 timeout_s=5)])
        shout = _by_name(tools)["shout"]
        assert await shout.invoke({"text": "still here"}, _ctx()) == "STILL HERE!"
    try:
        answer = await shout.invoke({"text": "anyone?"}, _ctx())
        assert answer.startswith("error: MCP tool shout on fleeting")
    finally:
        await tools.aclose()


async def test_an_unreachable_server_is_skipped_unless_required(mcp_url: str) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}/mcp"
    tools = await connect_mcp([McpServerSpec(name="down", url=nowhere, timeout_s=5),
                               McpServerSpec(name="up", url=mcp_url, prefix="up")])
    try:
        assert sorted(tools.names()) == ["up__add", "up__fail", "up__shout"]
    finally:
        await tools.aclose()
    with pytest.raises(ConnectionError, match="down"):
        await connect_mcp([McpServerSpec(name="down", url=nowhere, timeout_s=5,
                                         required=True)])


def test_a_spec_needs_its_transport_endpoint() -> None:
    with pytest.raises(ValueError, match="needs a url"):
        McpServerSpec(name="x", transport="http")
    with pytest.raises(ValueError, match="needs a command"):
        McpServerSpec(name="x", transport="stdio")


async def test_stdio_server_tools() -> None:
    spec = McpServerSpec(name="local", transport="stdio", command=sys.executable,
                         args=[str(SERVER_SCRIPT)], timeout_s=20)
    tools = await connect_mcp([spec])
    try:
        by_name = _by_name(tools)
        assert sorted(by_name) == ["add", "fail", "shout"]
        assert await by_name["shout"].invoke({"text": "over stdio"}, _ctx()) == "OVER STDIO!"
        assert "refused: nope" in await by_name["fail"].invoke({"reason": "nope"}, _ctx())
    finally:
        await tools.aclose()


def test_a_profile_runs_an_mcp_tool_through_tako_serve(mcp_url: str) -> None:
    config = basic_config(
        tools={"mcp_servers": [{"name": "demo", "url": mcp_url, "prefix": "demo"}]},
        profiles=[{"name": "echo-mcp", "kind": "single",
                   "params": {"deployment": "echo", "tools": ["demo__shout"]}}],
    )
    with gateway(config) as gw:
        client = openai.OpenAI(base_url=gw.base_url, api_key=TEST_KEY, max_retries=0,
                               timeout=30)
        response = client.chat.completions.create(
            model="echo-mcp",
            messages=[{"role": "user", "content": "demo__shout: tools over mcp"}],
        )
    assert response.choices[0].message.content == "tool demo__shout returned: TOOLS OVER MCP!"
    assert "Traceback" not in gw.log()
