"""A loopback stand-in for Ollama's native chat API (``POST /api/chat``).

It speaks Ollama's wire format: with ``"stream": false`` one JSON object; otherwise (the
Ollama default) an ``application/x-ndjson`` stream of objects, each with
``message.content`` and/or ``message.tool_calls`` and ``"done": false``, closed by one
``"done": true`` object carrying ``done_reason``, ``prompt_eval_count`` and
``eval_count``. Errors are ``{"error": "..."}`` bodies with the HTTP status (404 for an
unknown model), or an ``{"error": ...}`` line inside a stream.

Tests script it through the controller returned by ``make_app``: queue replies with
``push`` (served in order; when the queue is empty it answers ``echo: <last user text>``)
and read what tako sent from ``requests``. A reply can close the socket mid-stream
(``drop_after``) or replace the stream with raw ``lines``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.fakes import embeddings
from tests.fakes.common import Received, ScriptedReplies, paced

CREATED_AT = "2025-05-27T22:54:57.641643Z"


@dataclass
class Reply:
    """One scripted answer. ``pieces`` are message fragments (``{"content": ...}`` or
    ``{"tool_calls": [...]}``), one stream line each; non-streaming joins them."""

    pieces: list[dict[str, Any]] = field(default_factory=list)
    done_reason: str = "stop"
    prompt_eval_count: int = 26
    eval_count: int = 12
    status: int = 200
    error: str | None = None
    lines: list[dict[str, Any]] | None = None
    drop_after: int | None = None
    delay_s: float = 0.0


def text(*chunks: str, done_reason: str = "stop", prompt: int = 26, completion: int = 12) -> Reply:
    return Reply(
        pieces=[{"content": c} for c in chunks],
        done_reason=done_reason,
        prompt_eval_count=prompt,
        eval_count=completion,
    )


def tool_calls(*calls: tuple[str, dict[str, Any]], content: str = "") -> Reply:
    pieces: list[dict[str, Any]] = [{"content": content}] if content else []
    pieces += [{"tool_calls": [{"function": {"name": n, "arguments": a}}]} for n, a in calls]
    return Reply(pieces=pieces)


def error(status: int, message: str) -> Reply:
    return Reply(status=status, error=message)


class FakeOllama(ScriptedReplies[Received, Reply]):
    def next_reply(self, body: dict[str, Any]) -> Reply:
        if self.replies:
            return self.replies.popleft()
        messages = body.get("messages", [])
        user_texts = [m.get("content", "") for m in messages if m.get("role") == "user"]
        return text(f"echo: {user_texts[-1] if user_texts else ''}")


def _line(model: str, piece: dict[str, Any]) -> dict[str, Any]:
    return {
        "model": model,
        "created_at": CREATED_AT,
        "message": {"role": "assistant", "content": piece.get("content", ""),
                    **({"tool_calls": piece["tool_calls"]} if "tool_calls" in piece else {})},
        "done": False,
    }


def _final(model: str, reply: Reply, message: dict[str, Any]) -> dict[str, Any]:
    return {
        "model": model,
        "created_at": CREATED_AT,
        "message": message,
        "done": True,
        "done_reason": reply.done_reason,
        "total_duration": 5_191_566_416,
        "load_duration": 2_154_458,
        "prompt_eval_count": reply.prompt_eval_count,
        "prompt_eval_duration": 383_809_000,
        "eval_count": reply.eval_count,
        "eval_duration": 4_799_921_000,
    }


def make_app() -> tuple[Starlette, FakeOllama]:
    controller = FakeOllama()

    async def chat(request: Request) -> Response:
        body = orjson.loads(await request.body())
        controller.requests.append(
            Received(request.url.path, dict(request.headers), body)
        )
        reply = controller.next_reply(body)
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        if reply.error is not None:
            return Response(orjson.dumps({"error": reply.error}), status_code=reply.status,
                            media_type="application/json")
        model = body.get("model", "")
        if body.get("stream", True) is False:
            content = "".join(p.get("content", "") for p in reply.pieces)
            calls = [c for p in reply.pieces for c in p.get("tool_calls", ())]
            message: dict[str, Any] = {"role": "assistant", "content": content}
            if calls:
                message["tool_calls"] = calls
            return Response(orjson.dumps(_final(model, reply, message)),
                            media_type="application/json")
        lines = reply.lines
        if lines is None:
            lines = [_line(model, p) for p in reply.pieces]
            lines.append(_final(model, reply, {"role": "assistant", "content": ""}))
        frames = [orjson.dumps(line) + b"\n" for line in lines]
        return StreamingResponse(paced(frames, reply.drop_after),
                                 media_type="application/x-ndjson")

    async def embed(request: Request) -> Response:
        """``/api/embed``: ``embeddings`` for ``input`` (a text or a list), with
        ``prompt_eval_count``; a queued error Reply is served first."""
        body = orjson.loads(await request.body())
        controller.requests.append(Received(request.url.path, dict(request.headers), body))
        if controller.replies and controller.replies[0].error is not None:
            reply = controller.replies.popleft()
            return Response(orjson.dumps({"error": reply.error}), status_code=reply.status,
                            media_type="application/json")
        texts = embeddings.texts_of(body["input"])
        return Response(orjson.dumps({
            "model": body["model"],
            "embeddings": [embeddings.vector(t, body.get("dimensions")) for t in texts],
            "total_duration": 14_143_917, "load_duration": 1_019_500,
            "prompt_eval_count": sum(embeddings.tokens(t) for t in texts)}),
            media_type="application/json")

    app = Starlette(routes=[Route("/api/chat", chat, methods=["POST"]),
                            Route("/api/embed", embed, methods=["POST"])])
    return app, controller
