"""Checks across a config's sections, which no single field's validation can make: names
are unique, the deployments aliases target exist, builtin tools exist; and the names a
profile may refer to (``KnownNames``), which its params model checks."""

from __future__ import annotations

import re
from collections.abc import Iterator

from tako.app.config import Settings
from tako.core.errors import ConfigProblem, join_path
from tako.orchestrators.params import KnownNames
from tako.tools.builtin import BUILTIN


def known_names(settings: Settings) -> KnownNames:
    """Deployments and aliases; enabled builtin tools and the MCP tools the config declares.

    An MCP server's tool names are only learnt when it connects, so the config says what
    profiles may name before that: the MCP names a server lists under ``tools`` (its
    ``prefix`` applied), else, with a ``prefix``, any ``<prefix>__<name>``. A server with
    neither could serve any name: while one is configured, a name not known otherwise is
    not refused but left for start-up to look for among the connected servers' tools."""
    tools = {name for name in settings.tools.builtin if name in BUILTIN}
    prefixes = set()
    open_tools = False
    for server in settings.tools.mcp_servers:
        tools.update(server.declared_tool_names())
        if server.tools is None and server.prefix:
            prefixes.add(server.prefix)
        open_tools = open_tools or (server.tools is None and not server.prefix)
    return KnownNames(aliases=frozenset(_deployment_names(settings)) | set(settings.aliases),
                      tools=frozenset(tools), tool_prefixes=frozenset(prefixes),
                      open_tools=open_tools)


def cross_reference_problems(settings: Settings) -> list[ConfigProblem]:
    return [*_deployment_problems(settings), *_alias_problems(settings),
            *_profile_problems(settings), *_builtin_tool_problems(settings)]


SECTIONS = ("deployments", "aliases", "profiles", "tools")
_SECTION_ENTRY = re.compile(r"(\w+)(?:\[(\d+)\])?")


def in_config_order(problems: list[ConfigProblem]) -> list[ConfigProblem]:
    """Problems sorted by section, then by list entry, as they appear in the file."""

    def position(problem: ConfigProblem) -> tuple[int, int]:
        match = _SECTION_ENTRY.match(problem.path)
        if match is None or match.group(1) not in SECTIONS:
            return (-1, 0)
        return (SECTIONS.index(match.group(1)), int(match.group(2) or 0))

    return sorted(problems, key=position)


def _deployment_names(settings: Settings) -> list[str]:
    return [d.name for d in settings.deployments]


def _first_index(names: list[str]) -> dict[str, int]:
    first: dict[str, int] = {}
    for i, name in enumerate(names):
        first.setdefault(name, i)
    return first


def _deployment_problems(settings: Settings) -> Iterator[ConfigProblem]:
    names = _deployment_names(settings)
    first = _first_index(names)
    for i, name in enumerate(names):
        if first[name] != i:
            yield ConfigProblem(f"deployments[{i}].name", f"duplicate deployment name "
                                f"{name!r} (first at deployments[{first[name]}])")


def _alias_problems(settings: Settings) -> Iterator[ConfigProblem]:
    deployments = set(_deployment_names(settings))
    for alias, spec in settings.aliases.items():
        path = join_path("aliases", alias)
        if alias in deployments:
            yield ConfigProblem(path, f"{alias!r} is already a deployment's name")
        if not spec.targets:
            yield ConfigProblem(f"{path}.targets", "needs at least one deployment")
        for j, target in enumerate(spec.targets):
            if target not in deployments:
                yield ConfigProblem(f"{path}.targets[{j}]", f"no deployment named {target!r}")
        if spec.weights is not None and len(spec.weights) != len(spec.targets):
            yield ConfigProblem(f"{path}.weights", f"{len(spec.weights)} weights for "
                                f"{len(spec.targets)} targets; give one per target")


def _profile_problems(settings: Settings) -> Iterator[ConfigProblem]:
    deployments = set(_deployment_names(settings))
    names = [p.name for p in settings.profiles]
    first = _first_index(names)
    for i, name in enumerate(names):
        path = f"profiles[{i}].name"
        if first[name] != i:
            yield ConfigProblem(path, f"duplicate profile name {name!r} "
                                f"(first at profiles[{first[name]}])")
        elif name in deployments:
            yield ConfigProblem(path, f"{name!r} is already a deployment's name")
        elif name in settings.aliases:
            yield ConfigProblem(path, f"{name!r} is already an alias's name")


def _builtin_tool_problems(settings: Settings) -> Iterator[ConfigProblem]:
    for i, name in enumerate(settings.tools.builtin):
        if name not in BUILTIN:
            yield ConfigProblem(f"tools.builtin[{i}]", f"unknown builtin tool {name!r}; "
                                f"known: {', '.join(sorted(BUILTIN))}")
