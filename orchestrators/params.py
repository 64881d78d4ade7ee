"""What every orchestrator kind's params model is made of.

Each kind parses its ``params`` with its own model (``SingleParams``, ``ConductorParams``,
...), defined next to the code that reads it. Unknown params and values of the wrong type
are validation errors at their location, and so are the names a profile refers to:
``Alias`` (a deployment or alias) and ``ToolName`` (a server-side tool), checked against
the ``KnownNames`` given as the validation context.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    PlainValidator,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

NAMES = "names"  # the key of KnownNames in the validation context


@dataclass(frozen=True, slots=True)
class KnownNames:
    """The names a profile may refer to.

    ``tools`` are known tool names; a name ``<prefix>__<tool>`` is also known for each of
    ``tool_prefixes`` (MCP servers whose tool names are only learnt when they connect).
    With ``open_tools`` (an MCP server that declares neither) any other name may be one of
    its tools: it is accepted and added to ``unverified_tools``, to be looked for once the
    servers are connected. Without KnownNames in the context (an in-process run, whose
    providers come with the request) names are not checked."""

    aliases: frozenset[str]
    tools: frozenset[str] = frozenset()
    tool_prefixes: frozenset[str] = frozenset()
    open_tools: bool = False
    unverified_tools: set[str] = field(default_factory=set)

    def knows_tool(self, name: str) -> bool:
        return name in self.tools or any(name.startswith(f"{p}__") and len(name) > len(p) + 2
                                         for p in self.tool_prefixes)

    def context(self) -> dict[str, Any]:
        return {NAMES: self}


def known_names(info: ValidationInfo) -> KnownNames | None:
    context = info.context
    names = context.get(NAMES) if isinstance(context, dict) else None
    return names if isinstance(names, KnownNames) else None


def _known_alias(name: str, info: ValidationInfo) -> str:
    names = known_names(info)
    if names is not None and name not in names.aliases:
        raise ValueError(f"no deployment or alias named {name!r}")
    return name


def _known_tool(name: str, info: ValidationInfo) -> str:
    names = known_names(info)
    if names is None or names.knows_tool(name):
        return name
    if names.open_tools:
        names.unverified_tools.add(name)
        return name
    known = ", ".join(sorted(names.tools)) or "none"
    prefixes = "".join(f", {p}__*" for p in sorted(names.tool_prefixes))
    raise ValueError(f"unknown tool {name!r}; known: {known}{prefixes}")


Alias = Annotated[str, AfterValidator(_known_alias)]
ToolName = Annotated[str, AfterValidator(_known_tool)]


class Params(BaseModel):
    """Base of the params models: an unknown param is an error, parsed params are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _alias_pool(value: Any, info: ValidationInfo) -> tuple[str, ...]:
    if isinstance(value, str):
        return (validate_under(Alias, value, info),)
    pool = tuple(validate_under(list[Alias], value, info))
    if not pool:
        raise ValueError("needs at least one alias")
    return pool


AliasPool = Annotated[tuple[str, ...], PlainValidator(_alias_pool)]
"""One alias or a non-empty list of aliases."""


def prompt_template(*fields: str) -> AfterValidator:
    """A ``str.format`` template that may use only ``fields``."""

    def check(template: str) -> str:
        try:
            named = [name for _, name, _, _ in string.Formatter().parse(template) if name]
        except ValueError as exc:
            raise ValueError(f"not a valid str.format template: {exc}") from None
        unknown = sorted({n for n in named if n not in fields})
        if unknown:
            raise ValueError(f"unknown placeholders {unknown}; allowed: {list(fields)}")
        return template

    return AfterValidator(check)


def validate_under(kind: Any, value: Any, info: ValidationInfo, *loc: str | int) -> Any:
    """``value`` validated as ``kind`` (a model or a type) in this validation's context;
    its errors are placed at ``loc`` below the value being validated."""
    return validate(kind, value, info.context, *loc)


def validate(kind: Any, value: Any, context: dict[str, Any] | None, *loc: str | int) -> Any:
    try:
        return _adapter(kind).validate_python(value, context=context)
    except ValidationError as error:
        if not loc:
            raise
        raise relocated(error, loc) from None


def invalid(message: str, value: Any, *loc: str | int) -> ValidationError:
    """A validation error at ``loc`` below the value being validated."""
    return ValidationError.from_exception_data("config", [_detail(message, value, loc)])


def relocated(error: ValidationError, loc: tuple[str | int, ...]) -> ValidationError:
    details = [_detail(e["msg"], e["input"], (*loc, *e["loc"])) for e in error.errors()]
    return ValidationError.from_exception_data(error.title, details)


def parse_params(model: type[Params], value: Any, info: ValidationInfo, what: str,
                 *loc: str | int) -> Any:
    """``validate_under`` for a params model: an unknown param is told what is accepted."""
    try:
        return validate(model, value, info.context)
    except ValidationError as error:
        accepted = f"unknown {what}; accepted: {', '.join(model.model_fields)}"
        details = [_detail(accepted if _unknown_name(e) else e["msg"], e["input"],
                           (*loc, *e["loc"])) for e in error.errors()]
        raise ValidationError.from_exception_data(error.title, details) from None


def _unknown_name(error: Any) -> bool:
    return error["type"] == "extra_forbidden" and len(error["loc"]) == 1


def _detail(message: str, value: Any, loc: tuple[str | int, ...]) -> InitErrorDetails:
    return InitErrorDetails(type=PydanticCustomError("config", "{message}",
                                                     {"message": message}),
                            loc=loc, input=value)


_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}


def _adapter(kind: Any) -> TypeAdapter[Any]:
    adapter = _ADAPTERS.get(kind)
    if adapter is None:
        adapter = _ADAPTERS[kind] = TypeAdapter(kind)
    return adapter
