"""``bedrock``: Amazon Bedrock's Converse and ConverseStream APIs, signed with SigV4.

``model`` is a Bedrock model id, inference profile id or ARN
(``anthropic.claude-3-haiku-20240307-v1:0``, ``us.amazon.nova-pro-v1:0``).

Options (``BedrockOptions``):

- ``region``: AWS region; else ``AWS_REGION`` / ``AWS_DEFAULT_REGION`` / the profile's region.
- ``endpoint_url``: overrides ``https://bedrock-runtime.{region}.amazonaws.com`` (VPC
  endpoints, proxies, the loopback fake in tests). ``base_url`` is read the same way.
- ``profile``: a named profile from the shared AWS files (environment keys are then ignored,
  as in the AWS CLI).
- ``credentials_file``: path of a shared credentials file instead of ``~/.aws/credentials``.
- ``default_max_tokens``: ``inferenceConfig.maxTokens`` when the request sets no limit.
- ``guardrail_identifier`` / ``guardrail_version``: apply a Bedrock guardrail.
- ``additional_model_request_fields``: a dict passed as ``additionalModelRequestFields``.
- ``image_fetch``: settings for fetching http(s) image URLs (``providers.image_fetch``
  ``FetchPolicy`` fields, e.g. an allowlist); Bedrock only accepts inline image bytes.

Credentials come from botocore's standard chain (environment, shared files, SSO, container
and instance roles). They are resolved once in a worker thread and refreshed there when
botocore says they are about to expire, so the event loop never blocks on them.

``temperature`` is capped at 1.0: Converse accepts 0..1, OpenAI clients may send up to 2.
``tool_choice: "none"`` sends no tools at all (Converse has no "none" mode); a JSON
``response_format`` is not expressible in Converse and is left to the prompt.

Claude models (a model id holding ``anthropic.claude``) take the Anthropic fields the
Messages ingress passes on: ``top_k`` and ``thinking`` go into
``additionalModelRequestFields``, an assistant message's earlier ``thinking_blocks`` go
back first as ``reasoningContent`` blocks, and a content part's (user or system) or
tool's ``cache_control`` becomes a ``cachePoint`` block after it. ``reasoningContent`` in an
answer comes back as Anthropic thinking blocks: the extension field ``thinking_blocks``,
or streamed as ``Delta.native`` events (as the ``anthropic`` adapter does).
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any
from urllib.parse import quote

import orjson
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, ReadOnlyCredentials, RefreshableCredentials
from botocore.exceptions import BotoCoreError
from botocore.session import Session
from pydantic import Field

from tako.core.errors import (
    ContextLengthExceeded,
    InvalidRequest,
    TakoError,
    UpstreamError,
    UpstreamTransient,
    upstream_error_for,
)
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
    Signer,
    StreamOutcome,
    decode_body,
    new_id,
    now,
    parse_data_url,
    retry_after_seconds,
)
from tako.providers.eventstream import EventMessage, EventStreamDecoder
from tako.providers.image_fetch import FetchPolicy, ImageFetcher
from tako.providers.registry import AdapterOptions, register

SERVICE = "bedrock"
EVENTSTREAM = "application/vnd.amazon.eventstream"
SIGV4_TIMESTAMP = "%Y%m%dT%H%M%SZ"

IMAGE_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg",
                 "image/gif": "gif", "image/webp": "webp"}

STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}


# ---------------------------------------------------------------- signing


def sign_request(
    credentials: Credentials | ReadOnlyCredentials,
    region: str,
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes,
    *,
    service: str = SERVICE,
    when: datetime | None = None,
) -> dict[str, str]:
    """SigV4-sign a request with botocore's signer; return the headers to send
    (the given ones plus ``X-Amz-Date``, ``Authorization`` and, for temporary
    credentials, ``X-Amz-Security-Token``). ``when`` pins the signing time."""
    signer = SigV4Auth(credentials, service, region)
    request = AWSRequest(method=method, url=url, data=body, headers=dict(headers))
    moment = when or datetime.now(UTC)
    # What SigV4Auth.add_auth does, with the signing time passed in rather than read
    # from the clock, so that published test vectors can pin it.
    request.context["timestamp"] = moment.strftime(SIGV4_TIMESTAMP)
    signer._modify_request_before_signing(request)
    canonical = signer.canonical_request(request)
    string_to_sign = signer.string_to_sign(request, canonical)
    signature = signer.signature(string_to_sign, request)
    signer._inject_signature_to_request(request, signature)
    return {str(k): str(v) for k, v in request.headers.items()}


class AwsCredentialSource:
    """The standard AWS credential chain, resolved off the event loop and cached."""

    def __init__(self, provider_id: str, region: str | None, profile: str | None,
                 credentials_file: str | None) -> None:
        self.provider_id = provider_id
        self._region = region
        self._profile = profile
        self._credentials_file = credentials_file
        self._credentials: Credentials | None = None
        self._lock = asyncio.Lock()

    def _resolve(self) -> tuple[Credentials, str]:
        session = Session(profile=self._profile) if self._profile else Session()
        if self._credentials_file:
            session.set_config_variable("credentials_file", self._credentials_file)
        try:
            credentials = session.get_credentials()
        except BotoCoreError as exc:
            raise UpstreamError(
                f"provider {self.provider_id}: AWS credentials failed: {exc}",
                details={"provider": self.provider_id}, code="upstream_auth_error") from exc
        if credentials is None:
            raise UpstreamError(
                f"provider {self.provider_id}: no AWS credentials found (environment, "
                "shared credentials file, SSO or instance role)",
                details={"provider": self.provider_id}, code="upstream_auth_error",
            )
        region = (self._region or os.environ.get("AWS_REGION")
                  or session.get_config_variable("region"))
        if not region:
            raise UpstreamError(
                f"provider {self.provider_id}: no AWS region (set options.region or AWS_REGION)",
                details={"provider": self.provider_id}, code="provider_misconfigured")
        return credentials, str(region)

    async def get(self) -> tuple[ReadOnlyCredentials, str]:
        if self._credentials is None:
            async with self._lock:
                if self._credentials is None:
                    self._credentials, self._region = await asyncio.to_thread(self._resolve)
        credentials = self._credentials
        assert credentials is not None and self._region is not None
        if isinstance(credentials, RefreshableCredentials) and credentials.refresh_needed():
            async with self._lock:
                frozen = await asyncio.to_thread(credentials.get_frozen_credentials)
            return frozen, self._region
        return credentials.get_frozen_credentials(), self._region


# ---------------------------------------------------------------- request body


CLAUDE_FIELDS = ("top_k", "thinking")  # Anthropic request fields Claude takes on Bedrock
CACHE_POINT = {"cachePoint": {"type": "default"}}


def is_claude(model: str) -> bool:
    return "anthropic.claude" in model


async def converse_body(req: ChatRequest, options: dict[str, Any], *,
                        claude: bool = False) -> dict[str, Any]:
    """The Converse request body for an OpenAI chat request (``claude``: with the
    Anthropic fields a Claude model takes)."""
    with ImageFetcher(FetchPolicy.from_options(options.get("image_fetch"))) as images:
        body = await _converse_body(req, options, images, claude)
    if claude:
        extras = req.extras()
        fields = {name: extras[name] for name in CLAUDE_FIELDS if name in extras}
        if fields:
            body["additionalModelRequestFields"] = {
                **body.get("additionalModelRequestFields", {}), **fields}
    return body


def _cached(block: dict[str, Any], source: Any, claude: bool) -> list[dict[str, Any]]:
    """``block``, and a cache point after it when ``source`` had ``cache_control``."""
    if claude and "cache_control" in (getattr(source, "model_extra", None) or {}):
        return [block, dict(CACHE_POINT)]
    return [block]


def _system_blocks(message: Message, claude: bool) -> list[dict[str, Any]]:
    """A system message's text; for Claude, a cache point after a part with
    ``cache_control``."""
    if not claude or isinstance(message.content, str) or message.content is None:
        text = message.text()
        return [{"text": text}] if text else []
    blocks: list[dict[str, Any]] = []
    for part in message.content:
        if part.type == "text" and part.text:
            blocks += _cached({"text": part.text}, part, claude)
    return blocks


def reasoning_blocks(message: Message) -> list[dict[str, Any]]:
    """An assistant message's earlier Anthropic thinking blocks as ``reasoningContent``."""
    blocks = []
    for block in (message.model_extra or {}).get("thinking_blocks") or ():
        if block.get("type") == "redacted_thinking":
            blocks.append({"reasoningContent": {"redactedContent": block.get("data", "")}})
        elif block.get("type") == "thinking":
            text = {"text": block.get("thinking", ""), "signature": block.get("signature", "")}
            blocks.append({"reasoningContent": {"reasoningText": text}})
    return blocks


async def _converse_body(req: ChatRequest, options: dict[str, Any],
                         images: ImageFetcher, claude: bool = False) -> dict[str, Any]:
    system: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    for message in req.messages:
        if message.role in ("system", "developer"):
            system += _system_blocks(message, claude)
            continue
        role, blocks = await _message_blocks(message, images, claude)
        if not blocks:
            continue
        if messages and messages[-1]["role"] == role:
            # Converse requires user and assistant turns to alternate.
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": role, "content": blocks})
    body: dict[str, Any] = {"messages": messages}
    if system:
        body["system"] = system
    inference = _inference_config(req, options)
    if inference:
        body["inferenceConfig"] = inference
    tool_config = _tool_config(req, claude)
    if tool_config:
        body["toolConfig"] = tool_config
    if options.get("guardrail_identifier"):
        body["guardrailConfig"] = {
            "guardrailIdentifier": str(options["guardrail_identifier"]),
            "guardrailVersion": str(options.get("guardrail_version", "DRAFT")),
        }
    if options.get("additional_model_request_fields"):
        body["additionalModelRequestFields"] = dict(options["additional_model_request_fields"])
    return body


def _inference_config(req: ChatRequest, options: dict[str, Any]) -> dict[str, Any]:
    inference: dict[str, Any] = {}
    limit = req.output_limit() or options.get("default_max_tokens")
    if limit:
        inference["maxTokens"] = int(limit)
    if req.temperature is not None:
        inference["temperature"] = min(req.temperature, 1.0)
    if req.top_p is not None:
        inference["topP"] = req.top_p
    if req.stop_list():
        inference["stopSequences"] = req.stop_list()
    return inference


def _tool_config(req: ChatRequest, claude: bool = False) -> dict[str, Any] | None:
    if not req.tools or req.tool_choice == "none":
        return None
    tools: list[dict[str, Any]] = []
    for tool in req.tools:
        spec: dict[str, Any] = {
            "name": tool.function.name,
            "inputSchema": {"json": tool.function.parameters or {"type": "object",
                                                                 "properties": {}}},
        }
        if tool.function.description:
            spec["description"] = tool.function.description
        tools += _cached({"toolSpec": spec}, tool.function, claude)
    config: dict[str, Any] = {"tools": tools}
    choice = req.tool_choice
    if choice == "required":
        config["toolChoice"] = {"any": {}}
    elif isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        if not name:
            raise InvalidRequest("tool_choice names no function", param="tool_choice")
        config["toolChoice"] = {"tool": {"name": str(name)}}
    elif choice in (None, "auto"):
        config["toolChoice"] = {"auto": {}}
    else:
        raise InvalidRequest(f"unsupported tool_choice {choice!r}", param="tool_choice")
    return config


async def _message_blocks(
    message: Message, images: ImageFetcher, claude: bool = False
) -> tuple[str, list[dict[str, Any]]]:
    if message.role == "tool":
        if not message.tool_call_id:
            raise InvalidRequest("a tool message needs tool_call_id", param="messages")
        result = {"toolUseId": message.tool_call_id, "content": [{"text": message.text()}],
                  "status": "success"}
        return "user", [{"toolResult": result}]
    if message.role == "assistant":
        blocks: list[dict[str, Any]] = reasoning_blocks(message) if claude else []
        text = message.text()
        if text:
            blocks.append({"text": text})
        for call in message.tool_calls or ():
            blocks.append({"toolUse": {"toolUseId": call.id, "name": call.function.name,
                                       "input": _arguments(call.function.arguments)}})
        return "assistant", blocks
    if message.role == "function":
        raise InvalidRequest("legacy function messages are not supported; use tool messages",
                             param="messages")
    if isinstance(message.content, str) or message.content is None:
        return "user", [{"text": message.content}] if message.content else []
    parts: list[dict[str, Any]] = []
    for part in message.content:
        parts += _cached(await _part_block(part, images), part, claude)
    return "user", parts


def _arguments(arguments: str) -> Any:
    if not arguments.strip():
        return {}
    try:
        return orjson.loads(arguments)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest("tool call arguments are not valid JSON", param="messages") from exc


async def _part_block(part: ContentPart, images: ImageFetcher) -> dict[str, Any]:
    if part.type == "text":
        return {"text": part.text or ""}
    if part.type == "image_url" and part.image_url is not None:
        mime, data = await load_image(part.image_url.url, images)
        fmt = IMAGE_FORMATS.get(mime.lower())
        if fmt is None:
            raise InvalidRequest(f"Bedrock does not accept {mime} images", param="messages")
        return {"image": {"format": fmt, "source": {"bytes": base64.b64encode(data).decode()}}}
    raise InvalidRequest(f"content part type {part.type!r} is not supported by Bedrock",
                         param="messages")


async def load_image(url: str, images: ImageFetcher) -> tuple[str, bytes]:
    """A data URL decoded, or an http(s) URL fetched through tako's SSRF guard."""
    if url.startswith("data:"):
        return parse_data_url(url)
    if url.startswith(("http://", "https://")):
        return await images.fetch(url)
    raise InvalidRequest("image_url must be an http(s) or data URL", param="messages")


# ---------------------------------------------------------------- responses


def parse_usage(raw: dict[str, Any] | None, cost: Any) -> Usage:
    """Converse usage; ``inputTokens`` excludes cache reads and writes, OpenAI's
    ``prompt_tokens`` includes them."""
    if not raw:
        return Usage()
    cache_read = int(raw.get("cacheReadInputTokens") or 0)
    cache_write = int(raw.get("cacheWriteInputTokens") or 0)
    prompt = int(raw.get("inputTokens") or 0) + cache_read + cache_write
    completion = int(raw.get("outputTokens") or 0)
    return Usage(prompt_tokens=prompt, completion_tokens=completion, cached_tokens=cache_read,
                 cost_usd=cost(prompt, completion, cache_read))


def thinking_block(reasoning: dict[str, Any]) -> dict[str, Any]:
    """A Converse ``reasoningContent`` block as an Anthropic thinking block."""
    if "redactedContent" in reasoning:
        return {"type": "redacted_thinking", "data": reasoning["redactedContent"]}
    text = reasoning.get("reasoningText") or {}
    return {"type": "thinking", "thinking": str(text.get("text") or ""),
            "signature": str(text.get("signature") or "")}


def parse_converse(body: dict[str, Any], provider_id: str, model: str, cost: Any) -> ChatResponse:
    blocks = ((body.get("output") or {}).get("message") or {}).get("content")
    if not isinstance(blocks, list):
        raise UpstreamTransient(f"provider {provider_id} answered without output.message",
                                details={"provider": provider_id, "body": body})
    texts: list[str] = []
    calls: list[ToolCall] = []
    thinking = [thinking_block(block["reasoningContent"]) for block in blocks
                if isinstance(block.get("reasoningContent"), dict)]
    for block in blocks:
        if "text" in block:
            texts.append(str(block["text"]))
        elif "toolUse" in block:
            use = block["toolUse"]
            calls.append(ToolCall(id=str(use.get("toolUseId") or new_id("tooluse_")),
                                  function=FunctionCall(
                                      name=str(use["name"]),
                                      arguments=orjson.dumps(use.get("input") or {}).decode())))
    reason = str(body.get("stopReason") or "end_turn")
    return ChatResponse(
        id=new_id(),
        model=model,
        created=now(),
        content="".join(texts) if texts or not calls else None,
        tool_calls=calls or None,
        finish_reason=STOP_REASONS.get(reason, "tool_calls" if calls else "stop"),
        usage=parse_usage(body.get("usage"), cost),
        provider_id=provider_id,
        extra={"thinking_blocks": thinking} if thinking else {},
    )


def bedrock_error(provider_id: str, status: int, error_type: str, body: Any,
                  retry_after: float | None = None) -> TakoError:
    """Map a Bedrock error (HTTP status, ``x-amzn-ErrorType``, body) to a TakoError."""
    kind = error_type.split(":")[0].strip()
    if not kind and isinstance(body, dict):
        kind = str(body.get("__type") or "").split("#")[-1]
    message = _message(body)
    lowered = kind.lower()
    effective = status
    if lowered in ("throttlingexception", "servicequotaexceededexception"):
        effective = 429
    elif lowered in ("modelnotreadyexception", "serviceunavailableexception"):
        effective = 503
    elif lowered == "modeltimeoutexception":
        effective = 408
    elif lowered in ("internalserverexception", "modelerrorexception",
                     "modelstreamerrorexception") and status < 500:
        effective = 500
    text = f"{kind}: {message}" if kind else message
    if lowered == "validationexception" and _is_context_length(message):
        error: TakoError = ContextLengthExceeded(
            f"provider {provider_id} returned {status}: {text}",
            details={"provider": provider_id, "status": status, "body": body})
    else:
        error = upstream_error_for(provider_id, effective, body, message=text,
                                   retry_after=retry_after)
    if error.details is not None:
        error.details["error_type"] = kind
        error.details["status"] = status
    return error


def _message(body: Any) -> str:
    if isinstance(body, dict):
        for key in ("message", "Message"):
            if isinstance(body.get(key), str):
                return str(body[key])
    if isinstance(body, str) and body:
        return body[:500]
    return "no message"


def _is_context_length(message: str) -> bool:
    lowered = message.lower()
    return ("too long" in lowered or "input length" in lowered or "context window" in lowered
            or ("exceed" in lowered and ("token" in lowered or "context" in lowered)))


# ---------------------------------------------------------------- stream events


@dataclass(slots=True)
class StreamState:
    """What a ConverseStream has said so far, turned into Delta items; the stop reason and
    usage go to ``outcome``."""

    provider_id: str
    cost: Any
    outcome: StreamOutcome
    stopped: bool = False
    tool_index: dict[int, int] = field(default_factory=dict)
    reasoning: set[int] = field(default_factory=set)  # blocks whose thinking has started

    def handle(self, message: EventMessage) -> Delta | None:
        if message.message_type != "event":
            raise self._exception(message)
        event = message.event_type
        data = orjson.loads(message.payload) if message.payload else {}
        if event == "contentBlockStart":
            use = (data.get("start") or {}).get("toolUse")
            if use:
                index = self.tool_index.setdefault(int(data.get("contentBlockIndex", 0)),
                                                   len(self.tool_index))
                return Delta(tool_calls=[ToolCallDelta(
                    index=index, id=str(use.get("toolUseId")), name=str(use.get("name")),
                    arguments="")])
        elif event == "contentBlockDelta":
            delta = data.get("delta") or {}
            if "text" in delta:
                return Delta(content=str(delta["text"]))
            if "toolUse" in delta:
                block = int(data.get("contentBlockIndex", 0))
                index = self.tool_index.setdefault(block, len(self.tool_index))
                fragment = str((delta["toolUse"] or {}).get("input") or "")
                return Delta(tool_calls=[ToolCallDelta(index=index, arguments=fragment)])
            if isinstance(delta.get("reasoningContent"), dict):
                return self._reasoning(int(data.get("contentBlockIndex", 0)),
                                       delta["reasoningContent"])
        elif event == "messageStop":
            self.stopped = True
            reason = str(data.get("stopReason") or "end_turn")
            self.outcome.finish_reason = STOP_REASONS.get(
                reason, "tool_calls" if self.tool_index else "stop")
        elif event == "metadata":
            self.outcome.usage = parse_usage(data.get("usage"), self.cost)
        return None

    def _reasoning(self, block: int, reasoning: dict[str, Any]) -> Delta:
        """A ``reasoningContent`` delta as Anthropic's thinking events: the first one of a
        block opens it (holding its text), later ones are thinking or signature deltas."""
        if block not in self.reasoning:
            self.reasoning.add(block)
            if "redactedContent" in reasoning:
                opened = thinking_block(reasoning)
            else:
                opened = {"type": "thinking", "thinking": str(reasoning.get("text") or ""),
                          "signature": str(reasoning.get("signature") or "")}
            return Delta(native={"type": "content_block_start", "content_block": opened})
        if "signature" in reasoning:
            delta = {"type": "signature_delta", "signature": str(reasoning["signature"])}
        else:
            delta = {"type": "thinking_delta", "thinking": str(reasoning.get("text") or "")}
        return Delta(native={"type": "content_block_delta", "delta": delta})

    def _exception(self, message: EventMessage) -> TakoError:
        body = decode_body(message.payload) if message.payload else {}
        if message.message_type == "error" and not isinstance(body, dict):
            body = {"message": str(message.headers.get(":error-message") or "")}
        kind = message.exception_type or "unknownStreamError"
        status = {"throttlingexception": 429, "validationexception": 400,
                  "serviceunavailableexception": 503, "modeltimeoutexception": 408,
                  }.get(kind.lower(), 500)
        return bedrock_error(self.provider_id, status, kind, body)


# ---------------------------------------------------------------- the adapter


COHERE_BATCH = 96  # texts per Cohere Embed call


def titan_body(text: str, dimensions: int | None) -> dict[str, Any]:
    """An Amazon Titan Text Embeddings InvokeModel body: one text per call."""
    body: dict[str, Any] = {"inputText": text}
    if dimensions is not None:
        body["dimensions"] = dimensions
    return body


def cohere_body(texts: list[str], dimensions: int | None) -> dict[str, Any]:
    """A Cohere Embed InvokeModel body (``output_dimension`` for models that take it)."""
    body: dict[str, Any] = {"texts": texts, "input_type": "search_document"}
    if dimensions is not None:
        body["output_dimension"] = dimensions
    return body


def cohere_vectors(provider_id: str, answer: Any) -> list[list[float]]:
    """``embeddings`` as a list of vectors, or by type (``{"float": [...]}``)."""
    found = answer.get("embeddings") if isinstance(answer, dict) else None
    if isinstance(found, dict):
        found = found.get("float")
    if not isinstance(found, list):
        raise embedding_wire.malformed(provider_id, "a Cohere answer without embeddings")
    return [embedding_wire.vector(provider_id, v) for v in found]


class BedrockOptions(AdapterOptions):
    region: str | None = None
    endpoint_url: str | None = None
    profile: str | None = None
    credentials_file: str | None = None
    default_max_tokens: int | None = Field(default=None, ge=1)
    guardrail_identifier: str | None = None
    guardrail_version: str = "DRAFT"
    additional_model_request_fields: dict[str, Any] | None = None
    image_fetch: FetchPolicy | None = None


class BedrockProvider(HttpProvider):
    def __init__(self, spec: DeploymentSpec) -> None:
        super().__init__(spec)
        options = spec.options
        self.options = options
        self.endpoint = (options.get("endpoint_url") or spec.base_url or "").rstrip("/")
        region = options.get("region") or os.environ.get("AWS_REGION") or os.environ.get(
            "AWS_DEFAULT_REGION")
        self.credentials = AwsCredentialSource(
            spec.name, str(region) if region else None,
            options.get("profile"), options.get("credentials_file"))
        # ':' stays literal: clients on this path send it unescaped, and the signature
        # must cover the path exactly as it goes on the wire.
        self.model_path = "/model/" + quote(spec.model, safe=":")

    def _url(self, region: str, action: str) -> str:
        base = self.endpoint or f"https://bedrock-runtime.{region}.amazonaws.com"
        return f"{base}{self.model_path}/{action}"

    async def _target(self, action: str) -> tuple[str, Signer]:
        """The action's URL and its SigV4 signer, with the current credentials."""
        credentials, region = await self.credentials.get()
        return self._url(region, action), partial(sign_request, credentials, region, "POST")

    def _error(self, status: int, headers: Mapping[str, str], raw: bytes) -> TakoError:
        return bedrock_error(self.id, status, headers.get("x-amzn-errortype", ""),
                             decode_body(raw), retry_after_seconds(headers))

    async def chat(self, req: ChatRequest) -> ChatResponse:
        body = await converse_body(req, self.options, claude=is_claude(self.model))
        url, sign = await self._target("converse")
        answer = await self.send_json(url, body, {"accept": "application/json"},
                                      on_error=self._error, sign=sign)
        return parse_converse(answer, self.id, self.model, self.cost)

    async def _invoke(self, body: dict[str, Any]) -> Any:
        url, sign = await self._target("invoke")
        return await self.send_json(url, body, {"accept": "application/json"},
                                    on_error=self._error, sign=sign)

    async def embed(self, req: EmbeddingRequest) -> Embeddings:
        """Titan Text Embeddings (``amazon.titan-embed-*``, one InvokeModel call per text)
        and Cohere Embed (``cohere.embed-*``, up to 96 texts a call)."""
        if "titan-embed" in self.model:
            return await self._embed_titan(req)
        if "cohere.embed" in self.model:
            return await self._embed_cohere(req)
        raise InvalidRequest(f"the Bedrock model {self.model} is not a Titan or Cohere "
                             "embedding model", param="model", code="model_not_supported")

    async def _embed_titan(self, req: EmbeddingRequest) -> Embeddings:
        answers = await asyncio.gather(*(self._invoke(titan_body(text, req.dimensions))
                                         for text in req.inputs))
        vectors = [embedding_wire.vector(self.id, a.get("embedding")
                                         if isinstance(a, dict) else None) for a in answers]
        counts = [a.get("inputTextTokenCount") if isinstance(a, dict) else None
                  for a in answers]
        reported = sum(counts) if all(isinstance(c, int) for c in counts) else None
        return Embeddings(vectors, embedding_wire.usage_of(req, reported, self.cost))

    async def _embed_cohere(self, req: EmbeddingRequest) -> Embeddings:
        batches = [req.inputs[i:i + COHERE_BATCH]
                   for i in range(0, len(req.inputs), COHERE_BATCH)]
        answers = await asyncio.gather(*(self._invoke(cohere_body(b, req.dimensions))
                                         for b in batches))
        vectors = [v for answer in answers for v in cohere_vectors(self.id, answer)]
        embedding_wire.check_count(self.id, vectors, req.inputs)
        # InvokeModel reports Cohere's token count in a header only: estimated
        return Embeddings(vectors, embedding_wire.usage_of(req, None, self.cost))

    async def deltas(self, req: ChatRequest, outcome: StreamOutcome) -> AsyncIterator[Delta]:
        body = await converse_body(req, self.options, claude=is_claude(self.model))
        url, sign = await self._target("converse-stream")
        state = StreamState(self.id, self.cost, outcome)
        decoder = EventStreamDecoder()
        async with self.open_stream(url, body, {"accept": EVENTSTREAM}, on_error=self._error,
                                    sign=sign) as chunks:
            async for data in chunks:
                for message in decoder.feed(data):
                    delta = state.handle(message)
                    if delta is not None:
                        yield delta
        if not state.stopped:
            raise UpstreamTransient(
                f"provider {self.id} closed the stream before messageStop",
                details={"provider": self.id}, code="upstream_connection_error")



TELEMETRY_SYSTEM = "aws.bedrock"  # gen_ai.system
# the embedded default serves this vendor when these are all set
EMBEDDED_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


def embedded_deployments(environ: Mapping[str, str]) -> list[dict[str, Any]]:
    """bedrock-claude when AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are set (in
    AWS_REGION, default us-east-1)."""
    if not all(environ.get(key) for key in EMBEDDED_ENV):
        return []
    return [{"name": "bedrock-claude", "provider": "bedrock",
             "model": "anthropic.claude-3-5-sonnet-20240620-v1:0",
             "options": {"region": environ.get("AWS_REGION", "us-east-1")}}]

@register("bedrock", BedrockOptions)
def _bedrock(spec: DeploymentSpec) -> BedrockProvider:
    return BedrockProvider(spec)
