"""The TakoError family: every failure maps to an OpenAI error body and HTTP status.
ConfigError, apart from it, lists the problems of a configuration that cannot run."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import ValidationError as PydanticValidationError


class TakoError(Exception):
    """Base error. ``status`` and ``type`` follow OpenAI's error conventions."""

    status: int = 500
    type: str = "server_error"
    code: str | None = None
    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        retry_after: float | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.details = details
        self.headers = dict(headers) if headers else {}
        self.retry_after = retry_after

    def to_body(self) -> dict[str, Any]:
        error: dict[str, Any] = {
            "message": self.message,
            "type": self.type,
            "param": self.param,
            "code": self.code,
        }
        if self.details:
            error["details"] = self.details
        return {"error": error}

    def response_headers(self) -> dict[str, str]:
        headers = dict(self.headers)
        if self.retry_after is not None and "retry-after" not in headers:
            # whole seconds, rounded up, and never 0: a client told 0 comes straight back
            headers["retry-after"] = str(max(1, round(self.retry_after + 0.4999)))
        return headers

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.status}, {self.message!r})"


class InvalidRequest(TakoError):
    status = 400
    type = "invalid_request_error"


class ContextLengthExceeded(InvalidRequest):
    code = "context_length_exceeded"


class ContentFiltered(InvalidRequest):
    code = "content_filter"


class AuthenticationFailed(TakoError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(TakoError):
    status = 403
    type = "permission_error"
    code = "permission_denied"


class PolicyDenied(PermissionDenied):
    type = "policy_denied"
    code = "policy_denied"


class ModelNotFound(TakoError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class NotFound(TakoError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class PayloadTooLarge(InvalidRequest):
    status = 413
    code = "payload_too_large"


class RateLimited(TakoError):
    status = 429
    type = "rate_limit_exceeded"
    code = "rate_limit_exceeded"
    retryable = True


class QuotaExceeded(TakoError):
    """Budget exhausted. Not retryable: SDKs are told so with ``x-should-retry: false``."""

    status = 429
    type = "insufficient_quota"
    code = "insufficient_quota"

    def response_headers(self) -> dict[str, str]:
        headers = super().response_headers()
        headers["x-should-retry"] = "false"
        return headers


class UpstreamError(TakoError):
    """A provider answered with an error. ``details`` keep the vendor status and body."""

    status = 502
    type = "upstream_error"
    code = "upstream_error"


class UpstreamTransient(UpstreamError):
    """A provider failure worth retrying or falling back on (5xx, 429, connect errors)."""

    retryable = True


class UpstreamRateLimited(UpstreamTransient):
    status = 429
    type = "rate_limit_exceeded"
    code = "upstream_rate_limited"


class Overloaded(TakoError):
    status = 503
    type = "overloaded"
    code = "overloaded"
    retryable = True


class Unavailable(TakoError):
    status = 503
    type = "unavailable"
    code = "unavailable"


class CircuitOpen(Unavailable):
    code = "circuit_open"
    retryable = True


class UpstreamTimeout(TakoError):
    status = 504
    type = "timeout"
    code = "upstream_timeout"
    retryable = True


class RequestTimeout(TakoError):
    """The gateway's own deadline for a request (``server.request_timeout_s``) ran out."""

    status = 504
    type = "timeout"
    code = "request_timeout"


class InternalError(TakoError):
    status = 500
    type = "server_error"
    code = "internal_error"


def upstream_error_for(
    provider_id: str,
    status: int,
    body: Any,
    *,
    message: str | None = None,
    retry_after: float | None = None,
    code: str | None = None,
) -> TakoError:
    """Map a vendor HTTP error to the TakoError class the SDKs and the retry layer expect."""
    details = {"provider": provider_id, "status": status, "body": body}
    text = message or _vendor_message(body) or f"HTTP {status}"
    msg = f"provider {provider_id} returned {status}: {text}"
    lowered = (text + " " + (code or "")).lower()
    if status == 429:
        return UpstreamRateLimited(msg, details=details, retry_after=retry_after)
    if status in (503, 529) or "overloaded" in lowered:
        return Overloaded(msg, details=details, retry_after=retry_after, code="upstream_overloaded")
    if status in (408, 504):
        return UpstreamTimeout(msg, details=details, retry_after=retry_after)
    if status >= 500:
        return UpstreamTransient(msg, details=details, retry_after=retry_after)
    if "context length" in lowered or "context_length" in lowered or "too long" in lowered:
        return ContextLengthExceeded(msg, details=details)
    if "content_filter" in lowered or "content filter" in lowered or "safety" in lowered:
        return ContentFiltered(msg, details=details)
    if status == 404:
        return UpstreamError(msg, details=details, code="upstream_not_found")
    if status in (401, 403):
        return UpstreamError(msg, details=details, code="upstream_auth_error")
    if status in (400, 413, 422):
        return InvalidRequest(msg, details=details, code=code or "upstream_invalid_request")
    return UpstreamError(msg, details=details)


def _vendor_message(body: Any) -> str | None:
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            for key in ("message", "Message", "detail"):
                if isinstance(err.get(key), str):
                    return str(err[key])
        elif isinstance(err, str):
            return err
        for key in ("message", "Message"):
            if isinstance(body.get(key), str):
                return str(body[key])
    if isinstance(body, str) and body:
        return body[:500]
    return None


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One mistake in a configuration, at its path (``profiles[2].params.deployment``)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(Exception):
    """A configuration that cannot run, with every problem found in it.

    Raised while settings load and while the gateway is built from them, never while a
    request is served, so it is no TakoError: no client ever receives it."""

    def __init__(self, problems: Iterable[ConfigProblem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    @classmethod
    def at(cls, path: str, message: str) -> ConfigError:
        return cls([ConfigProblem(path, message)])

    @classmethod
    def from_validation(cls, error: PydanticValidationError, prefix: str = "", *,
                        unknown: str | None = None) -> ConfigError:
        """pydantic's errors as problems, their locations appended to ``prefix``;
        ``unknown`` replaces the message of a top-level name that is not accepted."""
        return cls(ConfigProblem(join_path(prefix, *e["loc"]), _plain_message(e, unknown))
                   for e in error.errors())

    def under(self, prefix: str) -> ConfigError:
        """The same problems with ``prefix`` put before their paths."""
        return ConfigError(ConfigProblem(join_path(prefix, p.path), p.message)
                           for p in self.problems)


def join_path(prefix: str, *loc: str | int) -> str:
    """``join_path("profiles[2]", "params", "workers", 0)`` is
    ``profiles[2].params.workers[0]``; pydantic's ``[key]`` marker of a mapping key's own
    error is left out (the key is already the last part)."""
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part and part != "[key]":
            path = f"{path}.{part}" if path else part
    return path


@contextmanager
def gathering(problems: list[ConfigProblem]) -> Iterator[None]:
    """Adds the problems of a ConfigError raised inside the block to ``problems``, so
    building goes on and every problem of a config is found in one pass."""
    try:
        yield
    except ConfigError as error:
        problems.extend(error.problems)


def _plain_message(error: Any, unknown: str | None = None) -> str:
    if unknown is not None and error["type"] == "extra_forbidden" and len(error["loc"]) == 1:
        return unknown
    message: str = error["msg"]
    for wrapper in ("Value error, ", "Assertion failed, "):
        if message.startswith(wrapper):
            return message[len(wrapper):]
    return message
