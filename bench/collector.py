"""A tiny OTLP/HTTP trace collector for the tracing-on rows.

``POST /v1/traces`` takes an ``ExportTraceServiceRequest`` (protobuf, gzip or not),
counts its spans and bytes per ``service.name``, and answers 200 with an empty protobuf
body (an empty ``ExportTraceServiceResponse``: everything accepted). ``GET /stats``
returns the counts as JSON: ``{service: {"exports": ..., "spans": ..., "bytes": ...}}``.
Runs under uvicorn with the flags ``tako serve`` uses.

    .venv/bin/python bench/collector.py --port 4318
"""

from __future__ import annotations

import argparse
import gzip
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import uvicorn
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

PROTOBUF = b"application/x-protobuf"


def service_name(resource_spans: ResourceSpans) -> str:
    for attribute in resource_spans.resource.attributes:
        if attribute.key == "service.name":
            return str(attribute.value.string_value)
    return "unknown"


def spans_by_service(payload: bytes) -> dict[str, int]:
    export = ExportTraceServiceRequest()
    export.ParseFromString(payload)
    counts: dict[str, int] = {}
    for resource_spans in export.resource_spans:
        name = service_name(resource_spans)
        spans = sum(len(scope_spans.spans) for scope_spans in resource_spans.scope_spans)
        counts[name] = counts.get(name, 0) + spans
    return counts


async def read_body(receive: Receive) -> bytes:
    parts = []
    more = True
    while more:
        message = await receive()
        parts.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(parts)


async def answer(send: Send, status: int, body: bytes, content_type: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class Collector:
    """The ASGI app; its counts live on the instance."""

    def __init__(self) -> None:
        self.counts: dict[str, dict[str, int]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        route = (scope["method"], scope["path"])
        if route == ("POST", "/v1/traces"):
            await self.accept_export(scope, receive, send)
        elif route == ("GET", "/stats"):
            await answer(send, 200, json.dumps(self.counts).encode(), b"application/json")
        else:
            await answer(send, 404, b"", b"text/plain")

    async def accept_export(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await read_body(receive)
        size = len(body)
        if (b"content-encoding", b"gzip") in scope["headers"]:
            body = gzip.decompress(body)
        for name, spans in spans_by_service(body).items():
            counts = self.counts.setdefault(name, {"exports": 0, "spans": 0, "bytes": 0})
            counts["exports"] += 1
            counts["spans"] += spans
            counts["bytes"] += size  # an export from one tako holds one service's spans
        await answer(send, 200, b"", PROTOBUF)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(Collector(), host="127.0.0.1", port=args.port, workers=1,
                log_level="warning", access_log=False, proxy_headers=False,
                timeout_graceful_shutdown=30, lifespan="off")


if __name__ == "__main__":
    main()
