"""One request's life, owned by one object from the first byte read to the last frame sent.

A ``Call`` holds the access-log record, the in-flight gauge, the admission and its release,
the run span, the open stream and the usage the run spent. ``close`` runs once on every
exit — success, error, policy denial, client disconnect, cancellation — and is safe to call
again. Route handlers only parse, authorise, run and render inside ``async with Call(...)``;
a streamed answer hands the call to its response (``CallStream``), which closes it when the
stream ends however it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

import anyio
from opentelemetry.trace import Span, Tracer
from sse_starlette import EventSourceResponse
from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive, Scope, Send

from tako.app import metrics
from tako.app.observe import RequestRecord
from tako.app.telemetry import end_span, run_attributes, start_request_span
from tako.core.protocols import RunContext, StreamItem
from tako.core.types import Principal, Usage
from tako.runtime.admission import Admission
from tako.runtime.runtime import Runtime


class ClientLeft(Exception):
    """The client closed its connection before the answer was ready."""


# the server runs on asyncio; ClientDisconnect: the client left while sending its body
CLIENT_LEFT = (ClientLeft, ClientDisconnect, GeneratorExit, asyncio.CancelledError)


_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def request_id_of(request: Request) -> str:
    """The client's ``x-request-id`` when it looks like one, else a fresh random id (an
    identifier, not a secret: no system entropy call per request)."""
    given = request.headers.get("x-request-id")
    if given and _REQUEST_ID.match(given):
        return given
    return f"{random.getrandbits(128):032x}"


class Call:
    __slots__ = ("record", "runtime", "tracer", "admission", "span", "ctx",
                 "items", "error", "closed", "handed_off", "client_left")

    def __init__(self, runtime: Runtime, tracer: Tracer | None, request: Request) -> None:
        self.record = RequestRecord(request_id_of(request))
        self.runtime = runtime
        self.tracer = tracer
        self.admission: Admission | None = None
        self.span = start_request_span(tracer, request)
        self.ctx: RunContext | None = None
        self.items: AsyncIterator[StreamItem] | None = None
        self.error: BaseException | None = None
        self.closed = False
        self.handed_off = False
        self.client_left = False
        metrics.IN_FLIGHT.inc()

    async def __aenter__(self) -> Call:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if exc is not None:
            self.fail(exc)
        if exc is not None or not self.handed_off:
            await self.close()

    @property
    def usage(self) -> Usage:
        """What the run spent: the usage upstreams reported, plus what was charged from an
        estimate where they reported none."""
        usage = self.ctx.usage.model_copy() if self.ctx is not None else Usage()
        if self.admission is not None:
            usage.add(self.admission.estimated)
        return usage

    async def admit(self, principal: Principal, model: str, est_tokens: int,
                    est_cost_usd: float) -> Admission:
        self.admission = await self.runtime.admit(principal, model, est_tokens, est_cost_usd)
        self.record.admission = self.admission
        return self.admission

    def start_run(self, kind: str, principal: Principal) -> Span | None:
        run_attributes(self.span, kind, principal)
        return self.span

    def fail(self, exc: BaseException) -> None:
        """Note the first failure: a client that left is a 499, anything else its error."""
        if self.error is not None:
            return
        self.error = exc
        if isinstance(exc, CLIENT_LEFT):
            self.record.status, self.record.error_type = 499, "client_disconnected"
        else:
            self.record.failed(exc)

    @contextlib.asynccontextmanager
    async def watching_client(self, receive: Receive) -> AsyncIterator[None]:
        """Cancel the work inside when the client disconnects, so that a request nobody waits
        for stops calling (and paying) upstreams; it then raises ClientLeft. Start it only
        after the body was read: it takes over ``receive``. One task per request."""
        task = asyncio.current_task()
        assert task is not None
        watcher = asyncio.get_running_loop().create_task(self._watch(receive, task))
        try:
            yield
        except asyncio.CancelledError:
            if not self.client_left:
                raise
            raise ClientLeft() from None
        finally:
            watcher.cancel()
            if self.client_left and task.cancelling():
                task.uncancel()

    async def _watch(self, receive: Receive, task: asyncio.Task[Any]) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.client_left = True
        task.cancel()

    def hand_off(self) -> None:
        """The response body now owns the call and closes it when it is done."""
        self.handed_off = True

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            with anyio.CancelScope(shield=True):
                await self._release()
        finally:
            usage = self.usage
            self.record.usage = usage
            end_span(self.span, usage, self.error, self.record.status)
            metrics.IN_FLIGHT.dec()
            self.record.finish()

    async def _release(self) -> None:
        items, self.items = self.items, None
        aclose = getattr(items, "aclose", None)
        if aclose is not None:
            await aclose()
        if self.admission is not None:
            await self.runtime.release(self.admission)


class CallStream(EventSourceResponse):
    """An SSE response that owns its call: whatever ends the response (the last frame, a
    failure, the client leaving, cancellation) closes the call exactly once."""

    def __init__(self, call: Call, frames: AsyncIterator[bytes], **kwargs: Any) -> None:
        super().__init__(frames, **kwargs)
        self.call = call
        call.hand_off()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except BaseException as exc:
            self.call.fail(exc)
            raise
        finally:
            await self.call.close()
