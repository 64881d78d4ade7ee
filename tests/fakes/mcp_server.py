"""A small MCP server for the tests: ``add``, ``shout`` and ``fail``.

Served over streamable HTTP with ``http_app()``, or over stdio when run as a script."""

from __future__ import annotations

import asyncio
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError


def build_server() -> MCPServer:
    server: MCPServer = MCPServer("tako-test-tools", log_level="WARNING")

    @server.tool(description="Add two integers.")
    def add(a: int, b: int) -> str:
        return str(a + b)

    @server.tool(description="Upper-case the text and add an exclamation mark.")
    def shout(text: str) -> str:
        return text.upper() + "!"

    @server.tool(description="Always fails.")
    def fail(reason: str) -> str:
        raise ToolError(f"refused: {reason}")

    return server


class LifespanOnFirstRequest:
    """Runs the MCP app's session manager (its ASGI lifespan) from the first request on,
    for servers started with the lifespan protocol off."""

    def __init__(self, server: MCPServer) -> None:
        self.app = server.streamable_http_app()
        self.manager = server.session_manager
        self._started: asyncio.Event | None = None
        self._keeper: asyncio.Task[None] | None = None

    async def _keep_running(self) -> None:
        assert self._started is not None
        async with self.manager.run():
            self._started.set()
            await asyncio.Event().wait()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self._started is None:
            self._started = asyncio.Event()
            self._keeper = asyncio.create_task(self._keep_running())
        await self._started.wait()
        await self.app(scope, receive, send)


def http_app() -> LifespanOnFirstRequest:
    return LifespanOnFirstRequest(build_server())


if __name__ == "__main__":
    build_server().run("stdio")
