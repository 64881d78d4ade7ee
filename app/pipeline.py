"""The one request path every ingress runs: read, parse (the ingress), authorise, admit,
run the model's orchestrator, render (the ingress), all inside one ``Call``.

An ingress (``tako.app.ingress``) only translates: its request into a ChatRequest, the
answer and the stream items into its own shapes, errors into its error body.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from tako.app.auth import PRINCIPAL
from tako.app.call import Call, CallStream, ClientLeft
from tako.app.fastpath import Endpoint
from tako.app.gateway import Gateway
from tako.app.ingress.base import FrameRenderer, Ingress, Parsed
from tako.app.observe import RequestRecord
from tako.app.policy_gate import StreamFilter
from tako.app.services import Services
from tako.app.telemetry import use_span
from tako.core.errors import (
    InternalError,
    ModelNotFound,
    PayloadTooLarge,
    PolicyDenied,
    RequestTimeout,
    TakoError,
)
from tako.core.protocols import LlmProvider, RunContext, StreamItem
from tako.core.tokens import estimate_output_tokens, estimate_prompt_tokens
from tako.core.types import ChunkError, Delta, End, OrchEvent, Principal
from tako.runtime.admission import Admission
from tako.runtime.runtime import Runtime

log = logging.getLogger("tako.app")


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body is larger than the limit of {limit} bytes")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is larger than the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def as_tako_error(exc: Exception) -> TakoError:
    if isinstance(exc, TakoError):
        return exc
    log.exception("stream failed after the first byte")
    return InternalError("the gateway failed while streaming")


def _flag(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() in ("1", "true", "yes"))


class Upstreams:
    """Hands orchestrators each alias wrapped in the runtime stack for this request."""

    __slots__ = ("gw", "runtime", "admission")

    def __init__(self, gw: Gateway, runtime: Runtime, admission: Admission) -> None:
        self.gw = gw
        self.runtime = runtime
        self.admission = admission

    def __call__(self, alias: str) -> LlmProvider:
        providers, weights = self.gw.upstreams(alias)
        return self.runtime.alias_provider(self.admission, alias, providers, weights)


def ingress_endpoint(ingress: Ingress, services: Services) -> Endpoint:
    """The endpoint of ``ingress`` over ``services``: parse, authorise, run, render; its
    errors in the ingress's own shape."""
    server = services.settings.server

    async def endpoint(request: Request) -> Response:
        try:
            async with Call(services.runtime, services.tracer, request) as call:
                call.record.principal = request.scope[PRINCIPAL]
                call.record.api = ingress.api
                body = await read_body(request, server.max_body_bytes)
                async with call.watching_client(request.receive):
                    return await _within_deadline(ingress, request, call, body, services)
        except ClientLeft:
            return Response(status_code=499)  # nobody reads it
        except TakoError as error:
            return ingress.error_response(error)

    return endpoint


async def _within_deadline(ingress: Ingress, request: Request, call: Call, body: bytes,
                           services: Services) -> Response:
    limit = services.settings.server.request_timeout_s
    try:
        async with asyncio.timeout(limit):
            return await _run(ingress, request, call, ingress.parse(body), services)
    except TimeoutError:
        raise RequestTimeout(f"the request did not finish within the gateway's limit of "
                             f"{limit:g}s (server.request_timeout_s)") from None


async def _run(ingress: Ingress, request: Request, call: Call, parsed: Parsed,
               services: Services) -> Response:
    gw = services.gateway
    record = call.record
    principal: Principal = request.scope[PRINCIPAL]
    if parsed.prepare is not None:
        await parsed.prepare(principal)
    req, options = parsed.request, parsed.options
    target = gw.target(req.model)
    if not principal.may_use(req.model):
        raise ModelNotFound(f"The model '{req.model}' does not exist or you do not have "
                            f"access to it.", param="model")
    gate = services.policy
    requested = req.model
    req = await gate.before_chat(principal, req)
    if req.model != requested:
        target = gw.target(req.model)
    record.model, record.kind, record.stream = target.name, target.kind, bool(req.stream)
    prompt_tokens = estimate_prompt_tokens(req)
    output_tokens = estimate_output_tokens(req)
    admission = await call.admit(principal, req.model, prompt_tokens + output_tokens,
                                 gw.estimate_cost_usd(target, prompt_tokens, output_tokens))
    events = _flag(options.get("events")) or _flag(request.headers.get("x-tako-events"))
    ctx = call.ctx = RunContext(
        principal=principal, request_id=record.request_id,
        provider=Upstreams(gw, call.runtime, admission),
        tools=gate.tools(gw.tools, principal, req.model), emit_events=events,
        trace=[] if _flag(options.get("trace")) else None)
    headers = {"x-request-id": record.request_id, **admission.headers}
    span = call.start_run(target.kind, principal)
    if not req.stream:
        with use_span(span):
            response = await target.orchestrator.complete(ctx, req)
        await gate.after_chat(principal, req.model, response)
        _finish_headers(headers, ctx, admission, record)
        headers["x-tako-cost-usd"] = f"{call.usage.cost_usd:.9f}"  # what the run spent
        rendered = ingress.render(parsed, response, ctx)
        if parsed.finish is not None:
            await parsed.finish(principal)
        return Response(rendered, media_type="application/json", headers=headers)
    items = call.items = target.orchestrator.stream(ctx, req)
    try:
        with use_span(span):
            first = await anext(aiter(items))
    except StopAsyncIteration:
        raise InternalError("the orchestrator produced no output") from None
    if isinstance(first, ChunkError):
        raise first.error
    record.first_token()
    _finish_headers(headers, ctx, admission, record)
    stream = FrameWriter(ingress.frames(parsed), events, call,
                         gate.stream_filter(principal, req.model))
    if parsed.finish is not None:
        stream.finish = partial(parsed.finish, principal)
    return CallStream(call, sse_frames(first, items, stream), headers=headers, sep="\n",
                      ping=15, client_close_handler_callable=stream.client_left)


def _finish_headers(headers: dict[str, str], ctx: RunContext, admission: Admission,
                    record: RequestRecord) -> None:
    elapsed = time.perf_counter() - record.started
    record.upstream_s = admission.upstream_seconds
    overhead = max(0.0, elapsed - record.upstream_s)
    headers["x-tako-overhead-ms"] = f"{overhead * 1000:.3f}"
    answered = ctx.answered_by
    if answered:
        headers["x-tako-deployment"] = answered
        record.deployment = answered


@dataclass(slots=True)
class FrameWriter:
    renderer: FrameRenderer
    events: bool
    call: Call
    response_filter: StreamFilter | None
    failed: bool = False
    broken: bool = False  # the run itself raised: nothing more will come
    client_gone: bool = False
    finish: Callable[[], Awaitable[None]] | None = None  # the ingress's, before the end frame

    async def client_left(self, _message: Any) -> None:
        """The server saw the client disconnect. Writes to a closed connection return at
        once, and while items keep flowing the cancellation of the sending task can be
        put off for the whole answer, so the frame loop checks this flag itself."""
        self.client_gone = True

    def error_frame(self, error: TakoError) -> bytes:
        self.failed = True
        self.call.fail(error)
        return self.renderer.error(error)

    def delta_frame(self, item: Delta) -> bytes | None:
        if self.response_filter is not None and (item.content or item.tool_calls):
            item = self.response_filter.filter_delta(item)
            if not item.content and not item.tool_calls and self.renderer.started:
                return None
        return self.renderer.delta(item)

    async def end_frames(self, end: End) -> AsyncIterator[bytes]:
        if not self.failed and self.response_filter is not None:
            try:
                tail = await self.response_filter.finish_delta()
                if tail is not None:
                    yield self.renderer.delta(tail)
            except PolicyDenied as exc:
                yield self.error_frame(exc)
        if not self.failed:
            frame = self.renderer.end(end)
            if self.finish is not None:
                await self.finish()
            yield frame

    def frame_of(self, item: StreamItem) -> bytes | None:
        if isinstance(item, Delta):
            return self.delta_frame(item)
        if isinstance(item, OrchEvent):
            return self.renderer.event(item) if self.events else None
        if isinstance(item, ChunkError):
            return self.error_frame(item.error)
        return None


async def sse_frames(first: StreamItem, items: AsyncIterator[StreamItem],
                     st: FrameWriter) -> AsyncIterator[bytes]:
    """Render stream items as the ingress's SSE frames. A failure after the first byte
    becomes an error frame; the ingress's closing frame always ends the stream. The call
    (upstream, spend, span, record) is closed by the response that owns it, also when the
    client goes away."""
    span = st.call.span
    try:
        item: StreamItem | None = first
        iterator = aiter(items)
        while item is not None:
            if st.client_gone:  # stop the run (and its upstream calls) now
                st.call.fail(GeneratorExit())
                return
            if isinstance(item, End):
                async for frame in st.end_frames(item):
                    yield frame
                break
            frame = st.frame_of(item)
            if frame is not None:
                yield frame
            item = None if st.broken else await _next_item(iterator, span, st)
        yield st.renderer.done()
    except BaseException as exc:
        st.call.fail(exc)
        raise


async def _next_item(iterator: AsyncIterator[StreamItem], span: Any,
                     st: FrameWriter) -> StreamItem | None:
    """The next item; a failure of the run becomes a ChunkError item."""
    try:
        with use_span(span):
            return await anext(iterator)
    except StopAsyncIteration:
        return None
    except Exception as exc:  # noqa: BLE001 - any failure becomes an error frame
        st.broken = True
        return ChunkError(as_tako_error(exc))
