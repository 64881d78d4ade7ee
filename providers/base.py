"""What HTTP adapters share: the one client path of every vendor call, vendor error
mapping, the stream contract, SSE and line readers, ids."""

from __future__ import annotations

import base64
import binascii
import email.utils
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import aiohttp
import orjson
from opentelemetry import propagate
from yarl import URL

from tako.core.errors import (
    InvalidRequest,
    TakoError,
    UpstreamTimeout,
    UpstreamTransient,
    upstream_error_for,
)
from tako.core.specs import DeploymentSpec, Price
from tako.core.tokens import CHARS_PER_TOKEN, estimate_prompt_tokens
from tako.core.types import ChatChunk, ChatRequest, ChunkError, Delta, End, Usage
from tako.providers.pricing import price_for

ErrorMapper = Callable[[int, Mapping[str, str], bytes], TakoError]
"""A vendor's error answer (status, headers, raw body) as a TakoError."""

Signer = Callable[[str, dict[str, str], bytes], dict[str, str]]
"""Signs a request from its URL, final headers and final body; returns the headers to send."""


def new_id(prefix: str = "chatcmpl-") -> str:
    return prefix + f"{random.getrandbits(96):024x}"


def now() -> int:
    return int(time.time())


class HttpProvider:
    """What every HTTP adapter has: its spec, price and connection pool, and the one client
    path every vendor call takes, traced or not: ``send_json`` for a JSON answer,
    ``open_stream`` for a stream. Both are aiohttp, without httpx on top: measured on this
    path, httpx's request/response layer cost about four times the rest of a call (see
    the README's "Performance").

    An adapter adds ``chat`` and ``deltas``, its delta generator; ``stream`` is
    ``deltas`` inside the stream contract (``keep_stream_contract``).
    """

    def __init__(self, spec: DeploymentSpec) -> None:
        self.spec = spec
        self.id = spec.name
        self.model = spec.model
        self.price: Price = price_for(spec)
        self._session: aiohttp.ClientSession | None = None
        self._timeout = aiohttp.ClientTimeout(total=None, connect=spec.connect_timeout_s,
                                              sock_read=spec.timeout_s)
        self._base_headers = {"content-type": "application/json", **spec.headers}

    def _pool(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self.spec.max_connections,
                                             keepalive_timeout=30.0)
            self._session = aiohttp.ClientSession(connector=connector, trust_env=False)
        return self._session

    def estimate_cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        return self.price.cost(prompt_tokens, completion_tokens)

    def cost(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> float:
        return self.price.cost(prompt_tokens, completion_tokens, cached_tokens)

    def _prepare(self, url: str, body: Any, headers: dict[str, str] | None,
                 sign: Signer | None) -> tuple[URL, dict[str, str], bytes]:
        """The URL (sent exactly as given), headers and body of a JSON POST. The headers
        carry the current trace context (``traceparent``; nothing when no span is active);
        ``sign`` sees them final."""
        payload = orjson.dumps(body)
        sent = {**self._base_headers, **(headers or {})}
        propagate.inject(sent)
        if sign is not None:
            sent = sign(url, sent, payload)
        return URL(url, encoded=True), sent, payload

    def _answer_error(self, on_error: ErrorMapper | None, status: int,
                      headers: Mapping[str, str], raw: bytes) -> TakoError:
        if on_error is not None:
            return on_error(status, headers, raw)
        return answer_error(self.id, status, headers, raw)

    async def send_json(self, url: str, body: Any, headers: dict[str, str] | None = None, *,
                        on_error: ErrorMapper | None = None, sign: Signer | None = None) -> Any:
        """POST ``body`` as JSON; the decoded JSON answer. An error status raises
        ``on_error``'s TakoError (by default one chosen from the status and body), a
        connection failure or timeout a retryable one."""
        target, sent, payload = self._prepare(url, body, headers, sign)
        try:
            async with self._pool().post(target, data=payload, headers=sent,
                                         timeout=self._timeout) as response:
                raw = await response.read()
                status, answer_headers = response.status, response.headers
        except TRANSPORT_ERRORS as exc:
            raise transport_error(self.id, exc) from exc
        if status >= 400:
            raise self._answer_error(on_error, status, answer_headers, raw)
        return _json_answer(self.id, status, raw)

    @asynccontextmanager
    async def open_stream(self, url: str, body: Any, headers: dict[str, str] | None = None,
                          *, on_error: ErrorMapper | None = None, sign: Signer | None = None,
                          ) -> AsyncIterator[AsyncIterator[bytes]]:
        """POST ``body`` as JSON and give the answer's bytes as they arrive. An error status
        or a connection failure raises here, as ``send_json`` would."""
        target, sent, payload = self._prepare(url, body, headers, sign)
        try:
            response = await self._pool().post(target, data=payload, headers=sent,
                                               timeout=self._timeout)
        except TRANSPORT_ERRORS as exc:
            raise transport_error(self.id, exc) from exc
        async with response:
            if response.status >= 400:
                raw = await _read_or_nothing(response)
                raise self._answer_error(on_error, response.status, response.headers, raw)
            yield response.content.iter_any()

    def stream(self, req: ChatRequest) -> AsyncIterator[ChatChunk]:
        return keep_stream_contract(self.id, partial(self.deltas, req),
                                    partial(self.estimated_usage, req))

    def estimated_usage(self, req: ChatRequest, streamed_chars: int) -> Usage:
        """The usage of a stream whose vendor reported none: counted from the request and
        the streamed text (on the high side), priced, and marked estimated."""
        prompt = estimate_prompt_tokens(req)
        completion = -(-streamed_chars // CHARS_PER_TOKEN)
        return Usage(prompt_tokens=prompt, completion_tokens=completion,
                     cost_usd=self.cost(prompt, completion), estimated=True)

    def deltas(self, req: ChatRequest, outcome: StreamOutcome) -> AsyncGenerator[Delta, None]:
        """The adapter's delta generator: the vendor's stream events as Deltas, the finish
        reason and usage reported in ``outcome``; a vendor error event, a broken connection
        or a stream cut short raises."""
        raise NotImplementedError

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()


async def _read_or_nothing(response: aiohttp.ClientResponse) -> bytes:
    try:
        return await response.read()
    except TRANSPORT_ERRORS:
        return b""


def _json_answer(provider_id: str, status: int, raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise UpstreamTransient(
            f"provider {provider_id} sent a body that is not JSON",
            details={"provider": provider_id, "status": status,
                     "body": raw[:2000].decode("utf-8", "replace")},
        ) from exc


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    for name in ("retry-after-ms", "x-ms-retry-after-ms"):
        value = headers.get(name)
        if value:
            try:
                return float(value) / 1000.0
            except ValueError:
                pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value)
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


def decode_body(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", "replace")[:4000]


def answer_error(provider_id: str, status: int, headers: Mapping[str, str],
                 raw: bytes) -> TakoError:
    """A vendor's error answer as the TakoError its status and body call for."""
    return upstream_error_for(provider_id, status, decode_body(raw),
                              retry_after=retry_after_seconds(headers))


# Connection failures and timeouts (aiohttp's connect and read timeouts are TimeoutErrors).
TRANSPORT_ERRORS = (aiohttp.ClientError, TimeoutError)


def transport_error(provider_id: str, exc: Exception) -> TakoError:
    """Map a connection-level failure to a retryable TakoError, naming the provider."""
    if isinstance(exc, TimeoutError):
        return UpstreamTimeout(
            f"provider {provider_id} timed out ({type(exc).__name__})",
            details={"provider": provider_id},
        )
    return UpstreamTransient(
        f"provider {provider_id} connection failed: {type(exc).__name__}: {exc}",
        details={"provider": provider_id},
        code="upstream_connection_error",
    )


# What can go wrong while a vendor stream is being read and translated: a vendor error, a
# broken connection, an event that does not parse.
STREAM_ERRORS = (TakoError, *TRANSPORT_ERRORS, KeyError, IndexError, TypeError, ValueError)


def stream_failure(provider_id: str, exc: Exception) -> TakoError:
    """The TakoError for a failure caught while reading a vendor stream."""
    if isinstance(exc, TakoError):
        return exc
    if isinstance(exc, TRANSPORT_ERRORS):
        return transport_error(provider_id, exc)
    return UpstreamTransient(f"provider {provider_id} sent a malformed stream event: {exc}",
                             details={"provider": provider_id})


# ---------------------------------------------------------------- the stream contract


@dataclass(slots=True)
class StreamOutcome:
    """What a delta generator reports besides its Deltas, kept current as events arrive:
    the finish reason and the usage seen so far."""

    finish_reason: str = "stop"
    usage: Usage = field(default_factory=Usage)


UsageEstimate = Callable[[int], Usage]
"""The usage of a stream that reported none, from the number of characters it carried."""


async def keep_stream_contract(
    provider_id: str, deltas_for: Callable[[StreamOutcome], AsyncGenerator[Delta, None]],
    estimate: UsageEstimate | None = None,
) -> AsyncGenerator[ChatChunk, None]:
    """The stream contract (docs/architecture.md, section 3) around a delta generator:
    every Delta with text or a tool call fragment, in order, then exactly one End with the
    reported finish reason and usage. A failure before the first of them raises, so retries
    and fallbacks can act; after it, one ChunkError and then the End, finish reason
    ``error``, with the usage seen so far. A stream that carried text but reported no
    usage ends with ``estimate``'s usage (marked estimated) when one is given."""
    outcome = StreamOutcome()
    started = False
    chars = 0
    try:
        async with aclosing(deltas_for(outcome)) as deltas:
            async for delta in deltas:
                if delta.content or delta.tool_calls or delta.native:
                    started = True
                    chars += _chars(delta)
                    yield delta
    except STREAM_ERRORS as exc:
        failure = stream_failure(provider_id, exc)
        if not started:
            if failure is exc:
                raise
            raise failure from exc
        yield ChunkError(failure)
        yield End("error", _reported_or_estimated(outcome.usage, chars, estimate))
        return
    yield End(outcome.finish_reason, _reported_or_estimated(outcome.usage, chars, estimate))


def _chars(delta: Delta) -> int:
    calls = sum(len(c.name or "") + len(c.arguments or "") for c in delta.tool_calls or ())
    return len(delta.content or "") + calls


def _reported_or_estimated(usage: Usage, chars: int,
                           estimate: UsageEstimate | None) -> Usage:
    if usage.total_tokens or not chars or estimate is None:
        return usage
    return estimate(chars)


async def iter_lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Lines of a streamed body, split on LF (CR stripped), however the bytes arrive."""
    buffer = b""
    async for chunk in chunks:
        if b"\n" not in chunk:
            buffer += chunk
            continue
        *lines, buffer = (buffer + chunk).split(b"\n")
        for line in lines:
            yield line.rstrip(b"\r")
    if buffer:
        yield buffer.rstrip(b"\r")


async def iter_sse(chunks: AsyncIterator[bytes]) -> AsyncIterator[tuple[str, bytes]]:
    """Server-sent events as (event name, data) pairs; multi-line data joined by LF."""
    event = ""
    data: list[bytes] = []
    async for line in iter_lines(chunks):
        if not line:
            if data:
                yield event or "message", b"\n".join(data)
            event, data = "", []
            continue
        if line.startswith(b":"):
            continue
        name, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            data.append(value)
        elif name == b"event":
            event = value.decode()
    if data:
        yield event or "message", b"\n".join(data)


def parse_data_url(url: str) -> tuple[str, bytes]:
    """``data:image/png;base64,...`` -> (mime type, bytes)."""
    header, sep, payload = url.partition(",")
    if not sep or not header.startswith("data:"):
        raise InvalidRequest("image_url is not a valid data URL", param="messages")
    meta = header[5:]
    mime = meta.split(";")[0] or "application/octet-stream"
    try:
        if ";base64" in meta:
            return mime, base64.b64decode(payload, validate=True)
        from urllib.parse import unquote_to_bytes

        return mime, unquote_to_bytes(payload)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest("image_url data URL is not valid base64", param="messages") from exc
