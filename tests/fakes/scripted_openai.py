"""A loopback OpenAI-compatible upstream whose answers are scripted per served model.

Each served model name (the ``model`` a deployment sends) has a list of ``Rule``s tried in
order: a regex searched in the last message, the system prompt or the whole prompt, and
a reply (text, an ``Answer`` with tool calls / failures / explicit chunks, or a callable
of the ``Call`` returning either). A list reply is consumed in order, its last entry
repeating. Unmatched requests get ``unscripted <model>: <last message>``.

Every request is recorded as a ``Call`` (body, messages, the reply sent, the usage
reported) in arrival order; a streamed reply counts ``chunks_sent`` as it goes out, so a
test can watch an upstream stream's progress. Usage is deterministic: prompt tokens are a
quarter of the prompt's characters plus one, completion tokens the reply's words (its
chunks, when scripted as chunks) plus one, three more per tool call.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.support.net import serve_asgi


@dataclass
class Answer:
    """A scripted reply. ``status`` >= 400 answers with an OpenAI error body. When
    streaming, ``chunks`` (else the text split at word boundaries) go out one per frame;
    ``error_after`` sends an in-stream error frame after that many content frames."""

    text: str = ""
    tool_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    status: int = 200
    error: dict[str, Any] | None = None
    chunks: Sequence[str] | None = None
    error_after: int | None = None
    chunk_delay_s: float = 0.0
    delay_s: float = 0.0
    usage_in_stream: bool = True  # False: ignores include_usage, like llama.cpp 0.3.x

    def pieces(self) -> list[str]:
        if self.chunks is not None:
            return list(self.chunks)
        return re.findall(r"\s*\S+|\s+$", self.text)

    def full_text(self) -> str:
        """The reply's text; a reply scripted as more than a megabyte of chunks is
        recorded by its size only."""
        if self.chunks is None:
            return self.text
        if sum(len(c) for c in self.chunks) > 1_000_000:
            return f"<{len(self.chunks)} chunks>"
        return "".join(self.chunks)

    def words(self) -> int:
        return len(self.chunks) if self.chunks is not None else len(self.text.split())


Responder = str | Answer | Callable[["Call"], "str | Answer"]


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


class ScriptedOpenAI:
    def __init__(self, script: Mapping[str, Sequence[Rule]] | None = None) -> None:
        self.script: dict[str, list[Rule]] = {k: list(v) for k, v in (script or {}).items()}
        self.calls: list[Call] = []
        self._lock = threading.Lock()
        self._ids = itertools.count()

    def add(self, model: str, *rules: Rule) -> None:
        self.script.setdefault(model, []).extend(rules)

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()

    def calls_to(self, model: str) -> list[Call]:
        return [c for c in list(self.calls) if c.model == model]

    def usage_sum(self) -> tuple[int, int]:
        calls = list(self.calls)
        return sum(c.prompt_tokens for c in calls), sum(c.completion_tokens for c in calls)

    def _answer(self, call: Call) -> Answer:
        for rule in self.script.get(call.model, ()):
            if rule.matches(call):
                reply = rule.next_reply()
                if callable(reply) and not isinstance(reply, Answer):
                    reply = reply(call)
                return reply if isinstance(reply, Answer) else Answer(text=reply)
        return Answer(text=f"unscripted {call.model}: {call.last_text}")

    async def handle(self, request: Request) -> Response:
        body = orjson.loads(await request.body())
        with self._lock:
            call = Call(next(self._ids), str(body.get("model")), body, dict(request.headers))
            self.calls.append(call)
        answer = self._answer(call)
        if answer.delay_s:
            await asyncio.sleep(answer.delay_s)
        if answer.status >= 400:
            call.failed = call.finished = True
            error = answer.error or {"message": f"scripted failure of {call.model}",
                                     "type": "server_error", "param": None, "code": None}
            return Response(orjson.dumps({"error": error}), status_code=answer.status,
                            media_type="application/json")
        call.reply = answer.full_text()
        call.tool_names = [name for name, _ in answer.tool_calls]
        call.prompt_tokens = len(call.prompt_text) // 4 + 1
        call.completion_tokens = answer.words() + 1 + 3 * len(answer.tool_calls)
        if call.stream:
            return StreamingResponse(self._stream(call, answer), media_type="text/event-stream")
        message: dict[str, Any] = {"role": "assistant", "content": call.reply or None}
        if answer.tool_calls:
            message["tool_calls"] = self._tool_calls(call, answer)
        call.finished = True
        return Response(orjson.dumps({
            "id": f"chatcmpl-scripted-{call.index}", "object": "chat.completion",
            "created": int(time.time()), "model": call.model,
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": "tool_calls" if answer.tool_calls else "stop"}],
            "usage": self._usage(call),
        }), media_type="application/json")

    @staticmethod
    def _tool_calls(call: Call, answer: Answer) -> list[dict[str, Any]]:
        return [{"id": f"call_{call.index}_{i}", "type": "function",
                 "function": {"name": name, "arguments": orjson.dumps(args).decode()}}
                for i, (name, args) in enumerate(answer.tool_calls)]

    @staticmethod
    def _usage(call: Call) -> dict[str, Any]:
        return {"prompt_tokens": call.prompt_tokens,
                "completion_tokens": call.completion_tokens,
                "total_tokens": call.prompt_tokens + call.completion_tokens}

    async def _stream(self, call: Call, answer: Answer) -> AsyncIterator[bytes]:
        def chunk(delta: dict[str, Any] | None, finish: str | None = None,
                  **extra: Any) -> bytes:
            choices = [] if delta is None else [
                {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]
            payload = {"id": f"chatcmpl-scripted-{call.index}",
                       "object": "chat.completion.chunk", "created": 1, "model": call.model,
                       "choices": choices, **extra}
            return b"data: " + orjson.dumps(payload) + b"\n\n"

        pieces = answer.pieces()
        call.chunks_total = len(pieces)
        try:
            yield chunk({"role": "assistant", "content": ""})
            for i, piece in enumerate(pieces):
                if answer.error_after is not None and i == answer.error_after:
                    call.failed = True
                    yield b"data: " + orjson.dumps({"error": answer.error or {
                        "message": f"scripted mid-stream failure of {call.model}",
                        "type": "server_error", "param": None, "code": None}}) + b"\n\n"
                    return
                # yield to the loop every chunk: uvicorn accepts writes after the client
                # left without suspending, so only this lets the disconnect cancel us
                await asyncio.sleep(answer.chunk_delay_s)
                yield chunk({"content": piece})
                call.chunks_sent = i + 1
            for i, tc in enumerate(self._tool_calls(call, answer)):
                yield chunk({"tool_calls": [{"index": i, "id": tc["id"], "type": "function",
                                             "function": {"name": tc["function"]["name"],
                                                          "arguments": ""}}]})
                yield chunk({"tool_calls": [{"index": i, "function": {
                    "arguments": tc["function"]["arguments"]}}]})
            yield chunk({}, "tool_calls" if answer.tool_calls else "stop")
            if ((call.body.get("stream_options") or {}).get("include_usage")
                    and answer.usage_in_stream):
                yield chunk(None, usage=self._usage(call))
            yield b"data: [DONE]\n\n"
            call.finished = True
        finally:
            if not call.finished:
                call.failed = True


def make_app(fake: ScriptedOpenAI) -> Starlette:
    return Starlette(routes=[Route("/v1/chat/completions", fake.handle, methods=["POST"])])


@contextmanager
def serve_scripted(script: Mapping[str, Sequence[Rule]] | None = None
                   ) -> Iterator[tuple[str, ScriptedOpenAI]]:
    """Serve a ScriptedOpenAI on loopback; yields (base URL ending in /v1, fake)."""
    fake = ScriptedOpenAI(script)
    with serve_asgi(make_app(fake)) as url:
        yield url + "/v1", fake
