"""A real ``tako serve`` with ``telemetry.otlp_endpoint`` exports its spans over OTLP/HTTP
to a loopback collector, in the client's trace, and passes the trace on to the vendor."""

from __future__ import annotations

import gzip
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import openai
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.fakes.openai import FakeOpenAI
from tests.support.gateway import TEST_KEY, Gateway, basic_config, gateway
from tests.support.net import serve_asgi
from tests.support.upstreams import served

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"


@dataclass
class ExportedSpan:
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    service: str
    attributes: dict[str, object] = field(default_factory=dict)


class Collector:
    """An OTLP/HTTP trace receiver (protobuf bodies on ``POST /v1/traces``)."""

    def __init__(self) -> None:
        self.spans: list[ExportedSpan] = []

    async def traces(self, request: Request) -> Response:
        body = await request.body()
        if request.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        export = ExportTraceServiceRequest.FromString(body)
        for resource_spans in export.resource_spans:
            service = next((a.value.string_value for a in resource_spans.resource.attributes
                            if a.key == "service.name"), "")
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(ExportedSpan(
                        span.name, span.trace_id.hex(), span.span_id.hex(),
                        span.parent_span_id.hex(), service,
                        {a.key: getattr(a.value, a.value.WhichOneof("value"))
                         for a in span.attributes if a.value.WhichOneof("value")}))
        return Response(ExportTraceServiceResponse().SerializeToString(),
                        media_type="application/x-protobuf")

    def wait_for(self, *names: str, timeout: float = 10) -> list[ExportedSpan]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(any(s.name == n for s in self.spans) for n in names):
                break
            time.sleep(0.05)
        return list(self.spans)


@pytest.fixture(scope="module")
def collector() -> Iterator[tuple[str, Collector]]:
    receiver = Collector()
    app = Starlette(routes=[Route("/v1/traces", receiver.traces, methods=["POST"])])
    with serve_asgi(app) as url:
        yield url, receiver


upstream = served()


@pytest.fixture(scope="module")
def gw(collector: tuple[str, Collector],
       upstream: tuple[str, FakeOpenAI]) -> Iterator[Gateway]:
    config = basic_config(telemetry={"otlp_endpoint": collector[0],
                                     "service_name": "tako-otlp-test"})
    config["deployments"].append(
        {"name": "upstream", "provider": "http-generic", "model": "served-model",
         "base_url": upstream[0] + "/v1", "price": {"input": 2.0, "output": 8.0}})
    with gateway(config, env={"OTEL_BSP_SCHEDULE_DELAY": "50"}) as g:
        yield g


def test_spans_reach_the_collector_in_the_clients_trace(
        gw: Gateway, collector: tuple[str, Collector],
        upstream: tuple[str, FakeOpenAI]) -> None:
    client = openai.OpenAI(base_url=gw.base_url, api_key=TEST_KEY, max_retries=0)
    client.chat.completions.create(
        model="upstream", messages=[{"role": "user", "content": "exported"}],
        extra_headers={"traceparent": f"00-{TRACE_ID}-b7ad6b7169203331-01"})
    spans = [s for s in collector[1].wait_for("tako.orchestrator.run", "tako.provider.chat")
             if s.trace_id == TRACE_ID]
    by_name = {s.name: s for s in spans}
    run, chat = by_name["tako.orchestrator.run"], by_name["tako.provider.chat"]
    assert {s.service for s in spans} == {"tako-otlp-test"}
    assert run.parent_id == "b7ad6b7169203331"  # the run is the root, below the client
    by_id = {s.span_id: s for s in spans}

    def ancestor_names(span: ExportedSpan) -> list[str]:
        names = []
        while span.parent_id in by_id:
            span = by_id[span.parent_id]
            names.append(span.name)
        return names

    assert "tako.orchestrator.run" in ancestor_names(chat)
    assert ancestor_names(run) == []
    assert run.attributes["tako.orchestrator.kind"] == "deployment"
    assert run.attributes["tako.principal.tenant_id"] == "acme"
    assert chat.attributes["gen_ai.request.model"] == "served-model"
    assert chat.attributes["tako.tokens.input"] == 12
    assert chat.attributes["tako.cost.usd"] == pytest.approx((12 * 2 + 5 * 8) / 1e6)

    (received,) = upstream[1].requests
    assert received.headers["traceparent"].split("-")[1] == TRACE_ID
