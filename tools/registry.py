"""Server-side tools by name. Python functions register with ``@python_tool``."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from tako.core.protocols import RunContext, Tool
from tako.core.types import FunctionDef, ToolSpec

ToolFn = Callable[..., Awaitable[str] | str]


class PythonTool:
    """A plain (sync or async) Python function exposed as a tool."""

    def __init__(self, fn: ToolFn, name: str, description: str,
                 parameters: dict[str, Any]) -> None:
        self.fn = fn
        self.name = name
        self.spec = ToolSpec(function=FunctionDef(name=name, description=description,
                                                  parameters=parameters))
        self._wants_ctx = "ctx" in inspect.signature(fn).parameters

    async def invoke(self, arguments: dict[str, Any], ctx: RunContext) -> str:
        kwargs = dict(arguments)
        if self._wants_ctx:
            kwargs["ctx"] = ctx
        result = self.fn(**kwargs)
        if inspect.isawaitable(result):
            result = await result
        return str(result)


class ToolRegistry:
    def __init__(self, tools: list[Tool] | None = None) -> None:
        self._tools: dict[str, Tool] = {}
        for tool in tools or ():
            self.add(tool)

    def add(self, tool: Tool) -> None:
        self._tools[tool.name] = tool

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def names(self) -> list[str]:
        return sorted(self._tools)

    def specs(self, names: list[str] | None = None) -> list[ToolSpec]:
        chosen = self._tools if names is None else {n: self._tools[n] for n in names
                                                     if n in self._tools}
        return [t.spec for t in chosen.values()]


def python_tool(name: str, description: str,
                parameters: dict[str, Any]) -> Callable[[ToolFn], PythonTool]:
    def deco(fn: ToolFn) -> PythonTool:
        return PythonTool(fn, name, description, parameters)

    return deco
