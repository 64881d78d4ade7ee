"""OpenAI ``chat.completion.chunk`` frames, pre-rendered as SSE bytes."""

from __future__ import annotations

from typing import Any

import orjson

from tako.core.errors import TakoError
from tako.core.types import Delta, End, OrchEvent, Usage

DONE = b"data: [DONE]\n\n"


def frame(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


class ChunkRenderer:
    """Chat Completions frames: the first delta carries the role; the end is the finish
    chunk, then the usage chunk when the client asked for it."""

    def __init__(self, completion_id: str, created: int, model: str,
                 include_usage: bool = False) -> None:
        self.base = {"id": completion_id, "object": "chat.completion.chunk",
                     "created": created, "model": model}
        self.role_sent = False
        self.include_usage = include_usage
        # A text delta is most of a stream: its frame is these bytes around the content.
        head = orjson.dumps({**self.base, "choices": [{"index": 0, "delta": {"content": ""},
                                                      "finish_reason": None,
                                                      "logprobs": None}]})
        before, after = head.split(b'"content":""', 1)
        self._text_head = b"data: " + before + b'"content":'
        self._text_tail = after + b"\n\n"

    @property
    def started(self) -> bool:
        return self.role_sent

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        return frame({**self.base, "choices": choices, **extra})

    def delta(self, d: Delta) -> bytes:
        if self.role_sent and d.content is not None and not d.tool_calls:
            return self._text_head + orjson.dumps(d.content) + self._text_tail
        delta: dict[str, Any] = {}
        if not self.role_sent:
            delta["role"] = "assistant"
            self.role_sent = True
        if d.content is not None:
            delta["content"] = d.content
        elif "role" in delta:
            delta["content"] = ""
        if d.tool_calls:
            calls = []
            for c in d.tool_calls:
                call: dict[str, Any] = {"index": c.index}
                if c.id:
                    call["id"] = c.id
                    call["type"] = "function"
                fn: dict[str, str] = {}
                if c.name is not None:
                    fn["name"] = c.name
                if c.arguments is not None:
                    fn["arguments"] = c.arguments
                if fn:
                    call["function"] = fn
                calls.append(call)
            delta["tool_calls"] = calls
        return self._chunk([{"index": 0, "delta": delta, "finish_reason": None,
                             "logprobs": None}])

    def finish(self, reason: str) -> bytes:
        prefix = b"" if self.role_sent else self.delta(Delta(content=""))
        return prefix + self._chunk([{"index": 0, "delta": {}, "finish_reason": reason,
                                      "logprobs": None}])

    def usage(self, usage: Usage) -> bytes:
        return self._chunk([], usage=usage.to_openai())

    def end(self, end: End) -> bytes:
        finish = self.finish(end.finish_reason)
        return finish + self.usage(end.usage) if self.include_usage else finish

    @staticmethod
    def done() -> bytes:
        return DONE

    def event(self, event: OrchEvent) -> bytes:
        """An orchestration event the stock SDKs still parse: a chunk with no choices and
        a ``tako_event`` field."""
        return self._chunk([], tako_event={"kind": event.kind, **event.data})

    @staticmethod
    def error(exc: TakoError) -> bytes:
        return frame(exc.to_body())
