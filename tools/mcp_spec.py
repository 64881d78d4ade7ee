"""Configuration of one MCP server (kept apart from the client so config loads fast)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class McpServerSpec(BaseModel):
    """One MCP server: ``transport: http`` needs ``url`` (and optional ``headers``);
    ``transport: stdio`` needs ``command`` (with ``args`` and extra ``env``).
    ``required`` servers that cannot be reached stop the gateway from starting; others
    are logged and left out."""

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
