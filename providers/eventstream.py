"""AWS event-stream framing (``application/vnd.amazon.eventstream``), as Bedrock's
ConverseStream sends it.

A message is: a 12-byte prelude (total length, headers length, both big-endian u32,
then the CRC32 of those 8 bytes), the headers, the payload, and a CRC32 over everything
before it. Headers carry ``:message-type`` (``event``, ``exception`` or ``error``),
``:event-type`` / ``:exception-type`` and ``:content-type``.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from dataclasses import dataclass
from typing import Any

PRELUDE_LENGTH = 12
CRC_LENGTH = 4
MAX_MESSAGE_LENGTH = 16 * 1024 * 1024

# Header value types of the AWS event-stream encoding.
TYPE_TRUE, TYPE_FALSE, TYPE_BYTE, TYPE_SHORT, TYPE_INT, TYPE_LONG = 0, 1, 2, 3, 4, 5
TYPE_BYTES, TYPE_STRING, TYPE_TIMESTAMP, TYPE_UUID = 6, 7, 8, 9

_FIXED = {TYPE_BYTE: ">b", TYPE_SHORT: ">h", TYPE_INT: ">i", TYPE_LONG: ">q",
          TYPE_TIMESTAMP: ">q"}


class EventStreamError(ValueError):
    """The byte stream is not valid event-stream framing (bad length or checksum)."""


@dataclass(slots=True)
class EventMessage:
    headers: dict[str, Any]
    payload: bytes

    @property
    def message_type(self) -> str:
        return str(self.headers.get(":message-type", "event"))

    @property
    def event_type(self) -> str:
        return str(self.headers.get(":event-type", ""))

    @property
    def exception_type(self) -> str:
        return str(self.headers.get(":exception-type") or self.headers.get(":error-code") or "")


def decode_headers(raw: bytes) -> dict[str, Any]:
    headers: dict[str, Any] = {}
    pos = 0
    while pos < len(raw):
        name_len = raw[pos]
        pos += 1
        name = raw[pos : pos + name_len].decode("utf-8")
        pos += name_len
        kind = raw[pos]
        pos += 1
        value: Any
        if kind == TYPE_TRUE:
            value = True
        elif kind == TYPE_FALSE:
            value = False
        elif kind in _FIXED:
            fmt = _FIXED[kind]
            size = struct.calcsize(fmt)
            (value,) = struct.unpack_from(fmt, raw, pos)
            pos += size
        elif kind in (TYPE_BYTES, TYPE_STRING):
            (length,) = struct.unpack_from(">H", raw, pos)
            pos += 2
            data = raw[pos : pos + length]
            pos += length
            value = data.decode("utf-8") if kind == TYPE_STRING else bytes(data)
        elif kind == TYPE_UUID:
            value = uuid.UUID(bytes=bytes(raw[pos : pos + 16]))
            pos += 16
        else:
            raise EventStreamError(f"unknown event-stream header type {kind}")
        if pos > len(raw):
            raise EventStreamError("event-stream header runs past its section")
        headers[name] = value
    return headers


class EventStreamDecoder:
    """Feed bytes as they arrive; get back every message completed so far."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[EventMessage]:
        self._buffer += data
        messages: list[EventMessage] = []
        while len(self._buffer) >= PRELUDE_LENGTH:
            total, headers_len, prelude_crc = struct.unpack_from(">III", self._buffer, 0)
            if zlib.crc32(bytes(self._buffer[:8])) != prelude_crc:
                raise EventStreamError("event-stream prelude checksum mismatch")
            if total > MAX_MESSAGE_LENGTH or total < PRELUDE_LENGTH + headers_len + CRC_LENGTH:
                raise EventStreamError(f"event-stream message length {total} is invalid")
            if len(self._buffer) < total:
                break
            frame = bytes(self._buffer[:total])
            del self._buffer[:total]
            (message_crc,) = struct.unpack_from(">I", frame, total - CRC_LENGTH)
            if zlib.crc32(frame[: total - CRC_LENGTH]) != message_crc:
                raise EventStreamError("event-stream message checksum mismatch")
            headers_end = PRELUDE_LENGTH + headers_len
            messages.append(
                EventMessage(
                    headers=decode_headers(frame[PRELUDE_LENGTH:headers_end]),
                    payload=frame[headers_end : total - CRC_LENGTH],
                )
            )
        return messages

    @property
    def pending(self) -> int:
        """Bytes of an incomplete message still buffered."""
        return len(self._buffer)
