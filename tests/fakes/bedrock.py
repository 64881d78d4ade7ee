"""A loopback stand-in for Amazon Bedrock Runtime's Converse and ConverseStream APIs.

Routes: ``POST /model/{modelId}/converse`` (JSON) and ``POST /model/{modelId}/converse-stream``
(``application/vnd.amazon.eventstream``: binary frames with prelude, headers, payload and
CRC32s, events ``messageStart``, ``contentBlockStart``, ``contentBlockDelta``,
``contentBlockStop``, ``messageStop``, ``metadata`` and exception frames). Errors carry the
``x-amzn-ErrorType`` header and a ``{"message": ...}`` body, as Bedrock sends them.

Script it through the controller from ``make_app``: ``push`` a ``Turn`` (rendered as JSON or
as an event stream, whichever the client asked for) or a ``Failure``; when the queue is empty
it answers ``Hello from Bedrock``. ``requests`` records what arrived, with the raw path and
headers, and ``signature_ok(received, secret_key)`` checks the SigV4 signature independently.
``GET /images/{name}`` serves bytes put in ``images`` (for image-URL tests).
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import uuid
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.fakes import embeddings
from tests.fakes.common import DroppedConnection, ScriptedReplies, split

EVENTSTREAM = "application/vnd.amazon.eventstream"


@dataclass
class Turn:
    """One assistant answer. ``tool_calls`` are (toolUseId, name, input)."""

    text: str = ""
    tool_calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    stop_reason: str | None = None
    usage: dict[str, int] = field(
        default_factory=lambda: {"inputTokens": 12, "outputTokens": 7, "totalTokens": 19})
    pieces: int = 3
    # A Claude model's thinking before the text: (text, signature) as ``reasoningContent``.
    reasoning: tuple[str, str] | None = None
    # Stream only: after this many events send ``exception`` as an exception frame ...
    exception_after: int | None = None
    exception: tuple[str, str] = ("modelStreamErrorException", "The model stream failed.")
    # ... or close the connection in the middle of the next frame.
    drop_after: int | None = None


@dataclass
class Failure:
    status: int
    error_type: str
    message: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Received:
    action: str
    model_id: str
    raw_path: str
    query: str
    headers: dict[str, str]
    raw_body: bytes

    @property
    def body(self) -> dict[str, Any]:
        return dict(orjson.loads(self.raw_body))


# ---------------------------------------------------------------- frames


def encode_frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message; every header is a string (type 7)."""
    raw_headers = b""
    for name, value in headers.items():
        name_bytes, value_bytes = name.encode(), value.encode()
        raw_headers += (struct.pack(">B", len(name_bytes)) + name_bytes + b"\x07"
                        + struct.pack(">H", len(value_bytes)) + value_bytes)
    total = 12 + len(raw_headers) + len(payload) + 4
    prelude = struct.pack(">II", total, len(raw_headers))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    message = prelude + raw_headers + payload
    return message + struct.pack(">I", zlib.crc32(message))


def event_frame(event_type: str, body: dict[str, Any]) -> bytes:
    # Bedrock pads event payloads with a "p" field of varying length.
    padded = dict(body, p="abcdefghijklmnopqrstuvwxyzABCDEF"[: 4 + len(event_type) % 20])
    return encode_frame({":event-type": event_type, ":content-type": "application/json",
                         ":message-type": "event"}, orjson.dumps(padded))


def exception_frame(exception_type: str, message: str) -> bytes:
    return encode_frame({":exception-type": exception_type,
                         ":content-type": "application/json", ":message-type": "exception"},
                        orjson.dumps({"message": message}))


def stream_events(turn: Turn) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = [("messageStart", {"role": "assistant"})]
    index = 0
    if turn.reasoning:
        text, signature = turn.reasoning
        for piece in split(text, turn.pieces):
            events.append(("contentBlockDelta", {"contentBlockIndex": index,
                                                 "delta": {"reasoningContent": {"text": piece}}}))
        events.append(("contentBlockDelta", {
            "contentBlockIndex": index, "delta": {"reasoningContent": {"signature": signature}}}))
        events.append(("contentBlockStop", {"contentBlockIndex": index}))
        index += 1
    if turn.text:
        for piece in split(turn.text, turn.pieces):
            events.append(("contentBlockDelta",
                           {"contentBlockIndex": index, "delta": {"text": piece}}))
        events.append(("contentBlockStop", {"contentBlockIndex": index}))
        index += 1
    for tool_id, name, arguments in turn.tool_calls:
        events.append(("contentBlockStart", {"contentBlockIndex": index,
                                             "start": {"toolUse": {"toolUseId": tool_id,
                                                                   "name": name}}}))
        for piece in split(orjson.dumps(arguments).decode(), turn.pieces):
            events.append(("contentBlockDelta",
                           {"contentBlockIndex": index, "delta": {"toolUse": {"input": piece}}}))
        events.append(("contentBlockStop", {"contentBlockIndex": index}))
        index += 1
    events.append(("messageStop", {"stopReason": _stop_reason(turn)}))
    events.append(("metadata", {"usage": turn.usage, "metrics": {"latencyMs": 42}}))
    return events


def converse_body(turn: Turn) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if turn.reasoning:
        text, signature = turn.reasoning
        content.append({"reasoningContent": {"reasoningText": {"text": text,
                                                                "signature": signature}}})
    if turn.text:
        content.append({"text": turn.text})
    for tool_id, name, arguments in turn.tool_calls:
        content.append({"toolUse": {"toolUseId": tool_id, "name": name, "input": arguments}})
    return {"output": {"message": {"role": "assistant", "content": content}},
            "stopReason": _stop_reason(turn), "usage": turn.usage,
            "metrics": {"latencyMs": 42}}


def _stop_reason(turn: Turn) -> str:
    return turn.stop_reason or ("tool_use" if turn.tool_calls else "end_turn")


# ---------------------------------------------------------------- SigV4 check


def signature_ok(received: Received, secret_key: str, region: str,
                 service: str = "bedrock") -> bool:
    """Recompute the SigV4 signature from what arrived on the wire (AWS's algorithm:
    canonical request, string to sign, derived key) and compare."""
    auth = received.headers.get("authorization", "")
    if not auth.startswith("AWS4-HMAC-SHA256 "):
        return False
    fields = dict(item.strip().split("=", 1) for item in auth[len("AWS4-HMAC-SHA256 "):]
                  .split(","))
    credential = fields["Credential"].split("/")
    date, scope_region, scope_service = credential[1], credential[2], credential[3]
    if (scope_region, scope_service) != (region, service):
        return False
    signed = fields["SignedHeaders"].split(";")
    amz_date = received.headers["x-amz-date"]
    canonical_headers = "".join(
        f"{name}:{' '.join(received.headers[name].split())}\n" for name in signed)
    canonical_request = "\n".join([
        "POST",
        quote(received.raw_path, safe="/~"),  # non-S3 services encode the path twice
        received.query,
        canonical_headers,
        ";".join(signed),
        hashlib.sha256(received.raw_body).hexdigest(),
    ])
    scope = f"{date}/{region}/{service}/aws4_request"
    string_to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                                hashlib.sha256(canonical_request.encode()).hexdigest()])
    key = ("AWS4" + secret_key).encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    expected = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields["Signature"])


# ---------------------------------------------------------------- the app


class FakeBedrock(ScriptedReplies[Received, Turn | Failure]):
    def __init__(self) -> None:
        super().__init__()
        self.images: dict[str, tuple[str, bytes]] = {}

    def next_reply(self) -> Turn | Failure:
        return self.replies.popleft() if self.replies else Turn(text="Hello from Bedrock")

    async def handle(self, request: Request) -> Response:
        raw_path = request.scope["raw_path"].decode("latin-1")
        model_id, action = request.path_params["model_id"], request.path_params["action"]
        self.requests.append(Received(
            action=action, model_id=model_id, raw_path=raw_path,
            query=request.scope["query_string"].decode("latin-1"),
            headers={k.decode("latin-1").lower(): v.decode("latin-1")
                     for k, v in request.scope["headers"]},
            raw_body=await request.body(),
        ))
        if action == "invoke" and not self.replies:
            return Response(orjson.dumps(invoke_body(model_id, orjson.loads(
                self.requests[-1].raw_body))), media_type="application/json",
                headers={"x-amzn-requestid": str(uuid.uuid4())})
        reply = self.next_reply()
        if isinstance(reply, Failure):
            return failure_response(reply)
        if action == "converse":
            return Response(orjson.dumps(converse_body(reply)),
                            media_type="application/json",
                            headers={"x-amzn-requestid": str(uuid.uuid4())})
        return StreamingResponse(stream_body(reply), media_type=EVENTSTREAM,
                                 headers={"x-amzn-requestid": str(uuid.uuid4())})

    async def image(self, request: Request) -> Response:
        mime, data = self.images[request.path_params["name"]]
        return Response(data, media_type=mime)


def invoke_body(model_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """An InvokeModel answer of an embedding model: Amazon Titan Text Embeddings (one
    ``inputText``) or Cohere Embed (``texts``)."""
    if "titan-embed" in model_id:
        text = body["inputText"]
        return {"embedding": embeddings.vector(text, body.get("dimensions")),
                "inputTextTokenCount": embeddings.tokens(text)}
    assert "cohere.embed" in model_id, model_id
    assert body.get("input_type") in ("search_document", "search_query", "classification",
                                      "clustering"), body
    texts = body["texts"]
    return {"id": str(uuid.uuid4()), "response_type": "embeddings_floats", "texts": texts,
            "embeddings": [embeddings.vector(t, body.get("output_dimension"))
                           for t in texts]}


def failure_response(failure: Failure) -> Response:
    headers = {"x-amzn-ErrorType":
               f"{failure.error_type}:http://internal.amazon.com/coral/com.amazon.bedrock/",
               "x-amzn-requestid": str(uuid.uuid4()), **failure.headers}
    return Response(orjson.dumps({"message": failure.message}), status_code=failure.status,
                    media_type="application/json", headers=headers)


async def stream_body(turn: Turn) -> AsyncIterator[bytes]:
    for count, (event_type, body) in enumerate(stream_events(turn)):
        if turn.exception_after is not None and count == turn.exception_after:
            yield exception_frame(*turn.exception)
            return
        frame = event_frame(event_type, body)
        if turn.drop_after is not None and count == turn.drop_after:
            yield frame[: len(frame) // 2]
            raise DroppedConnection("closing the socket mid-frame")
        # Each frame in two writes: the client must reassemble frames across reads.
        yield frame[:7]
        yield frame[7:]


def make_app() -> tuple[Starlette, FakeBedrock]:
    fake = FakeBedrock()
    app = Starlette(routes=[
        Route("/model/{model_id:path}/{action:str}", fake.handle, methods=["POST"]),
        Route("/images/{name}", fake.image, methods=["GET"]),
    ])
    return app, fake
