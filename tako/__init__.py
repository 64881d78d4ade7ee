"""tako's in-process API: run any orchestrator profile over any providers, build a provider
from a deployment spec, and the core types — without the HTTP server.

    import tako
    provider = tako.build_provider({"name": "local", "provider": "echo", "model": "echo-1"})
    reply = tako.run_sync({"kind": "single", "params": {"deployment": "local"}},
                          {"messages": [{"role": "user", "content": "hi"}]},
                          {"local": provider})

The service itself lives in ``tako.app`` (``tako serve``); the packages below are
``tako.core``, ``tako.providers``, ``tako.runtime``, ``tako.tools``, ``tako.orchestrators``
and ``tako.policies`` (docs/architecture.md). Names are imported on first use, so
``import tako`` costs nothing until one is touched.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    "run": "tako.orchestrators.api",
    "run_sync": "tako.orchestrators.api",
    "make_context": "tako.orchestrators.api",
    "build_provider": "tako.providers.registry",
    "provider_kinds": "tako.providers.registry",
    "orchestrator_kinds": "tako.orchestrators.registry",
    "ChatRequest": "tako.core.types",
    "ChatResponse": "tako.core.types",
    "Message": "tako.core.types",
    "ToolSpec": "tako.core.types",
    "ToolCall": "tako.core.types",
    "Usage": "tako.core.types",
    "Delta": "tako.core.types",
    "ChunkError": "tako.core.types",
    "End": "tako.core.types",
    "OrchEvent": "tako.core.types",
    "Principal": "tako.core.types",
    "DeploymentSpec": "tako.core.specs",
    "ProfileSpec": "tako.core.specs",
    "Price": "tako.core.specs",
    "LlmProvider": "tako.core.protocols",
    "Tool": "tako.core.protocols",
    "Verifier": "tako.core.protocols",
    "StreamItem": "tako.core.protocols",
    "TakoError": "tako.core.errors",
}

__all__ = [
    "ChatRequest",
    "ChatResponse",
    "ChunkError",
    "Delta",
    "DeploymentSpec",
    "End",
    "LlmProvider",
    "Message",
    "OrchEvent",
    "Price",
    "Principal",
    "ProfileSpec",
    "StreamItem",
    "TakoError",
    "Tool",
    "ToolCall",
    "ToolSpec",
    "Usage",
    "Verifier",
    "build_provider",
    "make_context",
    "orchestrator_kinds",
    "provider_kinds",
    "run",
    "run_sync",
]

if TYPE_CHECKING:
    from tako.core.errors import TakoError
    from tako.core.protocols import LlmProvider, StreamItem, Tool, Verifier
    from tako.core.specs import DeploymentSpec, Price, ProfileSpec
    from tako.core.types import (
        ChatRequest,
        ChatResponse,
        ChunkError,
        Delta,
        End,
        Message,
        OrchEvent,
        Principal,
        ToolCall,
        ToolSpec,
        Usage,
    )
    from tako.orchestrators.api import make_context, run, run_sync
    from tako.orchestrators.registry import kinds as orchestrator_kinds
    from tako.providers.registry import build_provider
    from tako.providers.registry import kinds as provider_kinds


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tako' has no attribute {name!r}")
    attribute = {"provider_kinds": "kinds", "orchestrator_kinds": "kinds"}.get(name, name)
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
