"""The loopback stand-in for an OpenAI-compatible ``POST /v1/chat/completions``, in OpenAI's
JSON and SSE formats.

One scripting model. Each request is answered by the first matching ``Rule`` of the
served model it names (``add``, or the ``script`` it was made with); when none matches,
by the next ``Reply`` queued with ``push``; when the queue is empty, by
``echo: <last user text>``. A rule's regex is searched in the last message, the system
prompt or the whole prompt; its reply is a string, a ``Reply`` or a callable of the
``Call`` returning either; a list of them is consumed in order, its last entry repeating.

A ``Reply`` can fail with a status and body, wait, stream given chunks (else its text word
by word) slowly, send an in-stream error, drop the connection, or call tools.

Every request is recorded as a ``Call`` in ``requests`` (body, headers, the reply sent,
the usage reported, how many chunks went out). Usage is the fixed ``FIXED_USAGE`` unless
the fake was made with ``counted_usage=True`` (``serve_openai`` does): then prompt tokens
are a quarter of the prompt's characters plus one, completion tokens the reply's pieces
plus one, three more per tool call.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.fakes.common import last_user_text, word_pieces
from tests.support.net import serve_asgi

FIXED_USAGE: dict[str, Any] = {
    "prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17,
    "prompt_tokens_details": {"cached_tokens": 2},
    "completion_tokens_details": {"reasoning_tokens": 1}}

# (name, arguments) or (id, name, arguments); arguments as a dict or as JSON text
ScriptedToolCall = tuple[str, Any] | tuple[str, str, Any]


@dataclass
class Reply:
    """One scripted answer. ``text`` None echoes the last user message (unless there are
    tool calls). ``status`` >= 400 answers ``body``, else ``{"error": error}``. Streamed,
    ``chunks`` (else the text's words) go out one per frame, ``chunk_delay_s`` apart;
    ``error_after`` sends the ``error`` frame after that many content frames;
    ``drop_after`` closes the connection after that many frames (the role frame counts);
    ``usage_in_stream`` False ignores ``include_usage``, like llama.cpp 0.3.x."""

    text: str | None = None
    tool_calls: list[ScriptedToolCall] = field(default_factory=list)
    status: int = 200
    body: Any = None
    error: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    chunks: Sequence[str] | None = None
    chunk_delay_s: float = 0.0
    error_after: int | None = None
    drop_after: int | None = None
    usage: dict[str, Any] | None = None
    usage_in_stream: bool = True

    def pieces(self, text: str) -> list[str]:
        if self.chunks is not None:
            return list(self.chunks)
        return word_pieces(text) if text else []


Responder = str | Reply | Callable[["Call"], "str | Reply"]


@dataclass
class Rule:
    pattern: str
    reply: Responder | list[Responder]
    on: Literal["last", "system", "prompt"] = "last"

    def __post_init__(self) -> None:
        self.regex = re.compile(self.pattern, re.DOTALL | re.IGNORECASE)
        self._queue = list(self.reply) if isinstance(self.reply, list) else None

    def matches(self, call: Call) -> bool:
        target = {"last": call.last_text, "system": call.system_text,
                  "prompt": call.prompt_text}[self.on]
        return self.regex.search(target) is not None

    def next_reply(self) -> Responder:
        if self._queue is None:
            return self.reply  # type: ignore[return-value]
        return self._queue.pop(0) if len(self._queue) > 1 else self._queue[0]


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(p.get("text") or "" for p in content if p.get("type") == "text")


@dataclass
class Call:
    """One request the fake received, and what it answered."""

    index: int
    model: str
    body: dict[str, Any]
    headers: dict[str, str]
    reply: str = ""
    tool_names: list[str] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    chunks_total: int = 0
    chunks_sent: int = 0
    finished: bool = False  # the whole reply went out (stream: up to [DONE])
    failed: bool = False

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body.get("messages") or [])

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))

    @property
    def last_role(self) -> str:
        return self.messages[-1]["role"] if self.messages else ""

    @property
    def last_text(self) -> str:
        return _text(self.messages[-1].get("content")) if self.messages else ""

    @property
    def system_text(self) -> str:
        return "\n".join(_text(m.get("content")) for m in self.messages
                         if m["role"] in ("system", "developer"))

    @property
    def prompt_text(self) -> str:
        return "\n".join(f"{m['role']}: {_text(m.get('content'))}" for m in self.messages)

    @property
    def tools_offered(self) -> list[str]:
        return [t["function"]["name"] for t in self.body.get("tools") or ()]


def wire_tool_calls(call: Call, reply: Reply) -> list[dict[str, Any]]:
    """``reply``'s tool calls in OpenAI's shape; calls scripted without an id get one."""
    wired = []
    for i, scripted in enumerate(reply.tool_calls):
        cid, name, args = scripted if len(scripted) == 3 else (f"call_{call.index}_{i}",
                                                                *scripted)
        arguments = args if isinstance(args, str) else orjson.dumps(args).decode()
        wired.append({"id": cid, "type": "function",
                      "function": {"name": name, "arguments": arguments}})
    return wired


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


class FakeOpenAI:
    def __init__(self, script: Mapping[str, Sequence[Rule]] | None = None, *,
                 counted_usage: bool = False) -> None:
        self.script: dict[str, list[Rule]] = {k: list(v) for k, v in (script or {}).items()}
        self.replies: deque[Reply] = deque()
        self.requests: list[Call] = []
        self.counted_usage = counted_usage
        self._lock = threading.Lock()
        self._ids = itertools.count()

    def add(self, model: str, *rules: Rule) -> None:
        self.script.setdefault(model, []).extend(rules)

    def push(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    def reset(self) -> None:
        """Forget the requests and the queued replies (the rules stay)."""
        with self._lock:
            self.requests.clear()
            self.replies.clear()

    @property
    def last(self) -> Call:
        return self.requests[-1]

    def calls_to(self, model: str) -> list[Call]:
        return [c for c in list(self.requests) if c.model == model]

    def usage_sum(self) -> tuple[int, int]:
        calls = list(self.requests)
        return sum(c.prompt_tokens for c in calls), sum(c.completion_tokens for c in calls)

    def _reply(self, call: Call) -> Reply:
        for rule in self.script.get(call.model, ()):
            if rule.matches(call):
                reply = rule.next_reply()
                if callable(reply) and not isinstance(reply, Reply):
                    reply = reply(call)
                return reply if isinstance(reply, Reply) else Reply(text=reply)
        return self.replies.popleft() if self.replies else Reply()

    def _usage(self, call: Call, reply: Reply) -> dict[str, Any]:
        if reply.usage is not None:
            return reply.usage
        if not self.counted_usage:
            return FIXED_USAGE
        return {"prompt_tokens": call.prompt_tokens,
                "completion_tokens": call.completion_tokens,
                "total_tokens": call.prompt_tokens + call.completion_tokens}

    def _record_answer(self, call: Call, reply: Reply, text: str) -> None:
        call.reply = text
        if reply.chunks is not None and sum(len(c) for c in reply.chunks) > 1_000_000:
            call.reply = f"<{len(reply.chunks)} chunks>"
        call.tool_names = [t["function"]["name"] for t in wire_tool_calls(call, reply)]
        call.prompt_tokens = len(call.prompt_text) // 4 + 1
        call.completion_tokens = len(reply.pieces(text)) + 1 + 3 * len(reply.tool_calls)

    async def handle(self, request: Request) -> Response:
        body = orjson.loads(await request.body())
        with self._lock:
            call = Call(next(self._ids), str(body.get("model")), body, dict(request.headers))
            self.requests.append(call)
        reply = self._reply(call)
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        if reply.status >= 400:
            return self._failure(call, reply)
        text = reply.text
        if text is None:
            text = "" if reply.tool_calls else f"echo: {last_user_text(body)}"
        if reply.chunks is not None and reply.text is None:
            text = "".join(reply.chunks)
        self._record_answer(call, reply, text)
        if call.stream:
            return StreamingResponse(self._stream(call, reply, text), headers=reply.headers,
                                     media_type="text/event-stream")
        return self._completion(call, reply, text)

    @staticmethod
    def _failure(call: Call, reply: Reply) -> Response:
        call.failed = call.finished = True
        body = reply.body
        if body is None:
            body = {"error": reply.error or {"message": "boom", "type": "server_error",
                                             "param": None, "code": None}}
        return Response(orjson.dumps(body), status_code=reply.status, headers=reply.headers,
                        media_type="application/json")

    def _completion(self, call: Call, reply: Reply, text: str) -> Response:
        message: dict[str, Any] = {"role": "assistant", "content": text or None}
        if reply.tool_calls:
            message["tool_calls"] = wire_tool_calls(call, reply)
        call.finished = True
        return Response(orjson.dumps({
            "id": f"chatcmpl-fake-{call.index}", "object": "chat.completion",
            "created": int(time.time()), "model": call.model,
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": "tool_calls" if reply.tool_calls else "stop"}],
            "usage": self._usage(call, reply),
        }), media_type="application/json", headers=reply.headers)

    def _frames(self, call: Call, reply: Reply, text: str) -> Iterator[bytes | None]:
        """The stream's frames; None marks a content frame just sent."""

        def chunk(delta: dict[str, Any] | None, finish: str | None = None,
                  **extra: Any) -> bytes:
            choices = [] if delta is None else [
                {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]
            return _sse({"id": f"chatcmpl-fake-{call.index}",
                         "object": "chat.completion.chunk", "created": 1,
                         "model": call.model, "choices": choices, **extra})

        pieces = reply.pieces(text)
        call.chunks_total = len(pieces)
        yield chunk({"role": "assistant", "content": ""})
        for i, piece in enumerate(pieces):
            if reply.error_after is not None and i == reply.error_after:
                break
            yield chunk({"content": piece})
            yield None
        if reply.error_after is not None:
            call.failed = True
            yield _sse({"error": reply.error or {
                "message": f"scripted mid-stream failure of {call.model}",
                "type": "server_error", "param": None, "code": None}})
            return
        yield from self._tool_call_frames(call, reply, chunk)
        yield chunk({}, "tool_calls" if reply.tool_calls else "stop")
        if (call.body.get("stream_options") or {}).get("include_usage") and \
                reply.usage_in_stream:
            yield chunk(None, usage=self._usage(call, reply))
        yield b"data: [DONE]\n\n"

    @staticmethod
    def _tool_call_frames(call: Call, reply: Reply,
                          chunk: Callable[..., bytes]) -> Iterator[bytes]:
        """Each tool call's id and name, then its arguments in two halves."""
        for i, tc in enumerate(wire_tool_calls(call, reply)):
            args = tc["function"]["arguments"]
            yield chunk({"tool_calls": [{"index": i, "id": tc["id"], "type": "function",
                                         "function": {"name": tc["function"]["name"],
                                                      "arguments": ""}}]})
            for piece in (args[:len(args) // 2], args[len(args) // 2:]):
                yield chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]})

    async def _stream(self, call: Call, reply: Reply, text: str) -> AsyncIterator[bytes]:
        sent = 0
        try:
            for frame in self._frames(call, reply, text):
                if frame is None:
                    call.chunks_sent += 1
                    continue
                if reply.drop_after is not None and sent == reply.drop_after:
                    raise ConnectionResetError("fake upstream drops the connection")
                # yield to the loop every frame: uvicorn accepts writes after the client
                # left without suspending, so only this lets the disconnect cancel us
                await asyncio.sleep(reply.chunk_delay_s)
                yield frame
                sent += 1
            call.finished = not call.failed
        finally:
            if not call.finished:
                call.failed = True


def make_app(fake: FakeOpenAI | None = None) -> tuple[Starlette, FakeOpenAI]:
    """An app serving ``fake`` (a new one by default) and the fake."""
    fake = fake if fake is not None else FakeOpenAI()
    app = Starlette(routes=[Route("/v1/chat/completions", fake.handle, methods=["POST"])])
    return app, fake


@contextmanager
def serve_openai(script: Mapping[str, Sequence[Rule]] | None = None
                 ) -> Iterator[tuple[str, FakeOpenAI]]:
    """Serve a FakeOpenAI counting usage on loopback; yields (base URL ending in /v1,
    fake)."""
    app, fake = make_app(FakeOpenAI(script, counted_usage=True))
    with serve_asgi(app) as url:
        yield url + "/v1", fake
