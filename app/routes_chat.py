"""``POST /v1/chat/completions``: the hot path, written as a plain Starlette endpoint."""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
import orjson
from pydantic import ValidationError
from sse_starlette import EventSourceResponse
from starlette.requests import Request
from starlette.responses import Response

from tako.app import metrics
from tako.app.auth import PRINCIPAL
from tako.app.errors import validation_error
from tako.app.gateway import Gateway
from tako.app.observe import RequestRecord
from tako.app.policy_gate import PolicyGate, StreamFilter
from tako.app.sse import DONE, ChunkRenderer
from tako.app.telemetry import end_span, start_run_span, use_span
from tako.core.errors import (
    InternalError,
    InvalidRequest,
    ModelNotFound,
    PayloadTooLarge,
    PolicyDenied,
    TakoError,
)
from tako.core.protocols import LlmProvider, RunContext, StreamItem
from tako.core.tokens import estimate_output_tokens, estimate_prompt_tokens
from tako.core.types import ChatRequest, ChunkError, Delta, End, OrchEvent, Principal

log = logging.getLogger("tako.app")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def request_id_of(request: Request) -> str:
    """The client's ``x-request-id`` when it looks like one, else a fresh random id (an
    identifier, not a secret: no system entropy call per request)."""
    given = request.headers.get("x-request-id")
    if given and _REQUEST_ID.match(given):
        return given
    return f"{random.getrandbits(128):032x}"


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


def parse_request(body: bytes) -> tuple[ChatRequest, dict[str, Any]]:
    """The validated request and the ``tako`` opt-in options it carried."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"could not parse the JSON body: {exc}",
                             code="invalid_json") from exc
    if not isinstance(data, dict):
        raise InvalidRequest("the JSON body must be an object", code="invalid_json")
    options = data.pop("tako", None) or {}
    if not isinstance(options, dict):
        raise InvalidRequest("'tako' must be an object", param="tako")
    try:
        return ChatRequest.model_validate(data), options
    except ValidationError as exc:
        raise validation_error(exc) from exc


def as_tako_error(exc: Exception) -> TakoError:
    if isinstance(exc, TakoError):
        return exc
    log.exception("stream failed after the first byte")
    return InternalError("the gateway failed while streaming")


def _flag(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() in ("1", "true", "yes"))


class Upstreams:
    """Hands orchestrators guarded providers and remembers the last one that answered."""

    __slots__ = ("gw", "runtime", "admission", "last")

    def __init__(self, gw: Gateway, runtime: Any, admission: Any) -> None:
        self.gw = gw
        self.runtime = runtime
        self.admission = admission
        self.last: Any = None

    def __call__(self, alias: str) -> LlmProvider:
        providers, weights = self.gw.upstreams(alias)
        guarded = self.runtime.guard(self.admission, alias, providers, weights)
        self.last = guarded
        return guarded  # type: ignore[no-any-return]

    def answered_by(self) -> str | None:
        return getattr(self.last, "answered_by", None) if self.last is not None else None


async def chat_completions(request: Request) -> Response:
    record = RequestRecord(request_id_of(request))
    metrics.IN_FLIGHT.inc()
    try:
        return await _chat(request, record)
    except BaseException as exc:
        record.failed(exc)
        _done(record)
        raise


def _done(record: RequestRecord) -> None:
    if not record.done:
        metrics.IN_FLIGHT.dec()
        record.finish()


async def _chat(request: Request, record: RequestRecord) -> Response:
    state = request.app.state
    gw: Gateway = state.gateway
    runtime = state.runtime
    principal: Principal = request.scope[PRINCIPAL]
    record.principal = principal
    body = await read_body(request, gw.settings.server.max_body_bytes)
    req, options = parse_request(body)
    target = gw.target(req.model)
    if not principal.may_use(req.model):
        raise ModelNotFound(f"The model '{req.model}' does not exist or you do not have "
                            f"access to it.", param="model")
    gate: PolicyGate = state.policy
    requested = req.model
    req = await gate.before_chat(principal, req)
    if req.model != requested:
        target = gw.target(req.model)
    record.model, record.kind, record.stream = target.name, target.kind, bool(req.stream)
    prompt_tokens = estimate_prompt_tokens(req)
    output_tokens = estimate_output_tokens(req)
    admission = await runtime.admit(principal, req.model, prompt_tokens + output_tokens,
                                    gw.estimate_cost_usd(target, prompt_tokens, output_tokens))
    record.admission = admission
    upstreams = Upstreams(gw, runtime, admission)
    events = _flag(options.get("events")) or _flag(request.headers.get("x-tako-events"))
    ctx = RunContext(principal=principal, request_id=record.request_id, provider=upstreams,
                     tools=gate.tools(gw.tools, principal, req.model), emit_events=events,
                     trace=[] if _flag(options.get("trace")) else None)
    headers = {"x-request-id": record.request_id, **admission.headers}
    span = start_run_span(state.tracer, target.kind, principal)
    if not req.stream:
        try:
            with use_span(span):
                response = await target.orchestrator.complete(ctx, req)
        except BaseException as exc:
            record.usage = ctx.usage  # calls made before the failure were billed
            end_span(span, ctx.usage, exc)
            raise
        else:
            end_span(span, ctx.usage)
        finally:
            await runtime.release(admission)
        await gate.after_chat(principal, req.model, response)
        body_out = response.to_openai(requested)
        if ctx.trace is not None:
            body_out["tako_trace"] = ctx.trace
        _finish_headers(headers, upstreams, admission, record)
        record.usage = ctx.usage
        _done(record)
        return Response(orjson.dumps(body_out), media_type="application/json",
                        headers=headers)
    items = target.orchestrator.stream(ctx, req)
    try:
        with use_span(span):
            first = await anext(aiter(items))
    except StopAsyncIteration:
        await runtime.release(admission)
        error = InternalError("the orchestrator produced no output")
        end_span(span, ctx.usage, error)
        raise error from None
    except BaseException as exc:
        await runtime.release(admission)
        end_span(span, ctx.usage, exc)
        raise
    if isinstance(first, ChunkError):
        await _close(items, runtime, admission)
        end_span(span, ctx.usage, first.error)
        raise first.error
    record.first_token()
    _finish_headers(headers, upstreams, admission, record)
    renderer = ChunkRenderer(f"chatcmpl-{random.getrandbits(96):024x}", int(time.time()),
                             requested)
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    stream = StreamState(renderer, include_usage, events, runtime, admission, record, span,
                         ctx, gate.stream_filter(principal, req.model))
    return EventSourceResponse(sse_frames(first, items, stream), headers=headers, sep="\n",
                               ping=15, client_close_handler_callable=stream.client_left)


def _finish_headers(headers: dict[str, str], upstreams: Upstreams, admission: Any,
                    record: RequestRecord) -> None:
    elapsed = time.perf_counter() - record.started
    record.upstream_s = admission.upstream_seconds
    overhead = max(0.0, elapsed - record.upstream_s)
    headers["x-tako-overhead-ms"] = f"{overhead * 1000:.3f}"
    answered = upstreams.answered_by()
    if answered:
        headers["x-tako-deployment"] = answered
        record.deployment = answered


async def _close(items: AsyncIterator[StreamItem], runtime: Any, admission: Any) -> None:
    with anyio.CancelScope(shield=True):
        aclose = getattr(items, "aclose", None)
        if aclose is not None:
            await aclose()
        await runtime.release(admission)


@dataclass(slots=True)
class StreamState:
    renderer: ChunkRenderer
    include_usage: bool
    events: bool
    runtime: Any
    admission: Any
    record: RequestRecord
    span: Any
    ctx: RunContext
    guard: StreamFilter | None
    error: TakoError | None = None
    client_gone: bool = False

    async def client_left(self, _message: Any) -> None:
        """The server saw the client disconnect. Writes to a closed connection return at
        once, and while items keep flowing the cancellation of the sending task can be
        put off for the whole answer, so the frame loop checks this flag itself."""
        self.client_gone = True


async def sse_frames(first: StreamItem, items: AsyncIterator[StreamItem],
                     st: StreamState) -> AsyncIterator[bytes]:
    """Render stream items as SSE frames. A failure after the first byte becomes an error
    frame; ``[DONE]`` always ends the stream; the upstream is closed (and the spend
    reconciled) also when the client goes away."""
    renderer = st.renderer
    failed = False
    try:
        item: StreamItem | None = first
        iterator = aiter(items)
        while item is not None:
            if st.client_gone:  # stop the run (and its upstream calls) now
                st.record.status, st.record.error_type = 499, "client_disconnected"
                return
            if isinstance(item, Delta):
                if st.guard is not None and item.content:
                    item = Delta(st.guard.feed(item.content), item.tool_calls, item.role)
                    if not item.content and not item.tool_calls and renderer.role_sent:
                        item = None
                if item is not None:
                    yield renderer.delta(item)
            elif isinstance(item, OrchEvent):
                if st.events:
                    yield renderer.event(item)
            elif isinstance(item, ChunkError):
                failed = True
                st.error = item.error
                st.record.failed(item.error)
                yield renderer.error(item.error)
            elif isinstance(item, End):
                if not failed and st.guard is not None:
                    try:
                        tail = await st.guard.finish()
                        if tail:
                            yield renderer.delta(Delta(content=tail))
                    except PolicyDenied as exc:
                        failed = True
                        st.error = exc
                        st.record.failed(exc)
                        yield renderer.error(exc)
                if not failed:
                    yield renderer.finish(item.finish_reason)
                    if st.include_usage:
                        yield renderer.usage(item.usage)
                break
            try:
                with use_span(st.span):
                    item = await anext(iterator)
            except StopAsyncIteration:
                item = None
            except Exception as exc:  # noqa: BLE001 - any failure becomes an error frame
                failed = True
                error = as_tako_error(exc)
                st.error = error
                st.record.failed(error)
                yield renderer.error(error)
                item = None
        yield DONE
    except BaseException as exc:
        if not isinstance(exc, GeneratorExit | anyio.get_cancelled_exc_class()):
            st.record.failed(exc)
        else:
            st.record.status, st.record.error_type = 499, "client_disconnected"
        raise
    finally:
        await _close(items, st.runtime, st.admission)
        st.record.usage = st.ctx.usage
        end_span(st.span, st.ctx.usage, st.error)
        _done(st.record)
