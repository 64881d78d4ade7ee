"""Responses streaming events (the spec's ResponseStreamEvent) from tako's stream items.

``response.created`` and ``response.in_progress`` open the stream; text becomes a message
item (``output_item.added``, ``content_part.added``, ``output_text.delta``...), each tool
call a ``function_call`` item (``function_call_arguments.delta``...); ``End`` closes every
item (``output_text.done``, ``content_part.done``, ``function_call_arguments.done``,
``output_item.done``) and sends ``response.completed`` (``response.incomplete`` when cut at
the output limit). A failure after the first byte sends ``error`` then ``response.failed``.
Every event carries a ``sequence_number`` counting up from 0. Orchestration events (opt-in)
are ``tako.event`` events, which the SDKs pass over.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from tako.app.ingress.response_items import call_item, finished, message_item, new_id
from tako.core.errors import TakoError
from tako.core.types import Delta, End, OrchEvent, ToolCallDelta

if TYPE_CHECKING:
    from tako.app.ingress.responses import ResponseState

#: codes a failed Response may carry (ResponseErrorCode); anything else is a server_error
FAILED_CODES = ("rate_limit_exceeded", "server_error")


class _Item:
    """An output item being streamed: a message (text) or a function call."""

    __slots__ = ("index", "id", "kind", "text", "call_id", "name")

    def __init__(self, index: int, item_id: str, kind: str, call_id: str = "",
                 name: str = "") -> None:
        self.index = index
        self.id = item_id
        self.kind = kind
        self.text = ""
        self.call_id = call_id
        self.name = name


class ResponseEventRenderer:
    """Items open as their first fragment arrives (one message item for all the text, one
    function_call item per tool call) and are closed, in output order, by ``End``: a
    vendor may interleave text and call fragments."""

    def __init__(self, skeleton: dict[str, Any], state: ResponseState) -> None:
        self.response = skeleton
        self.state = state
        self.seq = 0
        self.items: list[_Item] = []
        self.message: _Item | None = None
        self.calls: dict[int, _Item] = {}
        self.opened = False

    @property
    def started(self) -> bool:
        return self.opened

    def _event(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self.seq, **fields}
        self.seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"

    def _open(self) -> bytes:
        if self.opened:
            return b""
        self.opened = True
        return (self._event("response.created", response=self.response)
                + self._event("response.in_progress", response=self.response))

    # ---- items ----

    def _start_message(self) -> bytes:
        item = self.message = _Item(len(self.items), new_id("msg"), "message")
        self.items.append(item)
        added = {**message_item("", item.id, "in_progress"), "content": []}
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        return (self._event("response.output_item.added", output_index=item.index, item=added)
                + self._event("response.content_part.added", item_id=item.id,
                              output_index=item.index, content_index=0, part=part))

    def _start_call(self, call: ToolCallDelta) -> bytes:
        item = _Item(len(self.items), new_id("fc"), "function_call",
                     call.id or new_id("call"), call.name or "")
        self.calls[call.index] = item
        self.items.append(item)
        added = call_item(item.call_id, item.name, "", item.id, "in_progress")
        return self._event("response.output_item.added", output_index=item.index, item=added)

    @staticmethod
    def _done(item: _Item, status: str = "completed") -> dict[str, Any]:
        if item.kind == "message":
            return message_item(item.text, item.id, status)
        return call_item(item.call_id, item.name, item.text, item.id, status)

    def _close(self, item: _Item) -> bytes:
        done = self._done(item)
        if item.kind == "message":
            where = {"item_id": item.id, "output_index": item.index, "content_index": 0}
            return (self._event("response.output_text.done", **where, text=item.text,
                                logprobs=[])
                    + self._event("response.content_part.done", **where,
                                  part=done["content"][0])
                    + self._event("response.output_item.done", output_index=item.index,
                                  item=done))
        return (self._event("response.function_call_arguments.done", item_id=item.id,
                            output_index=item.index, name=item.name, arguments=item.text)
                + self._event("response.output_item.done", output_index=item.index, item=done))

    def _text(self, text: str) -> bytes:
        out = self._start_message() if self.message is None else b""
        item = self.message
        assert item is not None
        item.text += text
        return out + self._event("response.output_text.delta", item_id=item.id,
                                 output_index=item.index, content_index=0, delta=text,
                                 logprobs=[])

    def _call(self, call: ToolCallDelta) -> bytes:
        out = b""
        if call.index not in self.calls:
            out += self._start_call(call)
        item = self.calls[call.index]
        if call.name and not item.name:
            item.name = call.name
        if call.arguments:
            item.text += call.arguments
            out += self._event("response.function_call_arguments.delta", item_id=item.id,
                               output_index=item.index, delta=call.arguments)
        return out

    # ---- FrameRenderer ----

    def delta(self, delta: Delta) -> bytes:
        out = self._open()
        if delta.content:
            out += self._text(delta.content)
        for call in delta.tool_calls or ():
            out += self._call(call)
        return out

    def event(self, event: OrchEvent) -> bytes | None:
        return self._open() + self._event("tako.event",
                                          event={"kind": event.kind, **event.data})

    def end(self, end: End) -> bytes:
        out = self._open() + b"".join(self._close(item) for item in self.items)
        output = [self._done(item) for item in self.items]
        final = finished({**self.response, "output": output}, end.finish_reason, end.usage)
        self.state.final = final
        kind = "response.completed" if final["status"] == "completed" else "response.incomplete"
        return out + self._event(kind, response=final)

    def error(self, error: TakoError) -> bytes:
        out = self._open()
        code = error.code if error.code in FAILED_CODES else "server_error"
        message = str(error.message)[:1000]
        failed = {**self.response, "status": "failed",
                  "output": [self._done(item, "incomplete") for item in self.items],
                  "error": {"code": code, "message": message}}
        return (out + self._event("error", code=error.code, message=message, param=error.param)
                + self._event("response.failed", response=failed))

    @staticmethod
    def done() -> bytes:
        return b""
