"""What HTTP adapters share: a pooled client, error mapping, SSE/NDJSON readers, ids."""

from __future__ import annotations

import base64
import binascii
import email.utils
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import httpx
import orjson
from httpx_aiohttp import AiohttpTransport

from tako.core.errors import (
    InvalidRequest,
    TakoError,
    UpstreamTimeout,
    UpstreamTransient,
    upstream_error_for,
)
from tako.core.specs import DeploymentSpec, Price
from tako.providers.pricing import price_for


def new_id(prefix: str = "chatcmpl-") -> str:
    return prefix + f"{random.getrandbits(96):024x}"


def now() -> int:
    return int(time.time())


def make_client(spec: DeploymentSpec,
                session: Callable[[], aiohttp.ClientSession] | None = None) -> httpx.AsyncClient:
    """A pooled keep-alive client. aiohttp underneath: several times faster than httpx's
    default transport on this hot path (measured in the README's "Performance" section).
    ``session`` shares one aiohttp pool with the adapter's direct JSON path."""
    limits = httpx.Limits(
        max_connections=spec.max_connections,
        max_keepalive_connections=spec.max_connections,
        keepalive_expiry=30.0,
    )
    timeout = httpx.Timeout(spec.timeout_s, connect=spec.connect_timeout_s)
    return httpx.AsyncClient(
        transport=AiohttpTransport(limits=limits, trust_env=False, client=session),
        timeout=timeout,
        headers=spec.headers,
    )


class HttpProvider:
    """State every HTTP adapter has: its spec, client, price. Adapters add chat/stream.

    Non-streaming JSON calls (``post_json``) go straight to the aiohttp pool under the
    httpx client: measured on this path, httpx's request/response layer costs about three
    times the rest of the call (282 vs 68 microseconds per request at concurrency 16).
    Streams, and every call while ``direct_json`` is off (the gateway turns it off when
    tracing instruments the httpx client), use httpx.
    """

    direct_json = True

    def __init__(self, spec: DeploymentSpec) -> None:
        self.spec = spec
        self.id = spec.name
        self.model = spec.model
        self.price: Price = price_for(spec)
        self._session: aiohttp.ClientSession | None = None
        self._timeout = aiohttp.ClientTimeout(total=None, connect=spec.connect_timeout_s,
                                              sock_read=spec.timeout_s)
        self.client = make_client(spec, self._pool)

    def _pool(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self.spec.max_connections,
                                             keepalive_timeout=30.0)
            self._session = aiohttp.ClientSession(connector=connector, trust_env=False,
                                                  headers=self.spec.headers)
        return self._session

    def estimate_cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        return self.price.cost(prompt_tokens, completion_tokens)

    def cost(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> float:
        return self.price.cost(prompt_tokens, completion_tokens, cached_tokens)

    async def post_json(self, url: str, body: Any, headers: dict[str, str] | None = None,
                        *, content: bytes | None = None) -> Any:
        """POST a JSON body; the decoded JSON answer, or the mapped TakoError."""
        if not self.direct_json:
            return await post_json(self.client, self.id, url, body, headers, content=content)
        payload = content if content is not None else orjson.dumps(body)
        hdrs = {"content-type": "application/json"}
        if headers:
            hdrs.update(headers)
        try:
            async with self._pool().post(url, data=payload, headers=hdrs,
                                         timeout=self._timeout) as response:
                raw = await response.read()
                status, resp_headers = response.status, response.headers
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise UpstreamTimeout(f"provider {self.id} timed out ({type(exc).__name__})",
                                  details={"provider": self.id}) from exc
        except aiohttp.ClientError as exc:
            raise UpstreamTransient(
                f"provider {self.id} connection failed: {type(exc).__name__}: {exc}",
                details={"provider": self.id}, code="upstream_connection_error") from exc
        if status >= 400:
            raise upstream_error_for(self.id, status, decode_body(raw),
                                     retry_after=retry_after_seconds(resp_headers))
        return _json_answer(self.id, status, raw)

    async def aclose(self) -> None:
        await self.client.aclose()
        if self._session is not None and not self._session.closed:
            await self._session.close()


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


def error_from_response(provider_id: str, response: httpx.Response, raw: bytes) -> TakoError:
    return upstream_error_for(
        provider_id,
        response.status_code,
        decode_body(raw),
        retry_after=retry_after_seconds(response.headers),
    )


def transport_error(provider_id: str, exc: Exception) -> TakoError:
    """Map a connection-level failure to a retryable TakoError, naming the provider."""
    cause = exc.__cause__
    # The aiohttp transport reports a refused connection as ConnectTimeout: look at the cause.
    timed_out = isinstance(exc, httpx.TimeoutException) and (
        cause is None or isinstance(cause, TimeoutError))
    if timed_out:
        return UpstreamTimeout(
            f"provider {provider_id} timed out ({type(exc).__name__})",
            details={"provider": provider_id},
        )
    return UpstreamTransient(
        f"provider {provider_id} connection failed: {type(exc).__name__}: {exc}",
        details={"provider": provider_id},
        code="upstream_connection_error",
    )


# What can go wrong while a vendor stream is being read and parsed.
STREAM_ERRORS = (TakoError, httpx.HTTPError, orjson.JSONDecodeError, KeyError, TypeError,
                 ValueError)


def stream_failure(provider_id: str, exc: Exception) -> TakoError:
    """The TakoError for a failure caught while reading a vendor stream."""
    if isinstance(exc, TakoError):
        return exc
    if isinstance(exc, httpx.HTTPError):
        return transport_error(provider_id, exc)
    return UpstreamTransient(f"provider {provider_id} sent a malformed stream event: {exc}",
                             details={"provider": provider_id})


async def post_json(
    client: httpx.AsyncClient,
    provider_id: str,
    url: str,
    body: Any,
    headers: dict[str, str] | None = None,
    *,
    content: bytes | None = None,
) -> Any:
    """POST a JSON body; return the decoded JSON answer or raise the mapped TakoError."""
    payload = content if content is not None else orjson.dumps(body)
    hdrs = {"content-type": "application/json"}
    if headers:
        hdrs.update(headers)
    try:
        response = await client.post(url, content=payload, headers=hdrs)
        raw = response.content
    except httpx.HTTPError as exc:
        raise transport_error(provider_id, exc) from exc
    if response.status_code >= 400:
        raise error_from_response(provider_id, response, raw)
    return _json_answer(provider_id, response.status_code, raw)


@asynccontextmanager
async def open_stream(
    client: httpx.AsyncClient,
    provider_id: str,
    url: str,
    body: Any,
    headers: dict[str, str] | None = None,
    *,
    content: bytes | None = None,
    on_error: Callable[[httpx.Response, bytes], TakoError] | None = None,
) -> AsyncIterator[httpx.Response]:
    """Open a streaming POST. A non-2xx status or a connect failure raises (before any
    chunk, so fallbacks can act); the caller reads the body incrementally. ``on_error``
    maps an error answer when the vendor needs more than its status and body (a signed
    request's headers are sent exactly as given)."""
    payload = content if content is not None else orjson.dumps(body)
    hdrs = httpx.Headers({"content-type": "application/json"})
    if headers:
        hdrs.update(headers)
    request = client.build_request("POST", url, content=payload, headers=hdrs)
    try:
        response = await client.send(request, stream=True)
    except httpx.HTTPError as exc:
        raise transport_error(provider_id, exc) from exc
    try:
        if response.status_code >= 400:
            try:
                raw = await response.aread()
            except httpx.HTTPError:
                raw = b""
            if on_error is not None:
                raise on_error(response, raw)
            raise error_from_response(provider_id, response, raw)
        yield response
    finally:
        await response.aclose()


async def iter_lines(response: httpx.Response) -> AsyncIterator[bytes]:
    """Lines of a streamed body, split on LF (CR stripped), however the bytes arrive."""
    buffer = b""
    async for chunk in response.aiter_bytes():
        buffer += chunk
        while True:
            cut = buffer.find(b"\n")
            if cut < 0:
                break
            line, buffer = buffer[:cut], buffer[cut + 1 :]
            yield line.rstrip(b"\r")
    if buffer:
        yield buffer.rstrip(b"\r")


async def iter_sse(response: httpx.Response) -> AsyncIterator[tuple[str, bytes]]:
    """Server-sent events as (event name, data) pairs; multi-line data joined by LF."""
    event = ""
    data: list[bytes] = []
    async for line in iter_lines(response):
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


async def iter_ndjson(response: httpx.Response) -> AsyncIterator[Any]:
    async for line in iter_lines(response):
        if line.strip():
            yield orjson.loads(line)


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
