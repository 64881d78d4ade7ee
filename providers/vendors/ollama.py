"""``ollama``: a local or self-hosted Ollama server on its native ``POST /api/chat``.

The OpenAI request is translated to Ollama's chat format and back:

- messages: system/developer -> ``system``; user and assistant text; an assistant's
  ``tool_calls`` become Ollama tool calls with the arguments as a JSON object; a tool
  result becomes ``role: "tool"`` with ``tool_name`` taken from the call it answers;
- images: Ollama takes raw base64 in ``message.images``; data URLs are decoded, http(s)
  URLs are fetched by tako through the SSRF guard (``providers.image_fetch``);
- sampling: temperature, top_p, seed, stop, and max tokens as ``num_predict`` go in
  ``options``; ``response_format`` json_object -> ``format: "json"``, json_schema -> the
  schema itself as ``format``;
- answers: text and tool calls (arguments serialised to a JSON string, ids derived from the
  call so they are stable for the same answer); finish ``length`` when Ollama says so,
  ``tool_calls`` when it called tools, else ``stop``; usage from ``prompt_eval_count`` and
  ``eval_count``, priced from the price table (local models default to 0).

Streaming reads Ollama's NDJSON lines; an ``{"error": ...}`` line or a dropped connection
after output started ends the stream with one ChunkError and the End; before any output it
raises, so retries and fallbacks can act.

Deployment options (``OllamaOptions``):
  ``keep_alive``       how long Ollama keeps the model loaded (``"5m"``, ``0``, ``-1``).
  ``model_options``    extra Ollama ``options`` (``num_ctx``, ``repeat_penalty``...);
                       request values win over these.
  ``think``            passed as Ollama's ``think`` flag for reasoning models.
  ``image_fetch``      the image fetch policy (see ``providers.image_fetch.FetchPolicy``),
                       e.g. ``{"allowlist": ["*.example.com"], "max_bytes": 5000000}``.
``base_url`` defaults to ``http://127.0.0.1:11434``; ``api_key`` (if set) is sent as a
bearer token for servers behind an authenticating proxy.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import AsyncIterator, Mapping
from typing import Annotated, Any

import orjson
from pydantic import Field

from tako.core.errors import InvalidRequest, UpstreamTransient, upstream_error_for
from tako.core.protocols import EmbeddingRequest, Embeddings
from tako.core.specs import DeploymentSpec
from tako.core.types import (
    ChatRequest,
    ChatResponse,
    ContentPart,
    Delta,
    FunctionCall,
    Message,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from tako.providers import embedding_wire
from tako.providers.base import (
    HttpProvider,
    StreamOutcome,
    iter_lines,
    new_id,
    now,
    parse_data_url,
)
from tako.providers.image_fetch import FetchPolicy, ImageFetcher
from tako.providers.registry import AdapterOptions, either, register

OLLAMA_BASE_URL = "http://127.0.0.1:11434"


class OllamaOptions(AdapterOptions):
    keep_alive: Annotated[str | float | None,
                          either("a duration (\"5m\") or a number of seconds")] = None
    model_options: dict[str, Any] = Field(default_factory=dict)
    think: Annotated[bool | str | None, either("true, false or a level (\"high\")")] = None
    image_fetch: FetchPolicy | None = None


class OllamaProvider(HttpProvider):
    def __init__(self, spec: DeploymentSpec) -> None:
        super().__init__(spec)
        options = OllamaOptions.model_validate(spec.options)
        base = (spec.base_url or OLLAMA_BASE_URL).rstrip("/")
        self.url = base + "/api/chat"
        self.embed_url = base + "/api/embed"
        self.headers: dict[str, str] = {}
        key = spec.secret()
        if key:
            self.headers["authorization"] = f"Bearer {key}"
        self.image_policy = options.image_fetch or FetchPolicy()
        self.keep_alive = spec.options.get("keep_alive")
        self.think = options.think
        self.model_options = dict(options.model_options)

    async def chat(self, req: ChatRequest) -> ChatResponse:
        body = await self.request_body(req, stream=False)
        answer = await self.send_json(self.url, body, self.headers)
        if not isinstance(answer, dict):
            raise UpstreamTransient(
                f"provider {self.id} answered with a body that is not an object",
                details={"provider": self.id, "body": answer},
            )
        if "error" in answer:
            raise upstream_error_for(self.id, 500, answer)
        message = answer.get("message") or {}
        raw_calls = message.get("tool_calls") or ()
        tool_calls = [_tool_call(c, i, answer) for i, c in enumerate(raw_calls)] or None
        return ChatResponse(
            id=new_id(),
            model=answer.get("model") or self.model,
            created=now(),
            content=message.get("content") or ("" if tool_calls is None else None),
            tool_calls=tool_calls,
            finish_reason=_finish_reason(answer.get("done_reason"), bool(tool_calls)),
            usage=self._usage(answer),
            provider_id=self.id,
        )

    async def deltas(self, req: ChatRequest, outcome: StreamOutcome) -> AsyncIterator[Delta]:
        body = await self.request_body(req, stream=True)
        reader = _StreamReader(self.id)
        async with self.open_stream(self.url, body, self.headers) as chunks:
            async for raw in iter_lines(chunks):
                if not raw.strip():
                    continue
                line = _decode_line(raw.strip(), self.id)
                delta = reader.delta(line)
                if delta is not None:
                    yield delta
                if reader.done:
                    outcome.finish_reason = reader.finish_reason
                    outcome.usage = self._usage(line)
                    break
        if not reader.done:
            raise UpstreamTransient(f"provider {self.id} closed the stream before it was done",
                                    details={"provider": self.id},
                                    code="upstream_stream_incomplete")

    async def embed(self, req: EmbeddingRequest) -> Embeddings:
        """``POST /api/embed``: ``input`` a list of texts, ``dimensions`` passed on; the
        token count is ``prompt_eval_count``."""
        body: dict[str, Any] = {"model": self.model, "input": list(req.inputs)}
        if req.dimensions is not None:
            body["dimensions"] = req.dimensions
        if self.keep_alive is not None:
            body["keep_alive"] = self.keep_alive
        answer = await self.send_json(self.embed_url, body, self.headers)
        found = answer.get("embeddings") if isinstance(answer, dict) else None
        if not isinstance(found, list):
            raise embedding_wire.malformed(self.id, "an answer without embeddings")
        vectors = [embedding_wire.vector(self.id, v) for v in found]
        embedding_wire.check_count(self.id, vectors, req.inputs)
        return Embeddings(vectors, embedding_wire.usage_of(
            req, answer.get("prompt_eval_count"), self.cost))

    def _usage(self, answer: dict[str, Any]) -> Usage:
        prompt = int(answer.get("prompt_eval_count") or 0)
        completion = int(answer.get("eval_count") or 0)
        return Usage(
            prompt_tokens=prompt,
            completion_tokens=completion,
            cost_usd=self.cost(prompt, completion),
        )

    async def request_body(self, req: ChatRequest, *, stream: bool) -> dict[str, Any]:
        """Ollama's /api/chat body for ``req``; images are fetched and encoded here."""
        with ImageFetcher(self.image_policy) as images:
            messages = await self._messages(req.messages, images)
        body: dict[str, Any] = {"model": self.model, "messages": messages, "stream": stream}
        tools_off = req.tool_choice == "none"
        if req.tools and not tools_off:
            body["tools"] = [
                {"type": "function", "function": tool.function.model_dump(exclude_none=True)}
                for tool in req.tools
            ]
        options = dict(self.model_options)
        if req.temperature is not None:
            options["temperature"] = req.temperature
        if req.top_p is not None:
            options["top_p"] = req.top_p
        if req.seed is not None:
            options["seed"] = req.seed
        if req.output_limit() is not None:
            options["num_predict"] = req.output_limit()
        if req.stop_list():
            options["stop"] = req.stop_list()
        if options:
            body["options"] = options
        response_format = _format(req.response_format)
        if response_format is not None:
            body["format"] = response_format
        if self.keep_alive is not None:
            body["keep_alive"] = self.keep_alive
        if self.think is not None:
            body["think"] = self.think
        return body

    async def _messages(self, messages: list[Message],
                        images: ImageFetcher) -> list[dict[str, Any]]:
        call_names = {
            call.id: call.function.name
            for message in messages
            for call in (message.tool_calls or ())
        }
        return list(
            await asyncio.gather(*(self._message(m, call_names, images) for m in messages))
        )

    async def _message(self, message: Message, call_names: dict[str, str],
                       images: ImageFetcher) -> dict[str, Any]:
        role = message.role
        if role == "developer":
            role = "system"
        out: dict[str, Any] = {"role": role, "content": message.text()}
        if role in ("tool", "function"):
            out["role"] = "tool"
            name = call_names.get(message.tool_call_id or "") or message.name
            if name:
                out["tool_name"] = name
            return out
        if isinstance(message.content, list):
            parts = [
                part for part in message.content if part.type == "image_url" and part.image_url
            ]
            if parts:
                out["images"] = list(
                    await asyncio.gather(*(self._image_base64(part, images) for part in parts))
                )
        if message.tool_calls:
            out["tool_calls"] = [
                {"function": {"name": c.function.name, "arguments": _arguments(c)}}
                for c in message.tool_calls
            ]
        return out

    async def _image_base64(self, part: ContentPart, images: ImageFetcher) -> str:
        assert part.image_url is not None
        url = part.image_url.url
        if url.startswith("data:"):
            mime, data = parse_data_url(url)
            if not mime.startswith("image/"):
                raise InvalidRequest(
                    f"image_url data URL has type {mime!r}, not an image", param="messages"
                )
        elif url.startswith(("http://", "https://")):
            _mime, data = await images.fetch(url)
        else:
            raise InvalidRequest(
                "image_url must be an http(s) URL or a data URL", param="messages"
            )
        return base64.b64encode(data).decode("ascii")


class _StreamReader:
    """Turns Ollama stream lines into Deltas, numbering tool calls across the stream."""

    def __init__(self, provider_id: str) -> None:
        self.provider_id = provider_id
        self.done = False
        self.tool_calls = 0
        self.done_reason: Any = None

    def delta(self, line: dict[str, Any]) -> Delta | None:
        if "error" in line:
            raise upstream_error_for(self.provider_id, _error_status(line), line)
        message = line.get("message") or {}
        calls = []
        for call in message.get("tool_calls") or ():
            made = _tool_call(call, self.tool_calls, line)
            calls.append(
                ToolCallDelta(
                    index=self.tool_calls,
                    id=made.id,
                    name=made.function.name,
                    arguments=made.function.arguments,
                )
            )
            self.tool_calls += 1
        if line.get("done"):
            self.done = True
            self.done_reason = line.get("done_reason")
        content = message.get("content") or None
        if content is None and not calls:
            return None
        return Delta(content=content, tool_calls=calls or None)

    @property
    def finish_reason(self) -> str:
        return _finish_reason(self.done_reason, self.tool_calls > 0)


def _arguments(call: ToolCall) -> dict[str, Any]:
    text = call.function.arguments or "{}"
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(
            f"tool call {call.id!r} has arguments that are not JSON", param="messages"
        ) from exc
    if not isinstance(value, dict):
        raise InvalidRequest(
            f"tool call {call.id!r} arguments must be a JSON object", param="messages"
        )
    return value


def _tool_call(call: dict[str, Any], index: int, answer: dict[str, Any]) -> ToolCall:
    function = call.get("function") or {}
    name = str(function.get("name") or "")
    raw = function.get("arguments")
    if isinstance(raw, str):
        arguments = raw
    else:
        arguments = orjson.dumps(raw if raw is not None else {}).decode()
    call_id = call.get("id")
    if not call_id:
        seed = f"{answer.get('created_at', '')}|{index}|{name}|{arguments}"
        call_id = "call_" + hashlib.sha256(seed.encode()).hexdigest()[:24]
    return ToolCall(id=str(call_id), function=FunctionCall(name=name, arguments=arguments))


def _finish_reason(done_reason: Any, called_tools: bool) -> str:
    if called_tools:
        return "tool_calls"
    if done_reason == "length":
        return "length"
    return "stop"


def _format(response_format: dict[str, Any] | None) -> Any:
    if not response_format:
        return None
    kind = response_format.get("type")
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        return schema if isinstance(schema, dict) else "json"
    return None


def _error_status(line: dict[str, Any]) -> int:
    status = line.get("status") or line.get("status_code")
    return int(status) if isinstance(status, int) and status >= 400 else 500


def _decode_line(line: bytes, provider_id: str) -> dict[str, Any]:
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise UpstreamTransient(
            f"provider {provider_id} sent a stream line that is not JSON",
            details={"provider": provider_id, "line": line[:500].decode("utf-8", "replace")},
        ) from exc
    if not isinstance(value, dict):
        raise UpstreamTransient(
            f"provider {provider_id} sent a stream line that is not an object",
            details={"provider": provider_id},
        )
    return value



TELEMETRY_SYSTEM = "ollama"  # gen_ai.system
# the embedded default serves this vendor when these are all set
EMBEDDED_ENV = ("OLLAMA_HOST",)


def embedded_deployments(environ: Mapping[str, str]) -> list[dict[str, Any]]:
    """local-llama when OLLAMA_HOST is set (OLLAMA_MODEL, default llama3.2)."""
    if not all(environ.get(key) for key in EMBEDDED_ENV):
        return []
    return [{"name": "local-llama", "provider": "ollama",
             "model": environ.get("OLLAMA_MODEL", "llama3.2"),
             "base_url": environ["OLLAMA_HOST"]}]

@register("ollama", OllamaOptions)
def _ollama(spec: DeploymentSpec) -> OllamaProvider:
    return OllamaProvider(spec)
