"""A loopback stand-in for Azure OpenAI chat completions
(``POST /openai/deployments/{deployment}/chat/completions?api-version=...``).

It answers as Azure does: OpenAI ``chat.completion`` bodies with Azure's
``prompt_filter_results`` / ``content_filter_results`` annotations, SSE streams that open
with a prompt-filter chunk (empty ``choices``), end with a usage chunk when
``stream_options.include_usage`` is set and then ``data: [DONE]``, and Azure error bodies
(``{"error": {"code", "message", ...}}``). It checks the ``api-key`` header or an
``Authorization: Bearer`` token, the ``api-version`` query parameter and the deployment
name.

Script it through the controller from ``make_app``: ``push`` replies (served in order;
with an empty queue it answers ``echo: <last user text>``), read ``requests``.
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
    ScriptedReplies,
    ScriptedReply,
    last_user_text,
    respond,
    sse_data,
    word_pieces,
)
from tests.fakes.embeddings import openai_answer as embedding_answer
from tests.fakes.embeddings import texts_of

MODEL = "gpt-4o-2024-08-06"
SAFE = {name: {"filtered": False, "severity": "safe"}
        for name in ("hate", "self_harm", "sexual", "violence")}


@dataclass
class Reply(ScriptedReply):
    chunks: list[dict[str, Any] | str] | None = None  # SSE data payloads; str sent raw

    def frames(self) -> list[bytes] | None:
        return None if self.chunks is None else [sse_data(c) for c in self.chunks]


@dataclass
class Received:
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: dict[str, Any]


class FakeAzure(ScriptedReplies[Received, Reply]):
    def __init__(self, deployments: set[str], api_key: str | None,
                 bearer_token: str | None) -> None:
        super().__init__()
        self.deployments = deployments
        self.api_key = api_key
        self.bearer_token = bearer_token


# ---- builders for Azure bodies and streams ----


def usage(prompt: int = 19, completion: int = 10, cached: int = 0) -> dict[str, Any]:
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0}}


def completion(content: str | None = "Hello!", *,
               tool_calls: list[tuple[str, str, str]] | None = None,
               finish_reason: str | None = None, usage_: dict[str, Any] | None = None
               ) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if tool_calls:
        message["tool_calls"] = [
            {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}
            for cid, name, args in tool_calls
        ]
    return {
        "id": "chatcmpl-AzR3kq0XQ2bXxVDXyMZqeKpK3Vxy1",
        "object": "chat.completion",
        "created": 1732548590,
        "model": MODEL,
        "system_fingerprint": "fp_04751d0b65",
        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": SAFE}],
        "choices": [{
            "index": 0, "logprobs": None, "message": message,
            "finish_reason": finish_reason or ("tool_calls" if tool_calls else "stop"),
            "content_filter_results": SAFE,
        }],
        "usage": usage_ or usage(),
    }


def error_body(code: str, text: str, **more: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": text, **more}}


def error(status: int, code: str, text: str, headers: dict[str, str] | None = None,
          **more: Any) -> Reply:
    return Reply(status=status, body=error_body(code, text, **more), headers=headers or {})


def content_filter_error() -> Reply:
    return Reply(status=400, body=error_body(
        "content_filter",
        "The response was filtered due to the prompt triggering Azure OpenAI's content "
        "management policy. Please modify your prompt and retry.",
        param="prompt", status=400,
        innererror={"code": "ResponsibleAIPolicyViolation",
                    "content_filter_result": {**SAFE, "violence": {"filtered": True,
                                                                   "severity": "high"}}},
    ))


def prompt_filter_chunk() -> dict[str, Any]:
    return {"choices": [], "created": 0, "id": "", "model": "", "object": "",
            "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": SAFE}]}


def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-AzR3kq0XQ2bXxVDXyMZqeKpK3Vxy1", "object": "chat.completion.chunk",
        "created": 1732548590, "model": MODEL, "system_fingerprint": "fp_04751d0b65",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason,
                     "logprobs": None,
                     "content_filter_results": {} if not delta.get("content") else SAFE}],
    }


def usage_chunk(usage_: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"id": "chatcmpl-AzR3kq0XQ2bXxVDXyMZqeKpK3Vxy1", "object": "chat.completion.chunk",
            "created": 1732548590, "model": MODEL, "choices": [], "usage": usage_ or usage()}


def text_stream(pieces: list[str], *, finish_reason: str = "stop",
                usage_: dict[str, Any] | None = None) -> list[dict[str, Any] | str]:
    return [
        prompt_filter_chunk(),
        chunk({"role": "assistant", "content": "", "refusal": None}),
        *[chunk({"content": p}) for p in pieces],
        chunk({}, finish_reason),
        usage_chunk(usage_),
        "[DONE]",
    ]


def tool_stream(calls: list[tuple[str, str, list[str]]]) -> list[dict[str, Any] | str]:
    """Tool calls as OpenAI streams them: id and name first, then argument fragments."""
    chunks: list[dict[str, Any] | str] = [
        prompt_filter_chunk(), chunk({"role": "assistant", "content": None})]
    for index, (cid, name, fragments) in enumerate(calls):
        chunks.append(chunk({"tool_calls": [{"index": index, "id": cid, "type": "function",
                                             "function": {"name": name, "arguments": ""}}]}))
        chunks += [chunk({"tool_calls": [{"index": index, "function": {"arguments": f}}]})
                   for f in fragments]
    chunks += [chunk({}, "tool_calls"), usage_chunk(), "[DONE]"]
    return chunks


# ---- the app ----


def _default_reply(body: dict[str, Any]) -> Reply:
    text = f"echo: {last_user_text(body)}"
    if body.get("stream"):
        chunks = text_stream(word_pieces(text))
        if not (body.get("stream_options") or {}).get("include_usage"):
            chunks = [c for c in chunks if not (isinstance(c, dict) and "usage" in c)]
        return Reply(chunks=chunks)
    return Reply(body=completion(text))


def _authorised(fake: FakeAzure, request: Request) -> bool:
    if fake.api_key is None and fake.bearer_token is None:
        return True
    if fake.api_key and request.headers.get("api-key") == fake.api_key:
        return True
    return bool(fake.bearer_token) and (
        request.headers.get("authorization") == f"Bearer {fake.bearer_token}")


def make_app(deployments: set[str] | None = None, api_key: str | None = "azure-test-key",
             bearer_token: str | None = "entra-test-token") -> tuple[Starlette, FakeAzure]:
    """The ASGI app and its controller: ``deployments`` exist (default ``{"gpt-4o"}``);
    requests must carry ``api_key`` as ``api-key`` or ``bearer_token`` as a bearer token."""
    fake = FakeAzure(deployments or {"gpt-4o"}, api_key, bearer_token)

    async def received(request: Request) -> tuple[dict[str, Any], Response | None]:
        """The body, and the refusal an unauthorised or misaddressed request gets."""
        body = orjson.loads(await request.body())
        fake.requests.append(Received(request.url.path, dict(request.query_params),
                                      dict(request.headers), body))
        if not _authorised(fake, request):
            return body, respond(error(
                401, "401", "Access denied due to invalid subscription key or wrong API "
                "endpoint. Make sure to provide a valid key for an active subscription and "
                "use a correct regional API endpoint for your resource."))
        if not request.query_params.get("api-version"):
            return body, respond(error(404, "404", "Resource not found"))
        if request.path_params["deployment"] not in fake.deployments:
            return body, respond(error(
                404, "DeploymentNotFound", "The API deployment for this resource does not "
                "exist. If you created the deployment within the last 5 minutes, please wait "
                "a moment and try again."))
        return body, None

    async def completions(request: Request) -> Response:
        body, refused = await received(request)
        if refused is not None:
            return refused
        reply = fake.replies.popleft() if fake.replies else _default_reply(body)
        return respond(reply)

    async def embeddings(request: Request) -> Response:
        """OpenAI's embeddings format; a queued Reply (an error) is served first."""
        body, refused = await received(request)
        if refused is not None:
            return refused
        if fake.replies:
            return respond(fake.replies.popleft())
        return respond(Reply(body=embedding_answer(
            request.path_params["deployment"], texts_of(body["input"]),
            body.get("dimensions"))))

    app = Starlette(routes=[
        Route("/openai/deployments/{deployment}/chat/completions", completions,
              methods=["POST"]),
        Route("/openai/deployments/{deployment}/embeddings", embeddings, methods=["POST"]),
    ])
    return app, fake
