"""A loopback stand-in for Mistral's chat completions API (``POST /v1/chat/completions``).

It answers in Mistral's wire format: ``chat.completion`` bodies, SSE streams of
``chat.completion.chunk`` objects whose last chunk carries ``usage`` and then
``data: [DONE]``, and Mistral's flat error bodies (``{"object": "error", "message",
"type", "param", "code"}``). Like the real API it rejects unknown top-level fields (422)
and tool call ids that are not nine letters and digits (400), and checks the bearer key.

Script it through the controller from ``make_app``: ``push`` replies (served in order;
with an empty queue it answers ``echo: <last user text>``), read ``requests``.
"""

from __future__ import annotations

import re
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
    sse_data,
    word_pieces,
)
from tests.fakes.embeddings import openai_answer as embedding_answer
from tests.fakes.embeddings import texts_of

MODEL = "mistral-large-latest"
KNOWN_FIELDS = {
    "model", "messages", "temperature", "top_p", "max_tokens", "stream", "stop",
    "random_seed", "response_format", "tools", "tool_choice", "presence_penalty",
    "frequency_penalty", "n", "prediction", "parallel_tool_calls", "prompt_mode",
    "safe_prompt", "metadata",
}
TOOL_CALL_ID = re.compile(r"^[a-zA-Z0-9]{9}$")


@dataclass
class Reply(ScriptedReply):
    chunks: list[dict[str, Any] | str] | None = None  # SSE data payloads; str sent raw

    def frames(self) -> list[bytes] | None:
        return None if self.chunks is None else [sse_data(c) for c in self.chunks]


class FakeMistral(ScriptedReplies[Received, Reply]):
    def __init__(self, api_key: str | None) -> None:
        super().__init__()
        self.api_key = api_key


# ---- builders for Mistral bodies and streams ----


def usage(prompt: int = 16, completion: int = 8) -> dict[str, Any]:
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def completion(content: Any = "Hello!", *, tool_calls: list[tuple[str, str, str]] | None = None,
               finish_reason: str | None = None, usage_: dict[str, Any] | None = None,
               model: str = MODEL) -> dict[str, Any]:
    calls = [
        {"id": call_id, "type": "function", "function": {"name": name, "arguments": args},
         "index": i}
        for i, (call_id, name, args) in enumerate(tool_calls or ())
    ]
    return {
        "id": "cmpl-e5cc70bb28c444948073e77776eb30ef",
        "object": "chat.completion",
        "model": model,
        "created": 1732548590,
        "usage": usage_ or usage(),
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content, "tool_calls": calls or None,
                        "prefix": False},
            "finish_reason": finish_reason or ("tool_calls" if calls else "stop"),
        }],
    }


def error_body(text: Any, kind: str, code: str | None = None) -> dict[str, Any]:
    return {"object": "error", "message": text, "type": kind, "param": None, "code": code}


def error(status: int, text: Any, kind: str, code: str | None = None,
          headers: dict[str, str] | None = None) -> Reply:
    return Reply(status=status, body=error_body(text, kind, code), headers=headers or {})


def chunk(delta: dict[str, Any], finish_reason: str | None = None,
          usage_: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "cmpl-0b1c2d3e4f", "object": "chat.completion.chunk", "created": 1732548590,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }
    if usage_ is not None:
        body["usage"] = usage_
    return body


def text_stream(pieces: list[str], *, finish_reason: str = "stop",
                usage_: dict[str, Any] | None = None) -> list[dict[str, Any] | str]:
    chunks: list[dict[str, Any] | str] = [chunk({"role": "assistant", "content": ""})]
    chunks += [chunk({"content": p}) for p in pieces]
    chunks.append(chunk({"content": ""}, finish_reason, usage_ or usage()))
    chunks.append("[DONE]")
    return chunks


def tool_stream(calls: list[tuple[str, str, str]],
                usage_: dict[str, Any] | None = None) -> list[dict[str, Any] | str]:
    """Mistral sends each tool call whole, in one delta."""
    tool_calls = [{"id": cid, "function": {"name": name, "arguments": args}, "index": i}
                  for i, (cid, name, args) in enumerate(calls)]
    return [
        chunk({"role": "assistant", "content": ""}),
        chunk({"tool_calls": tool_calls}),
        chunk({"content": ""}, "tool_calls", usage_ or usage()),
        "[DONE]",
    ]


# ---- the app ----


def _default_reply(body: dict[str, Any]) -> Reply:
    text = f"echo: {last_user_text(body)}"
    if body.get("stream"):
        return Reply(chunks=text_stream(word_pieces(text)))
    return Reply(body=completion(text))


def _validation_error(body: dict[str, Any]) -> Reply | None:
    extra = sorted(set(body) - KNOWN_FIELDS)
    if extra:
        detail = [{"type": "extra_forbidden", "loc": ["body", name],
                   "msg": "Extra inputs are not permitted"} for name in extra]
        return error(422, {"detail": detail}, "invalid_request_error")
    for msg in body.get("messages") or ():
        ids = [c.get("id", "") for c in msg.get("tool_calls") or ()]
        if msg.get("tool_call_id") is not None:
            ids.append(msg["tool_call_id"])
        for call_id in ids:
            if not TOOL_CALL_ID.match(call_id):
                return error(400, f"Tool call id was {call_id} but must be a-z, A-Z, 0-9, "
                             "with a length of 9.", "invalid_request_message_error", "3280")
    return None


def make_app(api_key: str | None = "mistral-test-key") -> tuple[Starlette, FakeMistral]:
    """The ASGI app and its controller. With ``api_key`` set, other keys get a 401."""
    fake = FakeMistral(api_key)

    async def completions(request: Request) -> Response:
        body = orjson.loads(await request.body())
        fake.requests.append(Received(request.url.path, dict(request.headers), body))
        if fake.api_key and request.headers.get("authorization") != f"Bearer {fake.api_key}":
            return Response(orjson.dumps({"message": "Unauthorized",
                                          "request_id": "a1b2c3d4e5f6"}),
                            status_code=401, media_type="application/json")
        invalid = _validation_error(body)
        if invalid is not None:
            return respond(invalid)
        reply = fake.replies.popleft() if fake.replies else _default_reply(body)
        return respond(reply)

    async def embeddings(request: Request) -> Response:
        """OpenAI's embeddings format, ``output_dimension`` for the length; a queued Reply
        (an error) is served first."""
        body = orjson.loads(await request.body())
        fake.requests.append(Received(request.url.path, dict(request.headers), body))
        if fake.api_key and request.headers.get("authorization") != f"Bearer {fake.api_key}":
            return Response(orjson.dumps({"message": "Unauthorized",
                                          "request_id": "a1b2c3d4e5f6"}),
                            status_code=401, media_type="application/json")
        if fake.replies:
            return respond(fake.replies.popleft())
        return respond(Reply(body=embedding_answer(body["model"], texts_of(body["input"]),
                                                   body.get("output_dimension"))))

    app = Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"]),
                            Route("/v1/embeddings", embeddings, methods=["POST"])])
    return app, fake
