"""``/healthz``: the process is up. ``/readyz``: the backends it needs answer."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response


async def healthz(request: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


async def readyz(request: Request) -> Response:
    """Each check is ``(probe, required)``: a failing required backend makes the replica
    unready; a failing optional one (a fail_open backend) is only reported."""
    checks: dict[str, bool] = {}
    ready = True
    for name, (check, required) in request.app.state.readiness.items():
        try:
            checks[name] = bool(await check())
        except Exception:  # noqa: BLE001 - a failing check means not ready
            checks[name] = False
        ready = ready and (checks[name] or not required)
    body = {"status": "ready" if ready else "unavailable", "checks": checks}
    return Response(orjson.dumps(body), status_code=200 if ready else 503,
                    media_type="application/json")
