"""``GET /v1/models`` and ``GET /v1/models/{id}``: what the caller may use."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from tako.app.auth import PRINCIPAL
from tako.app.fastpath import Endpoint
from tako.app.gateway import Target
from tako.app.services import Services
from tako.core.errors import ModelNotFound
from tako.core.types import Principal


def model_object(target: Target, created: int,
                 capabilities: list[str] | None = None) -> dict[str, Any]:
    return {"id": target.name, "object": "model", "created": created,
            "owned_by": target.owned_by, "tako_kind": target.kind,
            "tako_capabilities": capabilities or ["chat"]}


def capabilities_of(services: Services) -> dict[str, list[str]]:
    """Each deployment's and alias's capabilities (an alias serves what all its
    deployments serve); a profile serves chat."""
    gw = services.gateway
    own = {spec.name: spec.capabilities() for spec in services.settings.deployments
           if spec.name in gw.deployments}
    for name, served in own.items():
        if "embeddings" in served and not callable(getattr(gw.deployments[name], "embed",
                                                           None)):
            served.remove("embeddings")
    found: dict[str, list[str]] = {}
    for alias, (names, _weights) in gw.aliases.items():
        each = [own.get(n, ["chat"]) for n in names]
        found[alias] = [c for c in ("chat", "embeddings") if all(c in e for e in each)]
    return found


def _json(body: Any) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")


def model_endpoints(services: Services) -> tuple[Endpoint, Endpoint]:
    """``GET /v1/models`` and ``GET /v1/models/{model_id}`` over ``services``."""
    gw = services.gateway
    capabilities = capabilities_of(services)

    async def list_models(request: Request) -> Response:
        principal: Principal = request.scope[PRINCIPAL]
        data = [model_object(t, services.started_at, capabilities.get(name))
                for name, t in gw.targets.items() if principal.may_use(name)]
        return _json({"object": "list", "data": data})

    async def get_model(request: Request) -> Response:
        principal: Principal = request.scope[PRINCIPAL]
        model_id = request.path_params["model_id"]
        target = gw.targets.get(model_id)
        if target is None or not principal.may_use(model_id):
            raise ModelNotFound(f"The model '{model_id}' does not exist or you do not have "
                                f"access to it.", param="model")
        return _json(model_object(target, services.started_at, capabilities.get(model_id)))

    return list_models, get_model
