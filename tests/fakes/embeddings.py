"""What the vendor fakes' embedding routes share: a deterministic vector for a text and the
token count they report for it.

``vector(text, dims)`` derives each component from a SHA-256 of the text, as a multiple
of 1/128 in [-1, 1): exact in float32, so a base64 (float32) answer decodes to exactly the
floats of a float answer. The default length is ``DEFAULT_DIMS``.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

DEFAULT_DIMS = 8


def vector(text: str, dims: int | None = None) -> list[float]:
    size = dims or DEFAULT_DIMS
    digest = b""
    counter = 0
    while len(digest) < size:
        digest += hashlib.sha256(f"{counter}:{text}".encode()).digest()
        counter += 1
    return [(byte - 128) / 128 for byte in digest[:size]]


def tokens(text: str) -> int:
    """The token count a fake reports for ``text``: one per word, plus one."""
    return len(text.split()) + 1


def openai_answer(model: str, texts: list[str], dims: int | None) -> dict[str, Any]:
    """OpenAI's (and Azure's, Mistral's) embeddings answer for ``texts``."""
    count = sum(tokens(t) for t in texts)
    return {"object": "list", "model": model,
            "data": [{"object": "embedding", "index": i, "embedding": vector(t, dims)}
                     for i, t in enumerate(texts)],
            "usage": {"prompt_tokens": count, "total_tokens": count}}


def texts_of(value: object) -> list[str]:
    """An OpenAI-shaped ``input`` as a list of texts."""
    if isinstance(value, str):
        return [value]
    assert isinstance(value, list) and all(isinstance(t, str) for t in value), value
    return list(value)


class OpenAIEmbeddings:
    """OpenAI's ``POST /v1/embeddings`` (for the OpenAI fake's app, and for any
    OpenAI-compatible server): requests must carry ``api_key`` as a bearer token when it is
    set; ``fail_next`` scripts error answers (status, body) served first. ``requests``
    records (headers, body)."""

    def __init__(self, api_key: str | None = None) -> None:
        self.api_key = api_key
        self.requests: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.fail_next: list[tuple[int, dict[str, Any]]] = []

    async def handle(self, request: Request) -> Response:
        body = orjson.loads(await request.body())
        self.requests.append((dict(request.headers), body))
        if self.api_key and request.headers.get("authorization") != f"Bearer {self.api_key}":
            return _json(401, {"error": {"message": "Incorrect API key provided",
                                         "type": "invalid_request_error", "param": None,
                                         "code": "invalid_api_key"}})
        if self.fail_next:
            status, error = self.fail_next.pop(0)
            return _json(status, error)
        if body.get("encoding_format") not in (None, "float", "base64"):
            return _json(400, {"error": {"message": "bad encoding_format",
                                         "type": "invalid_request_error",
                                         "param": "encoding_format", "code": None}})
        return _json(200, openai_answer(body["model"], texts_of(body["input"]),
                                        body.get("dimensions")))

    def route(self, path: str = "/v1/embeddings") -> Route:
        return Route(path, self.handle, methods=["POST"])


def _json(status: int, body: Any) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")
