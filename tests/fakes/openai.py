"""A loopback stand-in for an OpenAI-compatible ``POST /v1/chat/completions``.

It answers ``echo: <last user text>`` in OpenAI's JSON and SSE formats unless a test
queued scripted replies with ``push``: an error status with a body, a slow answer, a
stream that drops the connection after N chunks, or tool calls. ``requests`` keeps every
body and header it got.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.fakes.common import ScriptedReplies, word_pieces


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    text: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    drop_after: int | None = None
    chunk_delay_s: float = 0.0
    usage: dict[str, Any] | None = None
    stream_error: dict[str, Any] | None = None
    chunks: list[str] | None = None  # exact content pieces of a stream (else word by word)


@dataclass
class Received:
    headers: dict[str, str]
    body: dict[str, Any]


class FakeOpenAI(ScriptedReplies[Received, Reply]):
    def _usage(self, reply: Reply) -> dict[str, Any]:
        return reply.usage or {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17,
                               "prompt_tokens_details": {"cached_tokens": 2},
                               "completion_tokens_details": {"reasoning_tokens": 1}}

    async def handle(self, request: Request) -> Response:
        body = orjson.loads(await request.body())
        self.requests.append(Received(dict(request.headers), body))
        reply = self.replies.popleft() if self.replies else Reply()
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        if reply.status >= 400:
            return Response(orjson.dumps(reply.body or {"error": {"message": "boom"}}),
                            status_code=reply.status, headers=reply.headers,
                            media_type="application/json")
        text = reply.text
        if text is None and not reply.tool_calls:
            last = next((m for m in reversed(body["messages"]) if m["role"] == "user"), {})
            content = last.get("content")
            if isinstance(content, list):
                content = "".join(p.get("text", "") for p in content if p["type"] == "text")
            text = f"echo: {content}"
        if body.get("stream"):
            return StreamingResponse(self._stream(body, reply, text), headers=reply.headers,
                                     media_type="text/event-stream")
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if reply.tool_calls:
            message["tool_calls"] = reply.tool_calls
        return Response(orjson.dumps({
            "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
            "model": body["model"],
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": "tool_calls" if reply.tool_calls else "stop"}],
            "usage": self._usage(reply),
        }), media_type="application/json", headers=reply.headers)

    async def _stream(self, body: dict[str, Any], reply: Reply,
                      text: str | None) -> AsyncIterator[bytes]:
        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            payload = {"id": "chatcmpl-fake", "object": "chat.completion.chunk",
                       "created": 1, "model": body["model"],
                       "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            return b"data: " + orjson.dumps(payload) + b"\n\n"

        frames = [chunk({"role": "assistant", "content": ""})]
        if reply.chunks is not None:
            frames += [chunk({"content": piece}) for piece in reply.chunks]
        elif text:
            frames += [chunk({"content": piece}) for piece in word_pieces(text)]
        for i, call in enumerate(reply.tool_calls or ()):
            args = call["function"]["arguments"]
            frames.append(chunk({"tool_calls": [{"index": i, "id": call["id"], "type": "function",
                                                 "function": {"name": call["function"]["name"],
                                                              "arguments": ""}}]}))
            half = len(args) // 2
            for piece in (args[:half], args[half:]):
                frames.append(chunk({"tool_calls": [{"index": i,
                                                     "function": {"arguments": piece}}]}))
        frames.append(chunk({}, "tool_calls" if reply.tool_calls else "stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            frames.append(b"data: " + orjson.dumps({
                "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1,
                "model": body["model"], "choices": [], "usage": self._usage(reply)}) + b"\n\n")
        for i, frame in enumerate(frames):
            if reply.drop_after is not None and i == reply.drop_after:
                raise ConnectionResetError("fake upstream drops the connection")
            if reply.stream_error is not None and i == len(frames) // 2:
                yield b"data: " + orjson.dumps({"error": reply.stream_error}) + b"\n\n"
                return
            if reply.chunk_delay_s:
                await asyncio.sleep(reply.chunk_delay_s)
            yield frame
        yield b"data: [DONE]\n\n"


def make_app() -> tuple[Starlette, FakeOpenAI]:
    fake = FakeOpenAI()
    app = Starlette(routes=[Route("/v1/chat/completions", fake.handle, methods=["POST"])])
    return app, fake
