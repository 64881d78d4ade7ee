"""OpenTelemetry: the tako span names, tracer setup and traced wrappers.

Spans: ``tako.orchestrator.run`` per request; ``tako.provider.chat`` per upstream attempt
(with gen_ai.* semantic-convention attributes); ``tako.tool.invoke`` per server-side tool
call; ``tako.policy.evaluate`` per policy stage. With tracing off no wrapper is installed
and these helpers cost a branch.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.propagate import extract
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from starlette.requests import Request

from tako.core.errors import TakoError
from tako.core.protocols import (
    EmbeddingRequest,
    Embeddings,
    LlmProvider,
    RunContext,
    Tool,
    embedder_of,
)
from tako.core.types import ChatChunk, ChatRequest, ChatResponse, End, Principal, Usage
from tako.providers.registry import telemetry_system


def build_tracer_provider(service_name: str, otlp_endpoint: str | None,
                          sample_ratio: float = 1.0) -> TracerProvider:
    """Spans export in batches from the SDK's worker thread, off the event loop."""
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}),
                              sampler=ParentBased(TraceIdRatioBased(sample_ratio)))
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = otlp_endpoint.rstrip("/")
        if not endpoint.endswith("/v1/traces"):
            endpoint += "/v1/traces"
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    return provider


def start_request_span(tracer: Tracer | None, request: Request) -> Span | None:
    """The request's root span, ``tako.orchestrator.run``, of kind SERVER: joined to the
    client's trace when it sent ``traceparent``. Made directly, one per request (no
    per-request framework instrumentation); ``run_attributes`` adds the run's kind and
    principal once they are known."""
    if tracer is None:
        return None
    headers = request.headers
    context = extract(headers) if "traceparent" in headers else None
    return tracer.start_span("tako.orchestrator.run", context=context, kind=SpanKind.SERVER,
                             attributes={"http.request.method": request.method,
                                         "url.path": request.url.path})


def run_attributes(span: Span | None, kind: str, principal: Principal) -> None:
    if span is not None:
        span.set_attributes({"tako.orchestrator.kind": kind,
                             "tako.principal.tenant_id": principal.tenant_id,
                             "tako.principal.user_id": principal.user_id})


@contextmanager
def use_span(span: Span | None) -> Iterator[None]:
    if span is None:
        yield
        return
    with trace.use_span(span, end_on_exit=False, record_exception=False,
                        set_status_on_exception=False):
        yield


def end_span(span: Span | None, usage: Usage, error: BaseException | None = None,
             status: int | None = None) -> None:
    if span is None or not span.is_recording():
        return
    if error is not None:
        _record_error(span, error)
    attributes: dict[str, Any] = {"tako.tokens.input": usage.prompt_tokens,
                                  "tako.tokens.output": usage.completion_tokens,
                                  "tako.cost.usd": usage.cost_usd}
    if status is not None:
        attributes["http.response.status_code"] = status
        if status >= 500 and error is None:
            span.set_status(Status(StatusCode.ERROR))
    span.set_attributes(attributes)
    span.end()


def _record_error(span: Span, exc: BaseException) -> None:
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, str(exc)[:200]))
    if isinstance(exc, TakoError):
        span.set_attribute("error.type", exc.code or exc.type)


def _usage_attributes(span: Span, usage: Usage, **more: Any) -> None:
    span.set_attributes({"tako.tokens.input": usage.prompt_tokens,
                         "tako.tokens.output": usage.completion_tokens,
                         "tako.cost.usd": usage.cost_usd,
                         "gen_ai.usage.input_tokens": usage.prompt_tokens,
                         "gen_ai.usage.output_tokens": usage.completion_tokens, **more})


class TracedProvider:
    """A deployment whose every call is a ``tako.provider.chat`` span, of kind CLIENT: the
    adapter's request carries it to the vendor as ``traceparent``."""

    def __init__(self, inner: LlmProvider, kind: str, tracer: Tracer) -> None:
        self.inner = inner
        self.id = inner.id
        self.model = inner.model
        self.tracer = tracer
        self.system = telemetry_system(kind)

    def estimate_cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        return self.inner.estimate_cost_usd(prompt_tokens, completion_tokens)

    async def aclose(self) -> None:
        await self.inner.aclose()

    def _start(self, req: ChatRequest, streaming: bool) -> Span:
        attributes: dict[str, Any] = {
            "tako.provider.id": self.id, "tako.provider.model": self.model,
            "gen_ai.operation.name": "chat", "gen_ai.system": self.system,
            "gen_ai.request.model": self.model, "tako.stream": streaming,
        }
        if req.temperature is not None:
            attributes["gen_ai.request.temperature"] = req.temperature
        if req.output_limit() is not None:
            attributes["gen_ai.request.max_tokens"] = req.output_limit()
        return self.tracer.start_span("tako.provider.chat", kind=SpanKind.CLIENT,
                                      attributes=attributes)

    async def chat(self, req: ChatRequest) -> ChatResponse:
        span = self._start(req, False)
        try:
            with trace.use_span(span, end_on_exit=False, record_exception=False,
                                set_status_on_exception=False):
                response = await self.inner.chat(req)
        except BaseException as exc:
            _record_error(span, exc)
            span.end()
            raise
        _usage_attributes(span, response.usage,
                          **{"gen_ai.response.model": response.model or self.model,
                             "gen_ai.response.finish_reasons": [response.finish_reason]})
        span.end()
        return response

    async def stream(self, req: ChatRequest) -> AsyncIterator[ChatChunk]:
        span = self._start(req, True)
        upstream = self.inner.stream(req)
        try:
            # the request goes out (with the span as traceparent) on the first read only
            with trace.use_span(span, end_on_exit=False, record_exception=False,
                                set_status_on_exception=False):
                item = await anext(upstream)
            while True:
                if isinstance(item, End):
                    _usage_attributes(span, item.usage, **{
                        "gen_ai.response.finish_reasons": [item.finish_reason]})
                yield item
                try:
                    item = await anext(upstream)
                except StopAsyncIteration:
                    break
        except BaseException as exc:
            _record_error(span, exc)
            raise
        finally:
            await upstream.aclose()  # type: ignore[attr-defined]
            span.end()


    async def embed(self, req: EmbeddingRequest) -> Embeddings:
        """A ``tako.provider.embeddings`` span around the deployment's embeddings call."""
        embedder = embedder_of(self.inner)
        span = self.tracer.start_span("tako.provider.embeddings", kind=SpanKind.CLIENT,
                                      attributes={
            "tako.provider.id": self.id, "tako.provider.model": self.model,
            "gen_ai.operation.name": "embeddings", "gen_ai.system": self.system,
            "gen_ai.request.model": self.model})
        try:
            with trace.use_span(span, end_on_exit=False, record_exception=False,
                                set_status_on_exception=False):
                result = await embedder.embed(req)
        except BaseException as exc:
            _record_error(span, exc)
            span.end()
            raise
        _usage_attributes(span, result.usage)
        span.end()
        return result


class TracedTool:
    """A server-side tool whose every call is a ``tako.tool.invoke`` span."""

    def __init__(self, inner: Tool, tracer: Tracer) -> None:
        self.inner = inner
        self.name = inner.name
        self.spec = inner.spec
        self.tracer = tracer

    async def invoke(self, arguments: dict[str, Any], ctx: RunContext) -> str:
        started = time.perf_counter()
        with self.tracer.start_as_current_span("tako.tool.invoke",
                                               attributes={"tako.tool.name": self.name}) as span:
            try:
                return await self.inner.invoke(arguments, ctx)
            finally:
                span.set_attribute("tako.tool.duration_ms",
                                   (time.perf_counter() - started) * 1000)
