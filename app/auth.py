"""API-key authentication as pure ASGI middleware, and the static-keys resolver."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from tako.app.config import KeySpec
from tako.app.errors import error_response
from tako.app.ingress.messages_wire import anthropic_error_response
from tako.app.observe import record_refused
from tako.core.errors import AuthenticationFailed, TakoError
from tako.core.protocols import AuthResolver
from tako.core.types import Principal

PRINCIPAL = "tako.principal"
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
ANTHROPIC_PATHS = ("/v1/messages",)  # refused in Anthropic's error shape


class StaticKeyResolver:
    """Keys from config, kept only as SHA-256 digests. The lookup is by digest and the
    final check is a constant-time comparison."""

    def __init__(self, keys: Sequence[KeySpec]) -> None:
        self._by_digest: dict[str, tuple[bytes, Principal]] = {}
        for i, spec in enumerate(keys):
            digest = spec.digest()
            if digest is None:
                continue
            metadata = {}
            if spec.budgets:
                metadata["budgets"] = spec.budgets
            if spec.rate_limits:
                metadata["rate_limits"] = spec.rate_limits
            principal = Principal(
                tenant_id=spec.tenant_id,
                user_id=spec.user_id,
                key_id=spec.key_id or f"key-{i}",
                scopes=frozenset(spec.scopes),
                allowed_models=frozenset(spec.models) if spec.models is not None else None,
                metadata=metadata,
            )
            self._by_digest[digest] = (bytes.fromhex(digest), principal)

    def __len__(self) -> int:
        return len(self._by_digest)

    async def resolve(self, token: str) -> Principal | None:
        digest = hashlib.sha256(token.encode()).digest()
        entry = self._by_digest.get(digest.hex())
        if entry is None or not hmac.compare_digest(entry[0], digest):
            return None
        return entry[1]


def bearer_token(scope: Scope) -> str | None:
    """``Authorization: Bearer <key>``, else Azure-style ``api-key: <key>`` or
    Anthropic-style ``x-api-key: <key>``."""
    api_key = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
        elif name in (b"api-key", b"x-api-key"):
            api_key = value.decode("latin-1").strip() or None
    return api_key


def refusal(path: str, exc: TakoError) -> Response:
    """The 401 in the shape of the API the path belongs to."""
    if path.startswith(ANTHROPIC_PATHS):
        return anthropic_error_response(exc)
    return error_response(exc)


class AuthMiddleware:
    """Resolves the caller of every ``/v1`` request to a Principal, or answers 401.
    Admin and health routes authenticate on their own."""

    def __init__(self, app: ASGIApp, resolver: AuthResolver, enabled: bool = True) -> None:
        self.app = app
        self.resolver = resolver
        self.enabled = enabled
        self.anonymous = Principal(tenant_id="anonymous", user_id="anonymous",
                                   key_id="anonymous")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1"):
            await self.app(scope, receive, send)
            return
        if not self.enabled:
            scope[PRINCIPAL] = self.anonymous
            await self.app(scope, receive, send)
            return
        token = bearer_token(scope)
        try:
            if token is None:
                raise AuthenticationFailed(
                    "missing API key: send it as 'Authorization: Bearer <key>' (or "
                    "'x-api-key: <key>')",
                    code="missing_api_key")
            principal = await self.resolver.resolve(token)
            if principal is None:
                raise AuthenticationFailed("incorrect API key provided")
        except TakoError as exc:
            record_refused(scope["path"], exc)
            response = refusal(scope["path"], exc)
            await response(scope, receive, send)
            return
        scope[PRINCIPAL] = principal
        await self.app(scope, receive, send)
