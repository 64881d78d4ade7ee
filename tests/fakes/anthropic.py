"""A loopback stand-in for Anthropic's Messages API (``POST /v1/messages``, and
``POST /v1/messages/count_tokens``, which answers ``counted_tokens`` and keeps what it was
sent in ``counts``).

It speaks Anthropic's wire format: message JSON bodies, SSE streams of ``message_start``,
``content_block_*``, ``message_delta``, ``message_stop``, ``ping`` and ``error`` events,
and ``{"type": "error", "error": {...}}`` error bodies. Tests script it through the
controller returned by ``make_app``: queue replies with ``push`` (served in order; when the
queue is empty it answers ``echo: <last user text>``) and read what tako sent from
``requests``. A reply can close the socket mid-stream (``drop_after``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.fakes.common import (
    Received,
    ScriptedReplies,
    ScriptedReply,
    last_user_text,
    respond,
    word_pieces,
)

MODEL = "claude-sonnet-4-5"


@dataclass
class Reply(ScriptedReply):
    events: list[dict[str, Any]] | None = None

    def frames(self) -> list[bytes] | None:
        return None if self.events is None else [_sse(event) for event in self.events]


class FakeAnthropic(ScriptedReplies[Received, Reply]):
    def __init__(self, api_key: str | None) -> None:
        super().__init__()
        self.api_key = api_key
        self.counts: list[Received] = []
        self.counted_tokens = 1234


# ---- builders for Anthropic bodies and streams ----


def usage(input_tokens: int = 12, output_tokens: int = 6, cache_read: int = 0,
          cache_write: int = 0) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": cache_write,
        "cache_read_input_tokens": cache_read,
    }


def message(text: str | None = "Hello!", *, tool_uses: list[tuple[str, str, dict[str, Any]]]
            | None = None, stop_reason: str | None = None,
            usage_: dict[str, Any] | None = None, model: str = MODEL) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if text is not None:
        content.append({"type": "text", "text": text})
    for call_id, name, arguments in tool_uses or ():
        content.append({"type": "tool_use", "id": call_id, "name": name, "input": arguments})
    return {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason or ("tool_use" if tool_uses else "end_turn"),
        "stop_sequence": None,
        "usage": usage_ or usage(),
    }


def error_body(kind: str, text: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": text},
            "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"}


def error(status: int, kind: str, text: str, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status=status, body=error_body(kind, text), headers=headers or {})


def message_start(input_tokens: int = 12, cache_read: int = 0) -> dict[str, Any]:
    start = message(None, usage_=usage(input_tokens, 1, cache_read))
    start.update(content=[], stop_reason=None)
    return {"type": "message_start", "message": start}


def message_end(stop_reason: str, output_tokens: int) -> list[dict[str, Any]]:
    return [
        {"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": None},
         "usage": {"output_tokens": output_tokens}},
        {"type": "message_stop"},
    ]


def text_block(index: int, pieces: list[str]) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = [
        {"type": "content_block_start", "index": index,
         "content_block": {"type": "text", "text": ""}},
    ]
    events += [{"type": "content_block_delta", "index": index,
                "delta": {"type": "text_delta", "text": p}} for p in pieces]
    events.append({"type": "content_block_stop", "index": index})
    return events


def tool_block(index: int, call_id: str, name: str, fragments: list[str]) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = [
        {"type": "content_block_start", "index": index,
         "content_block": {"type": "tool_use", "id": call_id, "name": name, "input": {}}},
    ]
    events += [{"type": "content_block_delta", "index": index,
                "delta": {"type": "input_json_delta", "partial_json": f}} for f in fragments]
    events.append({"type": "content_block_stop", "index": index})
    return events


def text_stream(pieces: list[str], *, input_tokens: int = 12, output_tokens: int = 6,
                cache_read: int = 0, stop_reason: str = "end_turn") -> list[dict[str, Any]]:
    block = text_block(0, pieces)
    return [
        message_start(input_tokens, cache_read),
        block[0],
        {"type": "ping"},
        *block[1:],
        *message_end(stop_reason, output_tokens),
    ]


def stream_error_event(kind: str = "overloaded_error", text: str = "Overloaded") -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": text}}


# ---- the app ----


def _sse(event: dict[str, Any]) -> bytes:
    return b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


def _default_reply(body: dict[str, Any]) -> Reply:
    text = f"echo: {last_user_text(body)}"
    if body.get("stream"):
        return Reply(events=text_stream(word_pieces(text)))
    return Reply(body=message(text))


def make_app(api_key: str | None = "sk-ant-test") -> tuple[Starlette, FakeAnthropic]:
    """The ASGI app and its controller. With ``api_key`` set, other keys get a 401."""
    fake = FakeAnthropic(api_key)

    async def messages(request: Request) -> Response:
        body = orjson.loads(await request.body())
        fake.requests.append(Received(request.url.path, dict(request.headers), body))
        if fake.api_key and request.headers.get("x-api-key") != fake.api_key:
            return respond(error(401, "authentication_error", "invalid x-api-key"))
        if not request.headers.get("anthropic-version"):
            return respond(error(400, "invalid_request_error",
                                  "anthropic-version: header is required"))
        reply = fake.replies.popleft() if fake.replies else _default_reply(body)
        return respond(reply)

    async def count_tokens(request: Request) -> Response:
        body = orjson.loads(await request.body())
        fake.counts.append(Received(request.url.path, dict(request.headers), body))
        if fake.api_key and request.headers.get("x-api-key") != fake.api_key:
            return respond(error(401, "authentication_error", "invalid x-api-key"))
        return respond(Reply(body={"input_tokens": fake.counted_tokens}))

    app = Starlette(routes=[Route("/v1/messages", messages, methods=["POST"]),
                            Route("/v1/messages/count_tokens", count_tokens, methods=["POST"])])
    return app, fake
