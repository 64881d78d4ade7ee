"""``mistral``: Mistral's chat completions API (``POST {base_url}/chat/completions``,
default base URL ``https://api.mistral.ai/v1``).

The wire format is OpenAI-like; the differences tako translates:

- ``tool_choice: "required"`` is sent as ``"any"``; ``auto``, ``none`` and a specific
  function pass unchanged;
- ``max_completion_tokens`` is sent as ``max_tokens``, ``seed`` as ``random_seed``;
- Mistral accepts tool call ids of exactly nine letters and digits. Ids in the history
  that do not fit (an OpenAI ``call_...`` id after a fallback, say) are replaced by a
  stable nine-character digest, the same in the assistant ``tool_calls`` and in the
  answering ``tool`` message. Ids in Mistral's answers are returned unchanged;
- ``stream_options`` and ``user`` are not part of Mistral's API and are not sent; a
  streamed answer's usage arrives in its last chunk anyway;
- ``response_format`` (``json_object`` and ``json_schema``), ``stop``, ``temperature``,
  ``top_p``, ``parallel_tool_calls``, penalties and images (data or http(s) URLs) pass
  through as they are;
- finish reason ``model_length`` becomes ``length``; ``error`` ends the stream with an
  error; answers whose content is a list of chunks (text and thinking) keep the text.

Options (``MistralOptions``):
- ``safe_prompt`` (bool): sent as Mistral's ``safe_prompt``.
- ``normalize_tool_call_ids`` (bool, default true): the id rewriting above.

The API key (``api_key`` / ``api_key_env``) is sent as a bearer token.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson

from tako.core.errors import TakoError, UpstreamTransient, upstream_error_for
from tako.core.protocols import EmbeddingRequest, Embeddings
from tako.core.specs import DeploymentSpec
from tako.core.types import ChatRequest, ChatResponse, Delta
from tako.providers import embedding_wire, openai_wire
from tako.providers.base import HttpProvider, StreamOutcome, iter_sse
from tako.providers.registry import AdapterOptions, register

MISTRAL_BASE_URL = "https://api.mistral.ai/v1"
NOT_SENT = ("stream_options", "user", "max_completion_tokens", "seed")
TOOL_CALL_ID = re.compile(r"^[A-Za-z0-9]{9}$")
FINISH_REASONS = {"model_length": "length"}


def mistral_tool_call_id(call_id: str) -> str:
    if TOOL_CALL_ID.match(call_id):
        return call_id
    return hashlib.sha256(call_id.encode()).hexdigest()[:9]


def request_body(req: ChatRequest, model: str, options: dict[str, Any], *,
                 stream: bool) -> dict[str, Any]:
    body = openai_wire.request_body(req, model, stream=stream)
    for name in NOT_SENT:
        body.pop(name, None)
    limit = req.output_limit()
    if limit is not None:
        body["max_tokens"] = limit
    if req.seed is not None:
        body["random_seed"] = req.seed
    if req.tool_choice == "required":
        body["tool_choice"] = "any"
    if "safe_prompt" in options:
        body["safe_prompt"] = bool(options["safe_prompt"])
    if options.get("normalize_tool_call_ids", True):
        for message in body["messages"]:
            for call in message.get("tool_calls") or ():
                call["id"] = mistral_tool_call_id(call["id"])
            if message.get("tool_call_id"):
                message["tool_call_id"] = mistral_tool_call_id(message["tool_call_id"])
    return body


def text_of(content: Any) -> Any:
    """Mistral may send content as a list of chunks; keep the text ones joined."""
    if isinstance(content, list):
        return "".join(c.get("text") or "" for c in content
                       if isinstance(c, dict) and c.get("type") == "text")
    return content


def finish_reason(value: str) -> str:
    return FINISH_REASONS.get(value, value)


def choice_delta(choice: dict[str, Any], tool_indexes: dict[str, int]) -> Delta | None:
    """One streamed choice as a Delta: content chunks kept as their text, tool calls that
    come without an index numbered in order of arrival."""
    delta = choice.get("delta") or {}
    delta["content"] = text_of(delta.get("content"))
    for call in delta.get("tool_calls") or ():
        if "index" not in call:
            key = call.get("id") or str(len(tool_indexes))
            call["index"] = tool_indexes.setdefault(key, len(tool_indexes))
    return openai_wire.delta_from_chunk(choice)


class MistralOptions(AdapterOptions):
    safe_prompt: bool | None = None
    normalize_tool_call_ids: bool = True


class MistralProvider(HttpProvider):
    def __init__(self, spec: DeploymentSpec) -> None:
        super().__init__(spec)
        base = (spec.base_url or MISTRAL_BASE_URL).rstrip("/")
        self.url = base + "/chat/completions"
        self.embeddings_url = base + "/embeddings"
        self.options = dict(spec.options)
        self.headers = {"accept": "application/json"}
        key = spec.secret()
        if key:
            self.headers["authorization"] = f"Bearer {key}"

    async def chat(self, req: ChatRequest) -> ChatResponse:
        body = request_body(req, self.model, self.options, stream=False)
        answer = await self.send_json(self.url, body, self.headers)
        for choice in answer.get("choices") or ():
            message = choice.get("message") or {}
            message["content"] = text_of(message.get("content"))
        response = openai_wire.parse_response(answer, self.id, self.cost)
        response.finish_reason = finish_reason(response.finish_reason)
        if response.finish_reason == "error":
            raise UpstreamTransient(
                f"provider {self.id} ended the answer with finish_reason error",
                details={"provider": self.id, "body": answer},
            )
        return response

    async def deltas(self, req: ChatRequest, outcome: StreamOutcome) -> AsyncIterator[Delta]:
        body = request_body(req, self.model, self.options, stream=True)
        body["stream"] = True
        tool_indexes: dict[str, int] = {}
        done = False
        async with self.open_stream(self.url, body, {**self.headers,
                                                     "accept": "text/event-stream"}) as chunks:
            async for _event, data in iter_sse(chunks):
                if data == b"[DONE]":
                    done = True
                    break
                chunk = orjson.loads(data)
                if chunk.get("object") == "error" or ("error" in chunk
                                                      and not chunk.get("choices")):
                    raise stream_error(self.id, chunk)
                if chunk.get("usage"):
                    outcome.usage = openai_wire.parse_usage(chunk["usage"], self.cost)
                for choice in chunk.get("choices") or ():
                    delta = choice_delta(choice, tool_indexes)
                    if delta is not None:
                        yield delta
                    if choice.get("finish_reason"):
                        outcome.finish_reason = finish_reason(choice["finish_reason"])
        if outcome.finish_reason == "error" or not done:
            raise UpstreamTransient(
                f"provider {self.id} stream ended "
                + ("with finish_reason error" if done else "before [DONE]"),
                details={"provider": self.id},
            )

    async def embed(self, req: EmbeddingRequest) -> Embeddings:
        """``POST {base_url}/embeddings``: OpenAI's format, ``dimensions`` sent as
        ``output_dimension``; ``user`` is not part of Mistral's API."""
        body = embedding_wire.openai_body(req, self.model, dimensions_field="output_dimension")
        body.pop("user", None)
        answer = await self.send_json(self.embeddings_url, body, self.headers)
        return embedding_wire.parse_openai(req, answer, self.id, self.cost)


def stream_error(provider_id: str, chunk: dict[str, Any]) -> TakoError:
    """An error sent inside the stream, as ``{"error": {...}}`` or Mistral's flat
    ``{"object": "error", "message", "type", "code"}``."""
    err = chunk["error"] if isinstance(chunk.get("error"), dict) else chunk
    kind = str(err.get("type") or "")
    status = 500
    for value in (err.get("status"), err.get("code")):
        if str(value or "").isdigit() and 100 <= int(str(value)) <= 599:
            status = int(str(value))
            break
    else:
        if "rate_limit" in kind:
            status = 429
        elif "overloaded" in kind or "unavailable" in kind:
            status = 503
    return upstream_error_for(provider_id, status, chunk, code=kind or None)



TELEMETRY_SYSTEM = "mistral_ai"  # gen_ai.system
# the embedded default serves this vendor when these are all set
EMBEDDED_ENV = ("MISTRAL_API_KEY",)


def embedded_deployments(environ: Mapping[str, str]) -> list[dict[str, Any]]:
    """mistral-small when MISTRAL_API_KEY is set."""
    if not all(environ.get(key) for key in EMBEDDED_ENV):
        return []
    return [{"name": "mistral-small", "provider": "mistral", "model": "mistral-small-latest",
             "api_key_env": "MISTRAL_API_KEY"}]

@register("mistral", MistralOptions)
def _mistral(spec: DeploymentSpec) -> MistralProvider:
    return MistralProvider(spec)
