"""Tools served by configured MCP servers, over streamable HTTP or stdio.

Each server gets one MCP session, opened at start-up and kept for the gateway's lifetime.
Its tools keep their MCP names, or become ``<prefix>__<name>`` when the server has a
``prefix`` (OpenAI tool names allow only letters, digits, ``_`` and ``-``). A tool call
that fails (an error result, a timeout, a server that went away) answers the model with
``error: ...`` text instead of failing the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import httpx2
import orjson
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult, TextContent
from mcp_types import Tool as McpToolInfo

from tako.core.protocols import RunContext
from tako.core.types import FunctionDef, ToolSpec
from tako.tools.mcp_spec import McpServerSpec

log = logging.getLogger("tako.tools.mcp")

__all__ = ["McpConnection", "McpServerSpec", "McpTool", "McpTools", "connect_mcp"]


class McpConnection:
    """One MCP session owned by its own task, so a transport failure ends that task (and
    that server's tools answer with errors) without touching the caller."""

    def __init__(self, spec: McpServerSpec) -> None:
        self.spec = spec
        self.client: Client | None = None
        self.failure: str | None = None
        self._ready: asyncio.Future[list[McpToolInfo]] | None = None
        self._closing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def _client(self) -> Client:
        spec = self.spec
        if spec.transport == "stdio":
            assert spec.command is not None
            return Client(StdioServerParameters(command=spec.command, args=spec.args,
                                                env=spec.env or None),
                          read_timeout_seconds=spec.timeout_s)
        assert spec.url is not None
        http = httpx2.AsyncClient(headers=spec.headers,
                                  timeout=httpx2.Timeout(spec.timeout_s, read=300.0))
        return Client(streamable_http_client(spec.url, http_client=http),
                      read_timeout_seconds=spec.timeout_s)

    async def open(self) -> list[McpToolInfo]:
        """Connect, list the server's tools and keep the session open until ``aclose``."""
        self._ready = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._run(), name=f"mcp:{self.spec.name}")
        async with asyncio.timeout(self.spec.timeout_s):
            return await asyncio.shield(self._ready)

    async def _run(self) -> None:
        assert self._ready is not None
        try:
            async with self._client() as client:
                tools = await _list_all_tools(client)
                self.client = client
                self._ready.set_result(tools)
                await self._closing.wait()
        except BaseException as exc:  # noqa: BLE001 - the session's end is reported, not raised
            reason = _describe(exc)
            if not self._ready.done():
                self._ready.set_exception(ConnectionError(reason))
            elif not self._closing.is_set():
                log.warning("MCP server %s disconnected: %s", self.spec.name, reason)
            self.failure = reason
        finally:
            self.client = None

    async def call(self, name: str, arguments: dict[str, Any]) -> str:
        client = self.client
        if client is None:
            return f"error: MCP server {self.spec.name} is not connected ({self.failure})"
        try:
            async with asyncio.timeout(self.spec.timeout_s):
                result = await client.call_tool(name, arguments,
                                                read_timeout_seconds=self.spec.timeout_s)
        except TimeoutError:
            return (f"error: MCP tool {name} on {self.spec.name} timed out "
                    f"after {self.spec.timeout_s:g}s")
        except Exception as exc:  # noqa: BLE001 - the model gets the failure as text
            return f"error: MCP tool {name} on {self.spec.name} failed: {_describe(exc)}"
        return _result_text(result)

    async def aclose(self) -> None:
        self._closing.set()
        if self._task is not None:
            try:
                async with asyncio.timeout(5):
                    await self._task
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task


class McpTool:
    """An MCP server's tool as a tako server-side tool."""

    def __init__(self, connection: McpConnection, info: McpToolInfo) -> None:
        self.connection = connection
        self.mcp_name = info.name
        self.name = connection.spec.tool_name(info.name)
        self.spec = ToolSpec(function=FunctionDef(name=self.name, description=info.description,
                                                  parameters=info.input_schema))

    async def invoke(self, arguments: dict[str, Any], ctx: RunContext) -> str:
        return await self.connection.call(self.mcp_name, arguments)


class McpTools:
    """Every tool of the connected MCP servers; ``aclose`` ends their sessions."""

    def __init__(self, connections: list[McpConnection], tools: list[McpTool]) -> None:
        self.connections = connections
        self.tools = tools

    def names(self) -> list[str]:
        return [t.name for t in self.tools]

    async def aclose(self) -> None:
        await asyncio.gather(*(c.aclose() for c in self.connections))


async def connect_mcp(specs: list[McpServerSpec]) -> McpTools:
    """Open a session to every server at once and collect their tools. An unreachable
    ``required`` server raises ConnectionError; any other is logged and skipped."""
    connections = [McpConnection(spec) for spec in specs]
    outcomes = await asyncio.gather(*(c.open() for c in connections), return_exceptions=True)
    live: list[McpConnection] = []
    tools: list[McpTool] = []
    failed: list[str] = []
    for connection, outcome in zip(connections, outcomes, strict=True):
        spec = connection.spec
        if isinstance(outcome, BaseException):
            reason = _describe(outcome)
            log.error("MCP server %s unavailable, its tools are left out: %s", spec.name, reason)
            await connection.aclose()
            if spec.required:
                failed.append(f"{spec.name}: {reason}")
            continue
        live.append(connection)
        tools.extend(McpTool(connection, info) for info in outcome)
    if failed:
        await asyncio.gather(*(c.aclose() for c in live))
        raise ConnectionError("required MCP servers unavailable: " + "; ".join(failed))
    return McpTools(live, tools)


async def _list_all_tools(client: Client) -> list[McpToolInfo]:
    tools: list[McpToolInfo] = []
    cursor: str | None = None
    while True:
        page = await client.list_tools(cursor=cursor)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if not cursor:
            return tools


def _result_text(result: CallToolResult) -> str:
    texts = [block.text for block in result.content if isinstance(block, TextContent)]
    text = "\n".join(texts)
    if not texts and result.structured_content is not None:
        text = orjson.dumps(result.structured_content).decode()
    if result.is_error:
        return f"error: {text or 'the tool reported an error'}"
    return text


def _describe(exc: BaseException) -> str:
    """The innermost useful message of an exception (task groups wrap failures)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, asyncio.CancelledError):
        return "connection closed"
    return str(exc) or type(exc).__name__
