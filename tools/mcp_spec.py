"""Configuration of one MCP server (kept apart from the client so config loads fast)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class McpServerSpec(BaseModel):
    """One MCP server: ``transport: http`` needs ``url`` (and optional ``headers``);
    ``transport: stdio`` needs ``command`` (with ``args`` and extra ``env``).
    ``required`` servers that cannot be reached stop the gateway from starting; others
    are logged and left out.

    A server's tool names are only learnt when it connects; ``tools`` lists the MCP names
    profiles may use before that, so ``tako check`` can check them (see
    ``app.config_check.known_names``). A listed tool the server does not serve is logged
    when it connects."""

    model_config = ConfigDict(extra="forbid")

    name: str
    transport: Literal["http", "stdio"] = "http"
    url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    command: str | None = None
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = 30.0
    prefix: str | None = None
    tools: list[str] | None = None
    required: bool = False

    @model_validator(mode="after")
    def _endpoint_given(self) -> McpServerSpec:
        if self.transport == "http" and not self.url:
            raise ValueError(f"MCP server {self.name}: transport http needs a url")
        if self.transport == "stdio" and not self.command:
            raise ValueError(f"MCP server {self.name}: transport stdio needs a command")
        return self

    def tool_name(self, mcp_name: str) -> str:
        return f"{self.prefix}__{mcp_name}" if self.prefix else mcp_name

    def declared_tool_names(self) -> list[str]:
        """The tool names profiles may use before the server connects (see above)."""
        return [self.tool_name(n) for n in self.tools or ()]
