"""What the loopback vendor stand-ins share: the request log and reply queue tests script
them through, the scripted-reply shape of the JSON/SSE vendors, and streams that can be
paced or cut off part-way, as a flaky upstream would."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import orjson
from starlette.responses import Response, StreamingResponse

ReceivedT = TypeVar("ReceivedT")
ReplyT = TypeVar("ReplyT")


class DroppedConnection(Exception):
    """Raised inside a streamed body: the server closes the socket without finishing."""


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class ScriptedReplies(Generic[ReceivedT, ReplyT]):
    """A controller's record of what arrived (``requests``) and its queue of answers to give
    (``replies``, served in order)."""

    def __init__(self) -> None:
        self.requests: list[ReceivedT] = []
        self.replies: deque[ReplyT] = deque()

    def push(self, *replies: ReplyT) -> None:
        self.replies.extend(replies)

    def reset(self) -> None:
        self.requests.clear()
        self.replies.clear()

    @property
    def last(self) -> ReceivedT:
        return self.requests[-1]


@dataclass(kw_only=True)
class ScriptedReply:
    """One scripted HTTP answer: a JSON ``body``, or a stream when ``frames()`` gives any;
    a stream can pause ``delay_s`` before each frame and close the socket after
    ``drop_after`` frames."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    drop_after: int | None = None
    delay_s: float = 0.0

    def frames(self) -> list[bytes] | None:
        return None


async def paced(frames: Sequence[bytes], drop_after: int | None,
                delay_s: float = 0.0) -> AsyncIterator[bytes]:
    """Yield ``frames`` one by one, pausing ``delay_s`` before each; after ``drop_after``
    of them the connection drops."""
    for sent, frame in enumerate(frames):
        if drop_after is not None and sent >= drop_after:
            raise DroppedConnection("closing the socket mid-stream")
        await asyncio.sleep(delay_s)
        yield frame


def respond(reply: ScriptedReply, media_type: str = "text/event-stream") -> Response:
    frames = reply.frames()
    if frames is None:
        return Response(orjson.dumps(reply.body), status_code=reply.status,
                        headers=reply.headers, media_type="application/json")
    return StreamingResponse(paced(frames, reply.drop_after, reply.delay_s),
                             status_code=reply.status, headers=reply.headers,
                             media_type=media_type)


def sse_data(payload: dict[str, Any] | str) -> bytes:
    """One ``data:`` event; a string is sent as it is (``[DONE]``)."""
    data = payload.encode() if isinstance(payload, str) else orjson.dumps(payload)
    return b"data: " + data + b"\n\n"


def last_user_text(body: dict[str, Any]) -> str:
    for msg in reversed(body.get("messages") or []):
        if msg.get("role") == "user":
            content = msg.get("content")
            if isinstance(content, str):
                return content
            return "".join(p.get("text", "") for p in content or () if p.get("type") == "text")
    return ""


def word_pieces(text: str) -> list[str]:
    """``text`` split into words as streams send them: each after the first keeps its
    leading space."""
    words = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


def split(text: str, pieces: int) -> list[str]:
    """``text`` cut into at most ``pieces`` parts of equal length."""
    size = max(1, -(-len(text) // max(1, pieces)))
    return [text[i : i + size] for i in range(0, len(text), size)]
