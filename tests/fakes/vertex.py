"""A loopback stand-in for Vertex AI's Gemini API and Google's OAuth token endpoint.

Routes:

- ``POST /v1/projects/{p}/locations/{l}/publishers/google/models/{model}:generateContent``
  (a GenerateContentResponse JSON body) and ``...:streamGenerateContent?alt=sse`` (SSE, one
  GenerateContentResponse per ``data:`` line). Errors are Google API error bodies
  ``{"error": {"code", "message", "status"}}``. Requests must carry a bearer token this
  fake issued (else 401 UNAUTHENTICATED).
- ``POST /token``: the OAuth 2.0 JWT-bearer grant a service account uses. The assertion's
  RS256 signature is checked against ``trusted_keys`` and its claims are recorded; the answer
  is a fresh ``ya29.fake-<n>`` token living ``token_lifetime_s``.

Script it through the controller from ``make_app``: ``push`` a ``Turn`` (rendered as JSON or
as SSE, whichever the client asked for) or a ``Failure``; with an empty queue it answers
``Hello from Gemini``. ``requests`` and ``token_requests`` record what arrived.
``service_account_file(path, base_url)`` writes a key file this fake accepts.
"""

from __future__ import annotations

import base64
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.fakes import embeddings
from tests.fakes.common import DroppedConnection, ScriptedReplies, split

MODEL_VERSION = "gemini-2.0-flash-001"


@dataclass
class Turn:
    """One Gemini answer. ``tool_calls`` are (name, args)."""

    text: str = ""
    tool_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    finish_reason: str = "STOP"
    usage: dict[str, int] = field(default_factory=lambda: {
        "promptTokenCount": 11, "candidatesTokenCount": 6, "totalTokenCount": 17})
    response_id: str = "resp-0001"
    thought: str = ""
    pieces: int = 3
    # Stream only: after this many chunks send an error object, or cut the connection.
    error_after: int | None = None
    error: tuple[int, str, str] = (500, "INTERNAL", "Internal error encountered.")
    drop_after: int | None = None


@dataclass
class Failure:
    code: int
    status: str
    message: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Received:
    method: str
    project: str
    location: str
    model: str
    query: str
    headers: dict[str, str]
    body: dict[str, Any]


def _envelope(turn: Turn, parts: list[dict[str, Any]], final: bool) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}}
    body: dict[str, Any] = {"candidates": [candidate], "modelVersion": MODEL_VERSION,
                            "createTime": "2026-11-25T14:00:00.000000Z",
                            "responseId": turn.response_id}
    if final:
        candidate["finishReason"] = turn.finish_reason
        candidate["safetyRatings"] = [{"category": "HARM_CATEGORY_HATE_SPEECH",
                                       "probability": "NEGLIGIBLE"}]
        body["usageMetadata"] = turn.usage
    else:
        body["usageMetadata"] = {"promptTokenCount": turn.usage.get("promptTokenCount", 0)}
    return body


def response_body(turn: Turn) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    if turn.thought:
        parts.append({"text": turn.thought, "thought": True})
    if turn.text:
        parts.append({"text": turn.text})
    for name, args in turn.tool_calls:
        parts.append({"functionCall": {"name": name, "args": args}})
    return _envelope(turn, parts, final=True)


def stream_chunks(turn: Turn) -> list[dict[str, Any]]:
    chunks: list[list[dict[str, Any]]] = []
    if turn.thought:
        chunks.append([{"text": turn.thought, "thought": True}])
    chunks.extend([{"text": piece}] for piece in split(turn.text, turn.pieces))
    if turn.tool_calls:
        chunks.append([{"functionCall": {"name": n, "args": a}} for n, a in turn.tool_calls])
    if not chunks:
        chunks.append([])
    return [_envelope(turn, parts, final=i == len(chunks) - 1) for i, parts in enumerate(chunks)]


def error_body(code: int, status: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status}}


def write_service_account(path: Path, key: rsa.RSAPrivateKey, token_uri: str,
                          project: str = "tako-proj") -> Path:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    path.write_text(orjson.dumps({
        "type": "service_account", "project_id": project, "private_key_id": "key-1",
        "private_key": pem, "client_email": f"tako-gateway@{project}.iam.gserviceaccount.com",
        "client_id": "1234567890", "token_uri": token_uri,
    }).decode())
    return path


def _verifies(key: rsa.RSAPublicKey, signed: bytes, signature: bytes) -> bool:
    try:
        key.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


def _b64url(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


class FakeVertex(ScriptedReplies[Received, Turn | Failure]):
    def __init__(self) -> None:
        super().__init__()
        self.token_requests: list[dict[str, Any]] = []
        self.trusted_keys: list[rsa.RSAPublicKey] = []
        self.token_lifetime_s = 3600
        self.issued: list[str] = []
        self._counter = itertools.count(1)

    async def token(self, request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        header_b64, claims_b64, signature_b64 = str(form.get("assertion", "")).split(".")
        header = orjson.loads(_b64url(header_b64))
        claims = orjson.loads(_b64url(claims_b64))
        if header.get("alg") != "RS256" or not any(
                _verifies(key, f"{header_b64}.{claims_b64}".encode(), _b64url(signature_b64))
                for key in self.trusted_keys):
            return JSONResponse({"error": "invalid_grant",
                                 "error_description": "Invalid JWT Signature."},
                                status_code=400)
        self.token_requests.append(claims)
        token = f"ya29.fake-{next(self._counter)}"
        self.issued.append(token)
        return JSONResponse({"access_token": token, "expires_in": self.token_lifetime_s,
                             "token_type": "Bearer"})

    def service_account_file(self, path: Path, base_url: str,
                             project: str = "tako-proj") -> Path:
        """Write a service-account key file whose ``token_uri`` is this fake's ``/token``
        and whose key this fake trusts; point ``options.credentials_file`` at it."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.trusted_keys.append(key.public_key())
        return write_service_account(path, key, f"{base_url}/token", project)

    async def generate(self, request: Request) -> Response:
        model, _, method = request.path_params["target"].partition(":")
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.requests.append(Received(
            method=method, project=request.path_params["project"],
            location=request.path_params["location"], model=model,
            query=request.url.query, headers=headers, body=orjson.loads(await request.body())))
        auth = headers.get("authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in self.issued:
            return JSONResponse(error_body(401, "UNAUTHENTICATED",
                                           "Request had invalid authentication credentials."),
                                status_code=401)
        if method == "predict" and not self.replies:
            return Response(orjson.dumps(predict_body(self.requests[-1].body)),
                            media_type="application/json")
        reply = self.replies.popleft() if self.replies else Turn(text="Hello from Gemini")
        if isinstance(reply, Failure):
            return JSONResponse(error_body(reply.code, reply.status, reply.message),
                                status_code=reply.code, headers=reply.headers)
        if method == "generateContent":
            return Response(orjson.dumps(response_body(reply)), media_type="application/json")
        if method == "streamGenerateContent" and request.query_params.get("alt") == "sse":
            return StreamingResponse(sse_body(reply), media_type="text/event-stream")
        return JSONResponse(error_body(404, "NOT_FOUND", f"unknown method {method}"),
                            status_code=404)


def predict_body(body: dict[str, Any]) -> dict[str, Any]:
    """A text embedding model's ``:predict`` answer: one prediction per instance, with
    its ``statistics.token_count``."""
    dims = (body.get("parameters") or {}).get("outputDimensionality")
    texts = [instance["content"] for instance in body["instances"]]
    return {"predictions": [
        {"embeddings": {"values": embeddings.vector(t, dims),
                        "statistics": {"token_count": embeddings.tokens(t),
                                       "truncated": False}}} for t in texts],
        "metadata": {"billableCharacterCount": sum(len(t) for t in texts)}}


async def sse_body(turn: Turn) -> AsyncIterator[bytes]:
    for count, chunk in enumerate(stream_chunks(turn)):
        if turn.error_after is not None and count == turn.error_after:
            yield b"data: " + orjson.dumps(error_body(*turn.error)) + b"\r\n\r\n"
            return
        line = b"data: " + orjson.dumps(chunk) + b"\r\n\r\n"
        if turn.drop_after is not None and count == turn.drop_after:
            yield line[: len(line) // 2]
            raise DroppedConnection("closing the socket mid-event")
        yield line


def make_app() -> tuple[Starlette, FakeVertex]:
    fake = FakeVertex()
    prefix = "/v1/projects/{project}/locations/{location}/publishers/google/models/{target}"
    app = Starlette(routes=[
        Route(prefix, fake.generate, methods=["POST"]),
        Route("/token", fake.token, methods=["POST"]),
    ])
    return app, fake
