"""The thin proxy baseline: the least a Python gateway can do, to measure tako against.

A Starlette app under uvicorn with the server flags ``tako serve`` uses (one worker, no
access log, no proxy headers, lifespan on). Every POST is forwarded, body untouched, to
the same path on the upstream through one pooled aiohttp ClientSession; the answer's
bytes come back as they are, a ``text/event-stream`` answer passed through chunk by chunk
as it arrives. No auth, no parsing, no accounting.

    .venv/bin/python bench/baseline.py --port 9001 --upstream http://127.0.0.1:9000
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

POOL_SIZE = 256  # tako's DeploymentSpec.max_connections default
KEEPALIVE_S = 30.0
GRACEFUL_SHUTDOWN_S = 30  # tako's server.graceful_shutdown_s default


async def _pass_through(upstream_answer: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    try:
        async for chunk in upstream_answer.content.iter_any():
            yield chunk
    finally:
        upstream_answer.release()


def build_app(upstream: str) -> Starlette:
    upstream = upstream.rstrip("/")
    pool: dict[str, aiohttp.ClientSession] = {}

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=POOL_SIZE, keepalive_timeout=KEEPALIVE_S)
        pool["session"] = aiohttp.ClientSession(connector=connector, trust_env=False)
        yield
        await pool["session"].close()

    async def forward(request: Request) -> Response:
        body = await request.body()
        answer = await pool["session"].post(
            upstream + request.url.path, data=body,
            headers={"content-type": request.headers.get("content-type", "application/json")})
        media_type = answer.headers.get("content-type", "application/json")
        if answer.content_type == "text/event-stream":
            return StreamingResponse(_pass_through(answer), status_code=answer.status,
                                     media_type=media_type)
        payload = await answer.read()
        answer.release()
        return Response(payload, status_code=answer.status, media_type=media_type)

    return Starlette(routes=[Route("/{path:path}", forward, methods=["POST"])],
                     lifespan=lifespan)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="the upstream's origin")
    args = parser.parse_args()
    uvicorn.run(build_app(args.upstream), host="127.0.0.1", port=args.port, workers=1,
                log_level="warning", access_log=False, proxy_headers=False,
                timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S, lifespan="on")


if __name__ == "__main__":
    main()
