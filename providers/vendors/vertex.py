"""``vertex``: Gemini models on Google Cloud Vertex AI (``generateContent`` and
``streamGenerateContent?alt=sse``).

``model`` is a Gemini model name (``gemini-2.5-flash``). ``base_url`` overrides
``https://{location}-aiplatform.googleapis.com`` (``https://aiplatform.googleapis.com`` for
the ``global`` location).

Options (``VertexOptions``):

- ``project``: the Google Cloud project; else the service account's or ADC's project.
- ``location``: region, default ``us-central1``.
- ``credentials_file``: a service-account JSON key. Without it, Application Default
  Credentials (``GOOGLE_APPLICATION_CREDENTIALS``, gcloud user credentials, the metadata
  server). Tokens carry the ``cloud-platform`` scope and come from the key's ``token_uri``.
- ``default_max_tokens``: ``generationConfig.maxOutputTokens`` when the request sets none.
- ``safety_settings``: a list passed as ``safetySettings``.

Tokens are fetched and refreshed in a worker thread (google-auth is blocking) when they are
missing or about to expire; concurrent requests share one refresh.

Gemini function calls carry no ids, so tako names them ``call_<responseId>_<n>`` (n counts
the calls in the answer): the same answer gets the same ids streamed or not. Tool results
go back as ``functionResponse`` parts named after the call they answer. Image URLs are
passed by reference (``fileData``, MIME type guessed from the extension, JPEG when unknown);
data URLs go inline.
"""

from __future__ import annotations

import asyncio
import base64
import mimetypes
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

import google.auth
import google.auth.exceptions
import orjson
from google.auth.credentials import Credentials as GoogleCredentials
from google.auth.transport.requests import Request as GoogleAuthRequest
from google.oauth2 import service_account
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
    StreamOutcome,
    decode_body,
    iter_sse,
    new_id,
    now,
    parse_data_url,
    retry_after_seconds,
)
from tako.providers.registry import AdapterOptions, register

SCOPE = "https://www.googleapis.com/auth/cloud-platform"
DEFAULT_LOCATION = "us-central1"

FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}

# JSON Schema keywords Gemini's OpenAPI-subset schemas reject.
_UNSUPPORTED_SCHEMA_KEYS = frozenset({"$schema", "additionalProperties", "strict"})


# ---------------------------------------------------------------- tokens


class GoogleTokenSource:
    """OAuth access tokens from a service-account key or Application Default Credentials."""

    def __init__(self, provider_id: str, credentials_file: str | None) -> None:
        self.provider_id = provider_id
        self._credentials_file = credentials_file
        self._credentials: GoogleCredentials | None = None
        self.project: str | None = None
        self._lock = asyncio.Lock()
        self._transport: GoogleAuthRequest | None = None

    def _load(self) -> tuple[GoogleCredentials, str | None]:
        if self._credentials_file:
            credentials = service_account.Credentials.from_service_account_file(
                self._credentials_file, scopes=[SCOPE])
            return credentials, credentials.project_id
        credentials, project = google.auth.default(scopes=[SCOPE])
        return credentials, project

    def _refresh(self) -> None:
        if self._credentials is None:
            self._credentials, self.project = self._load()
        if self._transport is None:
            self._transport = GoogleAuthRequest()
        self._credentials.refresh(self._transport)

    async def token(self) -> str:
        credentials = self._credentials
        if credentials is not None and credentials.valid and credentials.token:
            return str(credentials.token)
        async with self._lock:
            credentials = self._credentials
            if credentials is None or not credentials.valid or not credentials.token:
                try:
                    await asyncio.to_thread(self._refresh)
                except (google.auth.exceptions.GoogleAuthError, ValueError, OSError) as exc:
                    # ValueError/OSError: a key file that is missing or malformed.
                    raise self._auth_error(exc) from exc
            assert self._credentials is not None
            return str(self._credentials.token)

    def _auth_error(self, exc: Exception) -> TakoError:
        details = {"provider": self.provider_id, "auth_error": str(exc)[:500]}
        message = f"provider {self.provider_id}: Google credentials failed: {exc}"
        if isinstance(exc, google.auth.exceptions.TransportError) or getattr(
                exc, "retryable", False):
            return UpstreamTransient(message, details=details, code="upstream_auth_error")
        return UpstreamError(message, details=details, code="upstream_auth_error")


# ---------------------------------------------------------------- request body


def generate_content_body(req: ChatRequest, options: dict[str, Any]) -> dict[str, Any]:
    """The GenerateContentRequest body for an OpenAI chat request."""
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    call_names: dict[str, str] = {}
    for message in req.messages:
        if message.role in ("system", "developer"):
            text = message.text()
            if text:
                system.append({"text": text})
            continue
        role, parts = _message_parts(message, call_names)
        if not parts:
            continue
        if contents and contents[-1]["role"] == role:
            # Gemini wants alternating turns; parallel tool results share one turn.
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": system}
    if req.tools:
        body["tools"] = [{"functionDeclarations": [_declaration(t.function) for t in req.tools]}]
        body["toolConfig"] = {"functionCallingConfig": _calling_config(req.tool_choice)}
    generation = _generation_config(req, options)
    if generation:
        body["generationConfig"] = generation
    if options.get("safety_settings"):
        body["safetySettings"] = list(options["safety_settings"])
    return body


def _message_parts(
    message: Message, call_names: dict[str, str]
) -> tuple[str, list[dict[str, Any]]]:
    if message.role == "tool":
        answered = message.tool_call_id or ""
        name = call_names.get(answered)
        if name is None:
            raise InvalidRequest(f"tool message answers unknown tool_call_id {answered!r}",
                                 param="messages")
        return "user", [{"functionResponse": {"name": name,
                                              "response": _tool_response(message.text())}}]
    if message.role == "assistant":
        parts: list[dict[str, Any]] = []
        text = message.text()
        if text:
            parts.append({"text": text})
        for call in message.tool_calls or ():
            call_names[call.id] = call.function.name
            parts.append({"functionCall": {"name": call.function.name,
                                           "args": _arguments(call.function.arguments)}})
        return "model", parts
    if message.role == "function":
        raise InvalidRequest("legacy function messages are not supported; use tool messages",
                             param="messages")
    if isinstance(message.content, str) or message.content is None:
        return "user", [{"text": message.content}] if message.content else []
    return "user", [_content_part(part) for part in message.content]


def _tool_response(text: str) -> dict[str, Any]:
    """``functionResponse.response`` must be an object: JSON objects pass as they are,
    anything else is wrapped as ``{"content": ...}``."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {"content": text}
    return value if isinstance(value, dict) else {"content": value}


def _arguments(arguments: str) -> dict[str, Any]:
    if not arguments.strip():
        return {}
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest("tool call arguments are not valid JSON", param="messages") from exc
    if not isinstance(value, dict):
        raise InvalidRequest("tool call arguments must be a JSON object", param="messages")
    return value


def _content_part(part: ContentPart) -> dict[str, Any]:
    if part.type == "text":
        return {"text": part.text or ""}
    if part.type == "image_url" and part.image_url is not None:
        url = part.image_url.url
        if url.startswith("data:"):
            mime, data = parse_data_url(url)
            return {"inlineData": {"mimeType": mime, "data": base64.b64encode(data).decode()}}
        if url.startswith(("http://", "https://", "gs://")):
            return {"fileData": {"mimeType": guess_image_type(url), "fileUri": url}}
        raise InvalidRequest("image_url must be an http(s), gs:// or data URL", param="messages")
    if part.type == "input_audio" and part.input_audio:
        fmt = str(part.input_audio.get("format") or "wav")
        return {"inlineData": {"mimeType": f"audio/{fmt}",
                               "data": str(part.input_audio.get("data") or "")}}
    raise InvalidRequest(f"content part type {part.type!r} is not supported by Vertex",
                         param="messages")


def guess_image_type(url: str) -> str:
    guessed, _ = mimetypes.guess_type(urlsplit(url).path)
    return guessed if guessed and guessed.startswith("image/") else "image/jpeg"


def _declaration(function: Any) -> dict[str, Any]:
    declaration: dict[str, Any] = {"name": function.name}
    if function.description:
        declaration["description"] = function.description
    if function.parameters:
        declaration["parameters"] = _clean_schema(function.parameters)
    return declaration


def _clean_schema(schema: Any) -> Any:
    if not isinstance(schema, dict):
        return schema
    cleaned: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _UNSUPPORTED_SCHEMA_KEYS:
            continue
        if key == "properties" and isinstance(value, dict):
            cleaned[key] = {name: _clean_schema(sub) for name, sub in value.items()}
        elif key in ("items", "not"):
            cleaned[key] = _clean_schema(value)
        elif key in ("anyOf", "oneOf", "allOf") and isinstance(value, list):
            cleaned[key] = [_clean_schema(sub) for sub in value]
        else:
            cleaned[key] = value
    return cleaned


def _calling_config(choice: str | dict[str, Any] | None) -> dict[str, Any]:
    if choice in (None, "auto"):
        return {"mode": "AUTO"}
    if choice == "none":
        return {"mode": "NONE"}
    if choice == "required":
        return {"mode": "ANY"}
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        if not name:
            raise InvalidRequest("tool_choice names no function", param="tool_choice")
        return {"mode": "ANY", "allowedFunctionNames": [str(name)]}
    raise InvalidRequest(f"unsupported tool_choice {choice!r}", param="tool_choice")


def _generation_config(req: ChatRequest, options: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if req.temperature is not None:
        config["temperature"] = req.temperature
    if req.top_p is not None:
        config["topP"] = req.top_p
    limit = req.output_limit() or options.get("default_max_tokens")
    if limit:
        config["maxOutputTokens"] = int(limit)
    if req.stop_list():
        config["stopSequences"] = req.stop_list()
    if req.seed is not None:
        config["seed"] = req.seed
    kind = (req.response_format or {}).get("type")
    if kind in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
    return config


# ---------------------------------------------------------------- responses


def parse_usage(raw: dict[str, Any] | None, cost: Any) -> Usage:
    """``candidatesTokenCount`` excludes thinking tokens; OpenAI's completion tokens
    include reasoning, so they are added."""
    if not raw:
        return Usage()
    prompt = int(raw.get("promptTokenCount") or 0) + int(raw.get("toolUsePromptTokenCount") or 0)
    thoughts = int(raw.get("thoughtsTokenCount") or 0)
    completion = int(raw.get("candidatesTokenCount") or 0) + thoughts
    cached = int(raw.get("cachedContentTokenCount") or 0)
    return Usage(prompt_tokens=prompt, completion_tokens=completion, cached_tokens=cached,
                 reasoning_tokens=thoughts, cost_usd=cost(prompt, completion, cached))


def call_id(response_id: str, index: int) -> str:
    return f"call_{response_id}_{index}"


def finish_reason(raw: str | None, has_calls: bool) -> str:
    if has_calls and raw in (None, "STOP", "FINISH_REASON_UNSPECIFIED"):
        return "tool_calls"
    return FINISH_REASONS.get(raw or "STOP", "stop")


def parse_generate_content(body: dict[str, Any], provider_id: str, model: str,
                           cost: Any) -> ChatResponse:
    response_id = str(body.get("responseId") or new_id(""))
    candidates = body.get("candidates") or []
    if not candidates:
        blocked = (body.get("promptFeedback") or {}).get("blockReason")
        if not blocked:
            raise UpstreamTransient(f"provider {provider_id} answered without candidates",
                                    details={"provider": provider_id, "body": body})
        return ChatResponse(id=f"chatcmpl-{response_id}", model=model, created=now(),
                            content="", finish_reason="content_filter",
                            usage=parse_usage(body.get("usageMetadata"), cost),
                            provider_id=provider_id)
    candidate = candidates[0]
    texts: list[str] = []
    calls: list[ToolCall] = []
    for part in (candidate.get("content") or {}).get("parts") or ():
        if "functionCall" in part:
            fc = part["functionCall"]
            calls.append(ToolCall(id=call_id(response_id, len(calls)), function=FunctionCall(
                name=str(fc["name"]), arguments=orjson.dumps(fc.get("args") or {}).decode())))
        elif "text" in part and not part.get("thought"):
            texts.append(str(part["text"]))
    return ChatResponse(
        id=f"chatcmpl-{response_id}",
        model=str(body.get("modelVersion") or model),
        created=now(),
        content="".join(texts) if texts or not calls else None,
        tool_calls=calls or None,
        finish_reason=finish_reason(candidate.get("finishReason"), bool(calls)),
        usage=parse_usage(body.get("usageMetadata"), cost),
        provider_id=provider_id,
    )


def vertex_error(provider_id: str, status: int, body: Any,
                 retry_after: float | None = None) -> TakoError:
    """Map a Google API error (``{"error": {"code", "message", "status"}}``) to a TakoError."""
    if isinstance(body, list) and body:
        body = body[0]
    err = body.get("error") if isinstance(body, dict) else None
    err = err if isinstance(err, dict) else {}
    google_status = str(err.get("status") or "")
    message = str(err.get("message") or (body if isinstance(body, str) else "") or f"HTTP {status}")
    text = f"{google_status}: {message}" if google_status else message
    lowered = message.lower()
    if status == 400 and ("exceeds the maximum number of tokens" in lowered
                          or "input token count" in lowered):
        error: TakoError = ContextLengthExceeded(
            f"provider {provider_id} returned {status}: {text}",
            details={"provider": provider_id, "status": status, "body": body})
    else:
        error = upstream_error_for(provider_id, status, body, message=text,
                                   retry_after=retry_after)
    if error.details is not None:
        error.details["error_status"] = google_status
    return error


# ---------------------------------------------------------------- stream


@dataclass(slots=True)
class StreamState:
    """GenerateContentResponse chunks turned into Delta items; the finish reason and usage
    go to ``outcome``."""

    provider_id: str
    cost: Any
    outcome: StreamOutcome
    response_id: str = ""
    finish_raw: str | None = None
    finished: bool = False
    calls: int = 0

    def handle(self, obj: dict[str, Any]) -> list[Delta]:
        if "error" in obj and not obj.get("candidates"):
            err = obj["error"] if isinstance(obj["error"], dict) else {}
            code = str(err.get("code") or "")
            raise vertex_error(self.provider_id, int(code) if code.isdigit() else 500, obj)
        if not self.response_id:
            self.response_id = str(obj.get("responseId") or new_id(""))
        if obj.get("usageMetadata"):
            self.outcome.usage = parse_usage(obj["usageMetadata"], self.cost)
        deltas: list[Delta] = []
        candidates = obj.get("candidates") or []
        if not candidates and (obj.get("promptFeedback") or {}).get("blockReason"):
            self.finished, self.finish_raw = True, "SAFETY"
        for candidate in candidates[:1]:
            for part in (candidate.get("content") or {}).get("parts") or ():
                if "functionCall" in part:
                    fc = part["functionCall"]
                    deltas.append(Delta(tool_calls=[ToolCallDelta(
                        index=self.calls, id=call_id(self.response_id, self.calls),
                        name=str(fc["name"]),
                        arguments=orjson.dumps(fc.get("args") or {}).decode())]))
                    self.calls += 1
                elif part.get("text") and not part.get("thought"):
                    deltas.append(Delta(content=str(part["text"])))
            if candidate.get("finishReason"):
                self.finished, self.finish_raw = True, str(candidate["finishReason"])
        self.outcome.finish_reason = finish_reason(self.finish_raw, self.calls > 0)
        return deltas


# ---------------------------------------------------------------- the adapter


def predict_batch_size(model: str) -> int:
    """Instances one ``:predict`` call may carry: Gemini embedding models take one text a
    request, the text-embedding models up to 250."""
    return 1 if "gemini-embedding" in model else 250


def predict_body(req: EmbeddingRequest) -> dict[str, Any]:
    """A text embedding model's ``:predict`` body: one instance per input."""
    body: dict[str, Any] = {"instances": [{"content": text} for text in req.inputs]}
    if req.dimensions is not None:
        body["parameters"] = {"outputDimensionality": req.dimensions}
    return body


def parse_predictions(req: EmbeddingRequest, answer: Any, provider_id: str,
                      cost: Any) -> Embeddings:
    """``predictions[i].embeddings.values``; the token count is the sum of each
    prediction's ``statistics.token_count`` (estimated when one is missing)."""
    predictions = answer.get("predictions") if isinstance(answer, dict) else None
    if not isinstance(predictions, list):
        raise embedding_wire.malformed(provider_id, "an answer without predictions")
    found = [p.get("embeddings") if isinstance(p, dict) else None for p in predictions]
    embeddings = [e if isinstance(e, dict) else {} for e in found]
    vectors = [embedding_wire.vector(provider_id, e.get("values")) for e in embeddings]
    embedding_wire.check_count(provider_id, vectors, req.inputs)
    counts = [(e.get("statistics") or {}).get("token_count") for e in embeddings]
    reported = None
    if all(isinstance(c, (int, float)) for c in counts):
        reported = int(sum(counts))
    return Embeddings(vectors, embedding_wire.usage_of(req, reported, cost))


class VertexOptions(AdapterOptions):
    project: str | None = None
    location: str | None = None
    credentials_file: str | None = None
    default_max_tokens: int | None = Field(default=None, ge=1)
    safety_settings: list[dict[str, Any]] | None = None


class VertexProvider(HttpProvider):
    def __init__(self, spec: DeploymentSpec) -> None:
        super().__init__(spec)
        self.options = spec.options
        self.location = str(spec.options.get("location") or DEFAULT_LOCATION)
        self.project: str | None = spec.options.get("project")
        self.tokens = GoogleTokenSource(spec.name, spec.options.get("credentials_file"))
        if spec.base_url:
            self.base = spec.base_url.rstrip("/")
        elif self.location == "global":
            self.base = "https://aiplatform.googleapis.com"
        else:
            self.base = f"https://{self.location}-aiplatform.googleapis.com"

    async def _target(self, method: str) -> tuple[str, dict[str, str]]:
        token = await self.tokens.token()
        project = self.project or self.tokens.project
        if not project:
            raise UpstreamError(f"provider {self.id}: no Google Cloud project (set "
                                "options.project)", details={"provider": self.id},
                                code="provider_misconfigured")
        url = (f"{self.base}/v1/projects/{project}/locations/{self.location}"
               f"/publishers/google/models/{self.model}:{method}")
        return url, {"authorization": f"Bearer {token}"}

    def _error(self, status: int, headers: Mapping[str, str], raw: bytes) -> TakoError:
        return vertex_error(self.id, status, decode_body(raw), retry_after_seconds(headers))

    async def chat(self, req: ChatRequest) -> ChatResponse:
        body = generate_content_body(req, self.options)
        url, headers = await self._target("generateContent")
        answer = await self.send_json(url, body, headers, on_error=self._error)
        return parse_generate_content(answer, self.id, self.model, self.cost)

    async def deltas(self, req: ChatRequest, outcome: StreamOutcome) -> AsyncIterator[Delta]:
        body = generate_content_body(req, self.options)
        url, headers = await self._target("streamGenerateContent")
        state = StreamState(self.id, self.cost, outcome)
        async with self.open_stream(url + "?alt=sse", body, headers,
                                    on_error=self._error) as chunks:
            async for _event, data in iter_sse(chunks):
                if data == b"[DONE]":
                    break
                for delta in state.handle(orjson.loads(data)):
                    yield delta
        if not state.finished:
            raise UpstreamTransient(
                f"provider {self.id} closed the stream before a finishReason",
                details={"provider": self.id}, code="upstream_connection_error")

    async def embed(self, req: EmbeddingRequest) -> Embeddings:
        """Text embedding models (``text-embedding-005``, ``gemini-embedding-001``) on
        ``:predict``, in as many calls as the model's instance limit needs."""
        url, headers = await self._target("predict")
        size = predict_batch_size(self.model)
        parts = [replace(req, inputs=req.inputs[i:i + size])
                 for i in range(0, len(req.inputs), size)]
        answers = await asyncio.gather(*(self.send_json(url, predict_body(part), headers,
                                                        on_error=self._error)
                                         for part in parts))
        result = Embeddings([])
        for part, answer in zip(parts, answers, strict=True):
            one = parse_predictions(part, answer, self.id, self.cost)
            result.vectors += one.vectors
            result.usage.add(one.usage)
        return result



TELEMETRY_SYSTEM = "gcp.vertex_ai"  # gen_ai.system
# the embedded default serves this vendor when these are all set
EMBEDDED_ENV = ("GOOGLE_CLOUD_PROJECT", "GOOGLE_APPLICATION_CREDENTIALS")


def embedded_deployments(environ: Mapping[str, str]) -> list[dict[str, Any]]:
    """gemini-flash when GOOGLE_CLOUD_PROJECT and GOOGLE_APPLICATION_CREDENTIALS are
    set."""
    if not all(environ.get(key) for key in EMBEDDED_ENV):
        return []
    return [{"name": "gemini-flash", "provider": "vertex", "model": "gemini-2.5-flash",
             "options": {"project": environ["GOOGLE_CLOUD_PROJECT"],
                         "credentials_file": environ["GOOGLE_APPLICATION_CREDENTIALS"]}}]

@register("vertex", VertexOptions)
def _vertex(spec: DeploymentSpec) -> VertexProvider:
    return VertexProvider(spec)
