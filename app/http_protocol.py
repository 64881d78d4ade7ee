"""uvicorn's httptools protocol with the limits a public listener needs.

uvicorn bounds only idle keep-alive connections (``timeout_keep_alive``); httptools keeps
no limit on header size, and nothing bounds a client that trickles its request. This
protocol adds, per connection:

- a header-read timeout: the request line and headers must arrive within
  ``header_timeout_s`` of the connection opening or the request's first byte (408);
- a body-read timeout: the body must arrive within ``body_timeout_s`` of the headers
  (408 before a response started; the connection is closed either way, and the app sees
  the client as gone);
- a total header size limit, request line included (431);

and answers every error it produces itself (those and malformed requests, 400) with
OpenAI's error body. See ``server.*`` in the config.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

log = logging.getLogger("tako.app")


@dataclass(frozen=True, slots=True)
class ClientLimits:
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_header_bytes: int = 64 * 1024


LINGER_S = 2.0  # how long a refused client's remaining bytes are read and dropped


class HeadersTooLarge(Exception):
    """Raised inside the parser's callbacks to stop parsing an oversized header block."""


def error_bytes(status: int, message: str, error_type: str, code: str) -> bytes:
    """A complete HTTP/1.1 response carrying OpenAI's error body; the connection closes."""
    body = orjson.dumps({"error": {"message": message, "type": error_type,
                                   "param": None, "code": code}})
    return b"".join([STATUS_LINE[status], b"content-type: application/json\r\n",
                     b"content-length: %d\r\n" % len(body), b"connection: close\r\n\r\n",
                     body])


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """Pass to uvicorn as ``http=functools.partial(LimitedHttpToolsProtocol, limits=...)``."""

    def __init__(self, *args: Any, limits: ClientLimits | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits or ClientLimits()
        self.read_timer: asyncio.TimerHandle | None = None
        self.reading_headers = True
        self.header_bytes = 0  # what the parser reported of this request's header block
        self.unparsed_bytes = 0  # bytes received while its header block is incomplete
        self.rejected = False  # answered with an error: what the client still sends is dropped

    # timers

    def _arm(self, seconds: float, on_expiry: Any) -> None:
        self._disarm()
        if seconds > 0:
            self.read_timer = self.loop.call_later(seconds, on_expiry)

    def _disarm(self) -> None:
        if self.read_timer is not None:
            self.read_timer.cancel()
            self.read_timer = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.limits.header_timeout_s, self._headers_too_slow)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _reject(self, status: int, message: str, error_type: str, code: str) -> None:
        self._disarm()
        if self.rejected or self.transport.is_closing():
            return
        log.info("dropped a client connection: %s", message)
        if self._may_answer():
            self.transport.write(error_bytes(status, message, error_type, code))
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True  # the app's next receive() says the client left
            self.cycle.message_event.set()
        self._close_lingering()

    def _close_lingering(self) -> None:
        """Close once the answer can reach the client: stop sending, read and drop what it
        still sends for up to LINGER_S, then close. Closing with unread bytes would make
        the kernel reset the connection, and the client could lose the answer."""
        self.rejected = True
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        self.flow.resume_reading()
        self.loop.call_later(LINGER_S, self.transport.close)

    def _headers_too_slow(self) -> None:
        if self.reading_headers and self._no_response_pending():
            self._reject(408, f"the request headers did not arrive within "
                              f"{self.limits.header_timeout_s:g}s", "invalid_request_error",
                         "header_timeout")

    def _body_too_slow(self) -> None:
        self._reject(408, f"the request body did not arrive within "
                          f"{self.limits.body_timeout_s:g}s", "invalid_request_error",
                     "body_timeout")

    def _may_answer(self) -> bool:
        """Nothing else is being written: no response is due, or this one has not begun."""
        if self.reading_headers:
            return self._no_response_pending()
        return not self.cycle.response_started

    def _no_response_pending(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    # parsing

    def data_received(self, data: bytes) -> None:
        if self.rejected:
            return
        super().data_received(data)
        if self.reading_headers and not self.transport.is_closing():
            self.unparsed_bytes += len(data)
            if self.unparsed_bytes > self.limits.max_header_bytes:
                self._headers_over_limit()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.reading_headers = True
        self.header_bytes = self.unparsed_bytes = 0
        if self.read_timer is None:
            self._arm(self.limits.header_timeout_s, self._headers_too_slow)

    def on_url(self, url: bytes) -> None:
        self._count_header_bytes(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_header_bytes(len(name) + len(value) + 4)
        super().on_header(name, value)

    def _count_header_bytes(self, size: int) -> None:
        self.header_bytes += size
        if self.header_bytes > self.limits.max_header_bytes:
            raise HeadersTooLarge

    def on_headers_complete(self) -> None:
        self.reading_headers = False
        self.header_bytes = self.unparsed_bytes = 0
        self._disarm()
        super().on_headers_complete()
        # Only a request that runs now: not one handed to a WebSocket protocol (no cycle
        # of its own), nor a pipelined one waiting, unread, for the one before it.
        runs_now = self.cycle is not None and self.cycle.scope is self.scope
        if runs_now and not self.pipeline:
            self._arm(self.limits.body_timeout_s, self._body_too_slow)

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        if self.reading_headers and self.header_bytes > self.limits.max_header_bytes:
            self._headers_over_limit()
            return
        self._reject(400, "the request is not valid HTTP/1.1", "invalid_request_error",
                     "invalid_http")

    def _headers_over_limit(self) -> None:
        self._reject(431, f"the request headers are larger than the limit of "
                          f"{self.limits.max_header_bytes} bytes", "invalid_request_error",
                     "headers_too_large")
