"""What an ingress supplies to the request path: parsing, rendering and its error shape."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from starlette.responses import Response

from tako.core.errors import TakoError
from tako.core.protocols import RunContext
from tako.core.types import ChatRequest, ChatResponse, Delta, End, OrchEvent, Principal

#: I/O an ingress does for one request, given the caller
Hook = Callable[[Principal], Awaitable[None]]


@dataclass(slots=True)
class Parsed:
    """An ingress request in tako's terms: the chat request to run, the ``tako`` opt-in
    options (events, trace) and whatever the renderer needs of the original.

    ``prepare`` runs once the caller is known, before anything is checked or admitted (it
    may replace ``request``, e.g. with a stored conversation it continues); ``finish`` runs
    once the answer is rendered, before its last bytes are sent (e.g. to keep it)."""

    request: ChatRequest
    options: dict[str, Any] = field(default_factory=dict)
    original: Any = None
    prepare: Hook | None = None
    finish: Hook | None = None


class FrameRenderer(Protocol):
    """Stream items as the ingress's SSE frames (bytes, ready to send)."""

    @property
    def started(self) -> bool: ...

    def delta(self, delta: Delta) -> bytes: ...

    def event(self, event: OrchEvent) -> bytes | None: ...

    def error(self, error: TakoError) -> bytes: ...

    def end(self, end: End) -> bytes: ...

    def done(self) -> bytes: ...


class Ingress(Protocol):
    #: the ``api`` label in metrics and the access log
    api: str

    def parse(self, body: bytes) -> Parsed: ...

    def render(self, parsed: Parsed, response: ChatResponse, ctx: RunContext) -> bytes: ...

    def frames(self, parsed: Parsed) -> FrameRenderer: ...

    def error_response(self, error: TakoError) -> Response: ...
