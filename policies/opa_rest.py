"""PolicyEngine backed by an OPA server's REST data API.

Each evaluation is one ``POST {url}/v1/data/<package>/<stage>/decision`` with
``{"input": ...}``; OPA answers ``{"result": <decision document>}`` (no ``result`` when
the rule is undefined, e.g. the policies are not loaded). Load tako's .rego files into
OPA and put ``PolicySettings.data`` at ``data.tako.config`` to get the same decisions as
the embedded engine.

The whole call is bounded by ``timeout_s``. When OPA is slow, unreachable, answers an
error status or no usable decision, ``fail_mode`` decides: ``fail_closed`` raises
``Unavailable`` (HTTP 503 to the client); ``fail_open`` allows the request and logs a
warning.

The client is httpx on the aiohttp transport, the same stack the providers use, rather
than the ``opa-python-client`` package. That package (3.0.0) installs and has an async
client (``AsyncOpaClient.query_rule`` on aiohttp), but it does not fit this hot path: it
is configured by host/port/ssl flag rather than a URL, so an OPA behind a path prefix or
a TLS proxy with its own CA cannot be addressed; it retries failed calls with backoff
sleeps inside the call, which stretches a policy check past its latency budget and blurs
the fail mode; and it adds ``requests`` and ``aiofiles`` as runtime dependencies for what
is a single JSON POST.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Literal

import httpx
import orjson
from httpx_aiohttp import AiohttpTransport

from tako.core.errors import TakoError, Unavailable
from tako.core.protocols import PolicyDecision
from tako.policies.decision import check_stage, decision_from_result, decision_path

log = logging.getLogger("tako.policy")

FailMode = Literal["fail_closed", "fail_open"]


class OpaRestEngine:
    """Asks an OPA server for each decision."""

    def __init__(
        self,
        url: str,
        timeout_s: float = 0.25,
        fail_mode: FailMode = "fail_closed",
        *,
        package: str = "tako",
        max_connections: int = 64,
    ) -> None:
        if fail_mode not in ("fail_closed", "fail_open"):
            raise ValueError(f"fail_mode must be fail_closed or fail_open, not {fail_mode!r}")
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.fail_mode = fail_mode
        self.package = package
        limits = httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=30.0,
        )
        self._client = httpx.AsyncClient(
            transport=AiohttpTransport(limits=limits, trust_env=False),
            timeout=httpx.Timeout(timeout_s),
            headers={"content-type": "application/json"},
        )

    def endpoint(self, stage: str) -> str:
        return f"{self.url}/v1/data/{decision_path(self.package, stage)}"

    async def evaluate(self, stage: str, data: dict[str, Any]) -> PolicyDecision:
        check_stage(stage)
        try:
            async with asyncio.timeout(self.timeout_s):
                result = await self._query(stage, data)
            return decision_from_result(stage, result)
        except TimeoutError:
            problem = f"OPA did not answer within {self.timeout_s:g}s"
        except httpx.HTTPError as exc:
            problem = f"OPA request failed: {type(exc).__name__}: {exc}"
        except TakoError as exc:
            problem = exc.message
        return self._fail(stage, problem)

    async def _query(self, stage: str, data: dict[str, Any]) -> Any:
        response = await self._client.post(
            self.endpoint(stage), content=orjson.dumps({"input": data})
        )
        if response.status_code != 200:
            raise Unavailable(f"OPA answered HTTP {response.status_code}: {response.text[:200]}")
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise Unavailable("OPA answered with a body that is not JSON") from None
        if not isinstance(body, dict) or "result" not in body:
            raise Unavailable(
                f"OPA has no decision at {decision_path(self.package, stage)} "
                "(are tako's policies loaded?)"
            )
        return body["result"]

    def _fail(self, stage: str, problem: str) -> PolicyDecision:
        if self.fail_mode == "fail_open":
            log.warning("policy %s allowed without a decision (fail_open): %s", stage, problem)
            reason = f"policy unavailable (fail_open): {problem}"
            return PolicyDecision(action="allow", reason=reason)
        raise Unavailable(
            f"policy service unavailable: {problem}",
            code="policy_unavailable",
            details={"stage": stage},
        )

    async def aclose(self) -> None:
        await self._client.aclose()
