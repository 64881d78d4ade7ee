"""One record per chat request: Prometheus samples and a structured JSON access log.

The access log carries ids, model, deployment, status, tokens, cost and timings; never a
key, a token or message content.
"""

from __future__ import annotations

import asyncio
import functools
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

from tako.app import metrics
from tako.core.errors import TakoError
from tako.core.types import Principal, Usage

CHAT_PATH = "/v1/chat/completions"


class AccessLog:
    """JSON lines on stderr, written once per event-loop turn: under load one write call
    carries every request that finished in that turn (the logging module costs tens of
    microseconds a line on the hot path)."""

    def __init__(self) -> None:
        self.enabled = False
        self.pending: list[bytes] = []
        self.scheduled = False

    def write(self, line: bytes) -> None:
        self.pending.append(line)
        if self.scheduled:
            return
        try:
            asyncio.get_running_loop().call_soon(self.flush)
            self.scheduled = True
        except RuntimeError:  # no loop: write now
            self.flush()

    def flush(self) -> None:
        self.scheduled = False
        if self.pending:
            data = b"\n".join(self.pending) + b"\n"
            self.pending.clear()
            try:
                sys.stderr.buffer.write(data)
                sys.stderr.flush()
            except (OSError, ValueError):
                pass


access_log = AccessLog()


def configure_access_log(enabled: bool) -> None:
    access_log.enabled = enabled


@functools.lru_cache(maxsize=4096)
def _requests(model: str, status: int, kind: str, api: str) -> Any:
    return metrics.REQUESTS.labels(model, str(status), kind, api)


@functools.lru_cache(maxsize=256)
def _per_model(model: str) -> tuple[Any, Any, Any, Any]:
    return (metrics.TOKENS.labels(model, "input"), metrics.TOKENS.labels(model, "output"),
            metrics.COST.labels(model), metrics.TTFT.labels(model))


@functools.lru_cache(maxsize=64)
def _duration(kind: str) -> Any:
    return metrics.DURATION.labels(kind)


@dataclass(slots=True)
class RequestRecord:
    request_id: str
    started: float = field(default_factory=time.perf_counter)
    principal: Principal | None = None
    model: str = "unknown"
    kind: str = "unknown"
    stream: bool = False
    status: int = 200
    error_type: str | None = None
    deployment: str | None = None
    usage: Usage | None = None
    upstream_s: float = 0.0
    first_token_s: float | None = None
    admission: Any = None
    done: bool = False
    api: str = "chat"  # the ingress: chat, responses, messages, embeddings

    def failed(self, exc: BaseException) -> None:
        """Note the failure; a TakoError also takes the request id along into its error
        response, so a client can quote it for a failed request too."""
        if isinstance(exc, TakoError):
            self.status, self.error_type = exc.status, exc.type
            exc.headers["x-request-id"] = self.request_id
        else:
            self.status, self.error_type = 500, "server_error"

    def first_token(self) -> None:
        if self.first_token_s is None:
            self.first_token_s = time.perf_counter() - self.started

    def finish(self) -> None:
        if self.done:
            return
        self.done = True
        if self.admission is not None:
            self.upstream_s = self.admission.upstream_seconds
        duration = time.perf_counter() - self.started
        overhead = max(0.0, duration - self.upstream_s)
        _requests(self.model, self.status, self.kind, self.api).inc()
        _duration(self.kind).observe(duration)
        input_tokens, output_tokens, cost, ttft = _per_model(self.model)
        if self.status < 400:
            metrics.OVERHEAD.observe(overhead)
        if self.first_token_s is not None:
            ttft.observe(self.first_token_s)
        if self.error_type:
            reason = metrics.rejection_reason(self.error_type)
            if reason:
                metrics.REJECTIONS.labels(reason).inc()
        usage = self.usage
        if usage is not None:
            input_tokens.inc(usage.prompt_tokens)
            output_tokens.inc(usage.completion_tokens)
            cost.inc(usage.cost_usd)
        if access_log.enabled:
            p = self.principal
            access_log.write(orjson.dumps({
                "ts": round(time.time(), 3), "event": self.api, "request_id": self.request_id,
                "tenant_id": p.tenant_id if p else None, "user_id": p.user_id if p else None,
                "key_id": p.key_id if p else None, "model": self.model, "kind": self.kind,
                "deployment": self.deployment, "stream": self.stream, "status": self.status,
                "error_type": self.error_type,
                "prompt_tokens": usage.prompt_tokens if usage else 0,
                "completion_tokens": usage.completion_tokens if usage else 0,
                "cost_usd": round(usage.cost_usd, 8) if usage else 0.0,
                "duration_ms": round(duration * 1000, 3),
                "overhead_ms": round(overhead * 1000, 3),
                "ttft_ms": round(self.first_token_s * 1000, 3) if self.first_token_s else None,
            }))


def record_refused(path: str, exc: TakoError, request_id: str | None = None) -> None:
    """A request refused before any route ran (the auth middleware's 401). On the chat
    route it counts as a chat request, with its rejection and access-log line; elsewhere
    only the rejection is counted."""
    if path == CHAT_PATH:
        record = RequestRecord(request_id or uuid.uuid4().hex)
        record.failed(exc)
        record.finish()
        return
    reason = metrics.rejection_reason(exc.type)
    if reason:
        metrics.REJECTIONS.labels(reason).inc()
