"""``/healthz``: the process is up. ``/readyz``: the backends it needs answer."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from tako.app.fastpath import Endpoint
from tako.app.services import ReadinessCheck


async def healthz(request: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


def readiness_endpoint(checks: dict[str, ReadinessCheck]) -> Endpoint:
    """``/readyz``. Each check is ``(probe, required)``: a failing required backend makes
    the replica unready; a failing optional one (a fail_open backend) is only reported."""

    async def readyz(request: Request) -> Response:
        results: dict[str, bool] = {}
        ready = True
        for name, (check, required) in checks.items():
            try:
                results[name] = bool(await check())
            except Exception:  # noqa: BLE001 - a failing check means not ready
                results[name] = False
            ready = ready and (results[name] or not required)
        body = {"status": "ready" if ready else "unavailable", "checks": results}
        return Response(orjson.dumps(body), status_code=200 if ready else 503,
                        media_type="application/json")

    return readyz
