"""Every vendor fake behind one interface, for end-to-end tests through a real gateway.

A ``Vendor`` knows how to serve its fake on loopback, the deployment entry that points tako
at it, how to script a text answer, a tool call and an error in that vendor's own wire
format, and where in the vendor-shaped request tako's translation of a tool result or an
image ends up.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from tako.core.specs import DeploymentSpec, Price
from tako.providers.pricing import price_for
from tests.fakes import anthropic as fake_anthropic
from tests.fakes import azure as fake_azure
from tests.fakes import bedrock as fake_bedrock
from tests.fakes import mistral as fake_mistral
from tests.fakes import ollama as fake_ollama
from tests.fakes import openai as fake_openai
from tests.fakes import vertex as fake_vertex
from tests.support.gateway import Gateway, basic_config, gateway
from tests.support.net import serve_asgi

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + b"\x00" * 17
PNG_B64 = base64.b64encode(PNG).decode()
PNG_DATA_URL = "data:image/png;base64," + PNG_B64

AWS_ACCESS_KEY = "AKIDTAKOE2E"
AWS_SECRET_KEY = "e2e/secret+key/for/the/loopback/bedrock"
AWS_REGION = "eu-west-3"
VERTEX_PROJECT = "tako-proj"
VERTEX_LOCATION = "europe-west4"
OLLAMA_PRICE = {"input": 0.5, "output": 1.5}
#: OpenAI sampling fields a client sends; ``sampling_sent`` checks the vendor's version.
SAMPLING: dict[str, Any] = {"temperature": 1.5, "top_p": 0.9, "max_tokens": 64,
                            "stop": ["END"]}


Call = tuple[str, dict[str, Any]]  # (function name, arguments)


@dataclass(frozen=True)
class Answered:
    """A tool call as the client saw it and the result the client sent back."""

    id: str
    name: str
    args: dict[str, Any]
    result: str


@dataclass(frozen=True)
class Scripted:
    """Token counts the fake reports for a scripted text answer."""

    prompt: int
    completion: int
    cached: int = 0


def pieces(text: str) -> list[str]:
    words = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


def split_json(args: dict[str, Any]) -> list[str]:
    raw = orjson.dumps(args).decode()
    third = max(1, len(raw) // 3)
    return [raw[:third], raw[third : 2 * third], raw[2 * third :]]


class Vendor:
    """One vendor: its fake's controller, base URL and tako deployment."""

    name: str
    provider: str
    model: str
    usage: Scripted
    error_status: int = 429
    #: Ids the vendor gives scripted tool calls, by position (None: tako makes them up).
    call_id_prefix: str | None = "call_e2e000000"

    def call_ids(self, count: int) -> list[str] | None:
        if self.call_id_prefix is None:
            return None
        return [f"{self.call_id_prefix}{i}" for i in range(count)]

    def with_ids(self, calls: list[Call]) -> list[tuple[str, str, dict[str, Any]]]:
        """(id, name, arguments) for each scripted call."""
        ids = self.call_ids(len(calls))
        assert ids is not None
        return [(cid, name, args) for cid, (name, args) in zip(ids, calls, strict=True)]

    def __init__(self, fake: Any, url: str) -> None:
        self.fake = fake
        self.url = url

    # ---- configuration ----

    def deployment(self) -> dict[str, Any]:
        raise NotImplementedError

    def price(self) -> Price:
        return price_for(DeploymentSpec(**self.deployment()))

    # ---- scripting ----

    def reset(self) -> None:
        self.fake.requests.clear()
        self.fake.replies.clear()

    def push_text(self, text: str, *, stream: bool) -> None:
        raise NotImplementedError

    def push_tool_calls(self, calls: list[Call], *, stream: bool, text: str = "") -> None:
        """An answer that says ``text`` (if any) and calls these tools, in the vendor's
        format (streamed or not)."""
        raise NotImplementedError

    def error_body(self) -> Any:
        """The body of the error ``push_error`` scripts, as the vendor sends it."""
        raise NotImplementedError

    def push_error(self) -> None:
        """An error answer in the vendor's own format: status ``error_status``, body
        ``error_body()``."""
        raise NotImplementedError

    def push_error_event_first(self) -> None:
        """A stream that opens (200) and sends a vendor error event before any content."""
        raise NotImplementedError

    def push_broken_stream(self, text: str, *, dropped: bool) -> None:
        """A stream that sends the first words of ``text`` and then either an error event in
        the vendor's format or (``dropped``) closes the connection mid-stream."""
        raise NotImplementedError

    # ---- what tako sent ----

    def last_body(self) -> dict[str, Any]:
        return dict(self.fake.requests[-1].body)

    def tool_results_sent(self, answered: list[Answered], said: str = "") -> None:
        """Assert the last request ends with the assistant's turn (``said`` and its calls)
        and the tools' answers, shaped as this vendor expects them."""
        raise NotImplementedError

    def image_sent(self) -> None:
        """Assert the last request's user message carries ``PNG`` in the vendor's shape."""
        raise NotImplementedError

    def sampling_sent(self) -> None:
        """Assert the last request carries ``SAMPLING`` in the vendor's names and ranges."""
        body = self.last_body()
        assert {k: body.get(k) for k in SAMPLING} == SAMPLING

    def tools_sent(self, tools: list[dict[str, Any]], forced: str) -> None:
        """Assert the last request declares ``tools`` (OpenAI function tools) and forces
        function ``forced``, in the vendor's shape."""
        body = self.last_body()
        assert body["tools"] == tools
        assert body["tool_choice"] == {"type": "function", "function": {"name": forced}}


# ---------------------------------------------------------------- OpenAI-shaped vendors


def _openai_tool_history(messages: list[dict[str, Any]], answered: list[Answered],
                         said: str) -> None:
    assistant, tools = messages[-1 - len(answered)], messages[-len(answered):]
    assert assistant["role"] == "assistant"
    assert (assistant.get("content") or "") == said
    assert [(c["id"], c["type"], c["function"]["name"], orjson.loads(c["function"]["arguments"]))
            for c in assistant["tool_calls"]] == [
        (a.id, "function", a.name, a.args) for a in answered]
    assert tools == [{"role": "tool", "tool_call_id": a.id, "content": a.result}
                     for a in answered]


SERVER_ERROR = {"message": "The server had an error while processing your request.",
                "type": "server_error", "param": None, "code": None}


def _openai_image(messages: list[dict[str, Any]]) -> None:
    parts = messages[-1]["content"]
    assert {"type": "image_url", "image_url": {"url": PNG_DATA_URL}} in [
        {"type": p["type"], "image_url": {"url": p["image_url"]["url"]}}
        for p in parts if p["type"] == "image_url"]


class OpenAIVendor(Vendor):
    name = "openai"
    provider = "openai"
    model = "gpt-4o-mini"
    usage = Scripted(12, 5, cached=2)

    def deployment(self) -> dict[str, Any]:
        return {"name": self.name, "provider": self.provider, "model": self.model,
                "base_url": self.url + "/v1", "api_key": "sk-openai-e2e"}

    def push_text(self, text: str, *, stream: bool) -> None:
        self.fake.push(fake_openai.Reply(text=text))

    def push_tool_calls(self, calls: list[Call], *, stream: bool, text: str = "") -> None:
        self.fake.push(fake_openai.Reply(text=text or None, tool_calls=self.with_ids(calls)))

    def error_body(self) -> Any:
        return {"error": {
            "message": "Rate limit reached for gpt-4o-mini on requests per min (RPM)",
            "type": "requests", "param": None, "code": "rate_limit_exceeded"}}

    def push_error(self) -> None:
        self.fake.push(fake_openai.Reply(status=self.error_status, body=self.error_body()))

    def push_error_event_first(self) -> None:
        # no content: the role chunk, then the error
        self.fake.push(fake_openai.Reply(chunks=[], error_after=0, error=SERVER_ERROR))

    def push_broken_stream(self, text: str, *, dropped: bool) -> None:
        if dropped:
            self.fake.push(fake_openai.Reply(text=text, drop_after=3))
        else:
            self.fake.push(fake_openai.Reply(text=text, error_after=len(text.split()) // 2,
                                             error=SERVER_ERROR))

    def tool_results_sent(self, answered: list[Answered], said: str = "") -> None:
        assert self.fake.requests[-1].headers["authorization"] == "Bearer sk-openai-e2e"
        _openai_tool_history(self.last_body()["messages"], answered, said)

    def image_sent(self) -> None:
        _openai_image(self.last_body()["messages"])


class GenericVendor(OpenAIVendor):
    """``http-generic``: an OpenAI-compatible server (vLLM, llama.cpp) without a key."""

    name = "http-generic"
    provider = "http-generic"
    model = "served-llama"
    error_status = 500

    def deployment(self) -> dict[str, Any]:
        return {"name": self.name, "provider": self.provider, "model": self.model,
                "base_url": self.url + "/v1", "price": {"input": 0.2, "output": 0.4}}

    def error_body(self) -> Any:
        return {"object": "error", "message": "CUDA out of memory",
                "type": "InternalServerError", "code": 500}

    def tool_results_sent(self, answered: list[Answered], said: str = "") -> None:
        assert "authorization" not in self.fake.requests[-1].headers
        _openai_tool_history(self.last_body()["messages"], answered, said)


class AzureVendor(Vendor):
    name = "azure-openai"
    provider = "azure-openai"
    model = "gpt-4o"
    usage = Scripted(19, 10)
    deployment_name = "gpt-4o"

    def deployment(self) -> dict[str, Any]:
        return {"name": self.name, "provider": self.provider, "model": self.model,
                "base_url": self.url, "api_key": "azure-test-key",
                "options": {"deployment": self.deployment_name, "api_version": "2024-10-21"}}

    def push_text(self, text: str, *, stream: bool) -> None:
        if stream:
            self.fake.push(fake_azure.Reply(chunks=fake_azure.text_stream(pieces(text))))
        else:
            self.fake.push(fake_azure.Reply(body=fake_azure.completion(text)))

    def push_tool_calls(self, calls: list[Call], *, stream: bool, text: str = "") -> None:
        if stream:
            chunks = fake_azure.tool_stream(
                [(cid, name, split_json(args)) for cid, name, args in self.with_ids(calls)])
            said = [fake_azure.chunk({"content": p}) for p in pieces(text)] if text else []
            self.fake.push(fake_azure.Reply(chunks=[*chunks[:2], *said, *chunks[2:]]))
        else:
            self.fake.push(fake_azure.Reply(body=fake_azure.completion(text or None, tool_calls=[
                (cid, name, orjson.dumps(args).decode())
                for cid, name, args in self.with_ids(calls)])))

    def error_body(self) -> Any:
        return fake_azure.error_body(
            "429", "Requests to the ChatCompletions_Create Operation under Azure OpenAI "
            "API version 2024-10-21 have exceeded token rate limit of your current "
            "OpenAI S0 pricing tier. Please retry after 1 second.")

    def push_error(self) -> None:
        self.fake.push(fake_azure.Reply(status=429, body=self.error_body(),
                                        headers={"retry-after": "1"}))

    def push_error_event_first(self) -> None:
        self.fake.push(fake_azure.Reply(chunks=[
            fake_azure.prompt_filter_chunk(),
            fake_azure.chunk({"role": "assistant", "content": ""}),
            fake_azure.error_body("429", "Rate limit is exceeded.", status=429)]))

    def push_broken_stream(self, text: str, *, dropped: bool) -> None:
        chunks = fake_azure.text_stream(pieces(text))
        if dropped:
            self.fake.push(fake_azure.Reply(chunks=chunks, drop_after=4))
        else:
            self.fake.push(fake_azure.Reply(chunks=[*chunks[:4], fake_azure.error_body(
                "server_error", "The server had an error while processing your request.")]))

    def tool_results_sent(self, answered: list[Answered], said: str = "") -> None:
        received = self.fake.requests[-1]
        assert received.path == f"/openai/deployments/{self.deployment_name}/chat/completions"
        assert received.query["api-version"] == "2024-10-21"
        assert received.headers["api-key"] == "azure-test-key"
        _openai_tool_history(received.body["messages"], answered, said)

    def image_sent(self) -> None:
        _openai_image(self.last_body()["messages"])


class MistralVendor(Vendor):
    name = "mistral"
    provider = "mistral"
    model = "mistral-small-latest"
    usage = Scripted(16, 8)
    call_id_prefix = "D681PevK"  # Mistral ids are nine letters and digits

    def deployment(self) -> dict[str, Any]:
        return {"name": self.name, "provider": self.provider, "model": self.model,
                "base_url": self.url + "/v1", "api_key": "mistral-test-key"}

    def push_text(self, text: str, *, stream: bool) -> None:
        if stream:
            self.fake.push(fake_mistral.Reply(chunks=fake_mistral.text_stream(pieces(text))))
        else:
            self.fake.push(fake_mistral.Reply(body=fake_mistral.completion(text)))

    def push_tool_calls(self, calls: list[Call], *, stream: bool, text: str = "") -> None:
        wire = [(cid, name, orjson.dumps(args).decode())
                for cid, name, args in self.with_ids(calls)]
        if stream:
            chunks = fake_mistral.tool_stream(wire)
            said = [fake_mistral.chunk({"content": p}) for p in pieces(text)] if text else []
            self.fake.push(fake_mistral.Reply(chunks=[chunks[0], *said, *chunks[1:]]))
        else:
            self.fake.push(fake_mistral.Reply(body=fake_mistral.completion(text,
                                                                           tool_calls=wire)))

    def error_body(self) -> Any:
        return fake_mistral.error_body("Requests rate limit exceeded", "rate_limited", "1300")

    def push_error(self) -> None:
        self.fake.push(fake_mistral.Reply(status=429, body=self.error_body()))

    def push_error_event_first(self) -> None:
        self.fake.push(fake_mistral.Reply(chunks=[
            fake_mistral.chunk({"role": "assistant", "content": ""}),
            fake_mistral.error_body("Requests rate limit exceeded", "rate_limited")]))

    def push_broken_stream(self, text: str, *, dropped: bool) -> None:
        chunks = fake_mistral.text_stream(pieces(text))
        if dropped:
            self.fake.push(fake_mistral.Reply(chunks=chunks, drop_after=3))
        else:
            self.fake.push(fake_mistral.Reply(chunks=[*chunks[:3], fake_mistral.error_body(
                "Service unavailable.", "service_unavailable", "3000")]))

    def tool_results_sent(self, answered: list[Answered], said: str = "") -> None:
        _openai_tool_history(self.last_body()["messages"], answered, said)

    def image_sent(self) -> None:
        _openai_image(self.last_body()["messages"])


# ---------------------------------------------------------------- native formats


class AnthropicVendor(Vendor):
    name = "anthropic"
    provider = "anthropic"
    model = "claude-haiku-4-5"
    usage = Scripted(12, 6)
    call_id_prefix = "toolu_01A09q90qw90lq917835lq"

    def deployment(self) -> dict[str, Any]:
        return {"name": self.name, "provider": self.provider, "model": self.model,
                "base_url": self.url, "api_key": "sk-ant-test",
                "options": {"default_max_tokens": 512}}

    def push_text(self, text: str, *, stream: bool) -> None:
        if stream:
            self.fake.push(fake_anthropic.Reply(events=fake_anthropic.text_stream(pieces(text))))
        else:
            self.fake.push(fake_anthropic.Reply(body=fake_anthropic.message(text)))

    def push_tool_calls(self, calls: list[Call], *, stream: bool, text: str = "") -> None:
        if stream:
            blocks = fake_anthropic.text_block(0, pieces(text)) if text else []
            first = 1 if text else 0
            blocks += [event for index, (cid, name, args)
                       in enumerate(self.with_ids(calls), start=first)
                       for event in fake_anthropic.tool_block(index, cid, name, split_json(args))]
            self.fake.push(fake_anthropic.Reply(events=[
                fake_anthropic.message_start(), *blocks,
                *fake_anthropic.message_end("tool_use", 21)]))
        else:
            self.fake.push(fake_anthropic.Reply(body=fake_anthropic.message(
                text or None, tool_uses=self.with_ids(calls))))

    def error_body(self) -> Any:
        return fake_anthropic.error_body(
            "rate_limit_error",
            "This request would exceed the rate limit for your organization of 50 input "
            "tokens per minute.")

    def push_error(self) -> None:
        self.fake.push(fake_anthropic.Reply(status=429, body=self.error_body(),
                                            headers={"retry-after": "1"}))

    def push_error_event_first(self) -> None:
        self.fake.push(fake_anthropic.Reply(events=[
            fake_anthropic.message_start(), {"type": "ping"},
            fake_anthropic.stream_error_event("api_error", "Internal server error")]))

    def push_broken_stream(self, text: str, *, dropped: bool) -> None:
        events = fake_anthropic.text_stream(pieces(text))
        if dropped:
            self.fake.push(fake_anthropic.Reply(events=events, drop_after=5))
        else:
            self.fake.push(fake_anthropic.Reply(
                events=[*events[:5], fake_anthropic.stream_error_event()]))

    def tool_results_sent(self, answered: list[Answered], said: str = "") -> None:
        received = self.fake.requests[-1]
        assert received.headers["x-api-key"] == "sk-ant-test"
        assert received.headers["anthropic-version"]
        messages = received.body["messages"]
        assert messages[-2] == {"role": "assistant", "content": [
            *([{"type": "text", "text": said}] if said else []),
            *({"type": "tool_use", "id": a.id, "name": a.name, "input": a.args}
              for a in answered)]}
        # every result of one assistant turn goes back in one user turn
        assert messages[-1] == {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": a.id,
             "content": [{"type": "text", "text": a.result}]} for a in answered]}

    def image_sent(self) -> None:
        content = self.last_body()["messages"][-1]["content"]
        assert {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                            "data": PNG_B64}} in content

    def tools_sent(self, tools: list[dict[str, Any]], forced: str) -> None:
        body = self.last_body()
        assert body["tools"] == [
            {"name": t["function"]["name"], "description": t["function"]["description"],
             "input_schema": t["function"]["parameters"]} for t in tools]
        assert body["tool_choice"] == {"type": "tool", "name": forced}

    def sampling_sent(self) -> None:
        body = self.last_body()
        # Anthropic's temperature range is 0..1
        assert (body["temperature"], body["top_p"], body["max_tokens"],
                body["stop_sequences"]) == (1.0, 0.9, 64, ["END"])


class BedrockVendor(Vendor):
    name = "bedrock"
    provider = "bedrock"
    model = "anthropic.claude-3-haiku-20240307-v1:0"
    usage = Scripted(12, 7)
    call_id_prefix = "tooluse_kZJMlvQmRJ6eAyJE5GIl7"

    def deployment(self) -> dict[str, Any]:
        return {"name": self.name, "provider": self.provider, "model": self.model,
                "options": {"endpoint_url": self.url, "region": AWS_REGION}}

    def push_text(self, text: str, *, stream: bool) -> None:
        self.fake.push(fake_bedrock.Turn(text=text, usage={
            "inputTokens": self.usage.prompt, "outputTokens": self.usage.completion,
            "totalTokens": self.usage.prompt + self.usage.completion}))

    def push_tool_calls(self, calls: list[Call], *, stream: bool, text: str = "") -> None:
        self.fake.push(fake_bedrock.Turn(text=text, tool_calls=self.with_ids(calls)))

    def error_body(self) -> Any:
        return {"message": "Too many requests, please wait before trying again."}

    def push_error(self) -> None:
        self.fake.push(fake_bedrock.Failure(429, "ThrottlingException",
                                            self.error_body()["message"]))

    def push_error_event_first(self) -> None:
        # after messageStart, before any content
        self.fake.push(fake_bedrock.Turn(text="never sent", exception_after=1,
                                         exception=("throttlingException", "Too many tokens")))

    def push_broken_stream(self, text: str, *, dropped: bool) -> None:
        if dropped:
            self.fake.push(fake_bedrock.Turn(text=text, drop_after=2))
        else:
            self.fake.push(fake_bedrock.Turn(text=text, exception_after=2))

    def signed(self) -> bool:
        return fake_bedrock.signature_ok(self.fake.requests[-1], AWS_SECRET_KEY, AWS_REGION)

    def tool_results_sent(self, answered: list[Answered], said: str = "") -> None:
        assert self.signed()
        messages = self.last_body()["messages"]
        assert messages[-2] == {"role": "assistant", "content": [
            *([{"text": said}] if said else []),
            *({"toolUse": {"toolUseId": a.id, "name": a.name, "input": a.args}}
              for a in answered)]}
        assert messages[-1] == {"role": "user", "content": [
            {"toolResult": {"toolUseId": a.id, "content": [{"text": a.result}],
                            "status": "success"}} for a in answered]}

    def image_sent(self) -> None:
        content = self.last_body()["messages"][-1]["content"]
        assert {"image": {"format": "png", "source": {"bytes": PNG_B64}}} in content

    def tools_sent(self, tools: list[dict[str, Any]], forced: str) -> None:
        assert self.last_body()["toolConfig"] == {
            "tools": [{"toolSpec": {"name": t["function"]["name"],
                                    "description": t["function"]["description"],
                                    "inputSchema": {"json": t["function"]["parameters"]}}}
                      for t in tools],
            "toolChoice": {"tool": {"name": forced}}}

    def sampling_sent(self) -> None:
        # Converse's inferenceConfig.temperature is limited to 0..1 (botocore's model)
        assert self.last_body()["inferenceConfig"] == {
            "maxTokens": 64, "temperature": 1.0, "topP": 0.9, "stopSequences": ["END"]}


class VertexVendor(Vendor):
    name = "vertex"
    provider = "vertex"
    model = "gemini-2.0-flash"
    usage = Scripted(11, 6)
    call_id_prefix = None  # Gemini calls carry no id; tako names them

    def __init__(self, fake: Any, url: str, credentials_file: Path) -> None:
        super().__init__(fake, url)
        self.credentials_file = credentials_file

    def deployment(self) -> dict[str, Any]:
        return {"name": self.name, "provider": self.provider, "model": self.model,
                "base_url": self.url,
                "options": {"credentials_file": str(self.credentials_file),
                            "project": VERTEX_PROJECT, "location": VERTEX_LOCATION}}

    def push_text(self, text: str, *, stream: bool) -> None:
        self.fake.push(fake_vertex.Turn(text=text))

    def push_tool_calls(self, calls: list[Call], *, stream: bool, text: str = "") -> None:
        self.fake.push(fake_vertex.Turn(text=text, tool_calls=list(calls),
                                        response_id="resp-e2e"))

    def error_body(self) -> Any:
        return fake_vertex.error_body(
            429, "RESOURCE_EXHAUSTED",
            "Quota exceeded for aiplatform.googleapis.com/generate_content_requests_per_"
            "minute_per_project_per_base_model with base model: gemini-2.0-flash.")

    def push_error(self) -> None:
        error = self.error_body()["error"]
        self.fake.push(fake_vertex.Failure(error["code"], error["status"], error["message"]))

    def push_error_event_first(self) -> None:
        self.fake.push(fake_vertex.Turn(text="never sent", error_after=0,
                                        error=(503, "UNAVAILABLE", "Model overloaded.")))

    def push_broken_stream(self, text: str, *, dropped: bool) -> None:
        if dropped:
            self.fake.push(fake_vertex.Turn(text=text, drop_after=1))
        else:
            self.fake.push(fake_vertex.Turn(text=text, error_after=1))

    def tool_results_sent(self, answered: list[Answered], said: str = "") -> None:
        received = self.fake.requests[-1]
        assert (received.project, received.location, received.model) == (
            VERTEX_PROJECT, VERTEX_LOCATION, self.model)
        assert received.headers["authorization"].startswith("Bearer ya29.fake-")
        contents = received.body["contents"]
        assert contents[-2] == {"role": "model", "parts": [
            *([{"text": said}] if said else []),
            *({"functionCall": {"name": a.name, "args": a.args}} for a in answered)]}
        assert contents[-1] == {"role": "user", "parts": [
            {"functionResponse": {"name": a.name, "response": {"content": a.result}}}
            for a in answered]}

    def image_sent(self) -> None:
        parts = self.last_body()["contents"][-1]["parts"]
        assert {"inlineData": {"mimeType": "image/png", "data": PNG_B64}} in parts

    def tools_sent(self, tools: list[dict[str, Any]], forced: str) -> None:
        body = self.last_body()
        assert body["tools"] == [{"functionDeclarations": [
            {"name": t["function"]["name"], "description": t["function"]["description"],
             "parameters": t["function"]["parameters"]} for t in tools]}]
        assert body["toolConfig"] == {"functionCallingConfig": {
            "mode": "ANY", "allowedFunctionNames": [forced]}}

    def sampling_sent(self) -> None:
        assert self.last_body()["generationConfig"] == {
            "temperature": 1.5, "topP": 0.9, "maxOutputTokens": 64, "stopSequences": ["END"]}


class OllamaVendor(Vendor):
    name = "ollama"
    provider = "ollama"
    model = "llama3.2"
    usage = Scripted(26, 12)
    call_id_prefix = None  # Ollama calls carry no id; tako derives one
    error_status = 500

    def deployment(self) -> dict[str, Any]:
        return {"name": self.name, "provider": self.provider, "model": self.model,
                "base_url": self.url, "price": OLLAMA_PRICE}

    def push_text(self, text: str, *, stream: bool) -> None:
        self.fake.push(fake_ollama.text(*pieces(text), prompt=self.usage.prompt,
                                        completion=self.usage.completion))

    def push_tool_calls(self, calls: list[Call], *, stream: bool, text: str = "") -> None:
        self.fake.push(fake_ollama.tool_calls(*calls, content=text))

    def error_body(self) -> Any:
        return {"error": "llama runner process has terminated: signal: killed"}

    def push_error(self) -> None:
        self.fake.push(fake_ollama.error(500, self.error_body()["error"]))

    def push_error_event_first(self) -> None:
        self.fake.push(fake_ollama.Reply(lines=[{"error": "model is loading"}]))

    def push_broken_stream(self, text: str, *, dropped: bool) -> None:
        reply = fake_ollama.text(*pieces(text))
        if dropped:
            reply.drop_after = 2
        else:
            reply.lines = [
                {"model": self.model, "created_at": fake_ollama.CREATED_AT, "done": False,
                 "message": {"role": "assistant", "content": piece}}
                for piece in pieces(text)[:2]
            ] + [{"error": "an error was encountered while running the model: unexpected EOF"}]
        self.fake.push(reply)

    def tool_results_sent(self, answered: list[Answered], said: str = "") -> None:
        messages = self.last_body()["messages"]
        assistant = messages[-1 - len(answered)]
        assert assistant["role"] == "assistant" and assistant["content"] == said
        assert assistant["tool_calls"] == [
            {"function": {"name": a.name, "arguments": a.args}} for a in answered]
        assert messages[-len(answered):] == [
            {"role": "tool", "content": a.result, "tool_name": a.name} for a in answered]

    def image_sent(self) -> None:
        assert self.last_body()["messages"][-1]["images"] == [PNG_B64]

    def tools_sent(self, tools: list[dict[str, Any]], forced: str) -> None:
        # Ollama has no tool_choice: the tools are offered, the choice is the model's
        assert self.last_body()["tools"] == tools

    def sampling_sent(self) -> None:
        options = self.last_body()["options"]
        assert {k: options.get(k) for k in ("temperature", "top_p", "num_predict", "stop")} == {
            "temperature": 1.5, "top_p": 0.9, "num_predict": 64, "stop": ["END"]}


def serve_vendors(stack: ExitStack, workdir: Path) -> dict[str, Vendor]:
    """Serve every vendor fake on loopback (closed with ``stack``); the vendors by name."""

    def serve(app: Any) -> str:
        return stack.enter_context(serve_asgi(app))

    vendors: list[Vendor] = []
    for cls in (OpenAIVendor, GenericVendor):
        openai_app, openai_fake = fake_openai.make_app()
        vendors.append(cls(openai_fake, serve(openai_app)))
    azure_app, azure_fake = fake_azure.make_app()
    vendors.append(AzureVendor(azure_fake, serve(azure_app)))
    mistral_app, mistral_fake = fake_mistral.make_app()
    vendors.append(MistralVendor(mistral_fake, serve(mistral_app)))
    anthropic_app, anthropic_fake = fake_anthropic.make_app()
    vendors.append(AnthropicVendor(anthropic_fake, serve(anthropic_app)))
    bedrock_app, bedrock_fake = fake_bedrock.make_app()
    vendors.append(BedrockVendor(bedrock_fake, serve(bedrock_app)))
    vertex_app, vertex_fake = fake_vertex.make_app()
    vertex_url = serve(vertex_app)
    credentials = vertex_fake.service_account_file(workdir / "vertex-sa.json", vertex_url,
                                                   VERTEX_PROJECT)
    vendors.append(VertexVendor(vertex_fake, vertex_url, credentials))
    ollama_app, ollama_fake = fake_ollama.make_app()
    vendors.append(OllamaVendor(ollama_fake, serve(ollama_app)))
    return {v.name: v for v in vendors}


def aws_env(workdir: Path) -> dict[str, str]:
    """Static AWS credentials for the gateway process, isolated from any real AWS setup."""
    missing = str(workdir / "no-such-aws-file")
    return {"AWS_ACCESS_KEY_ID": AWS_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": AWS_SECRET_KEY,
            "AWS_SHARED_CREDENTIALS_FILE": missing, "AWS_CONFIG_FILE": missing,
            "AWS_EC2_METADATA_DISABLED": "true"}


def names() -> Iterator[str]:
    yield from ("openai", "http-generic", "azure-openai", "mistral", "anthropic", "bedrock",
                "vertex", "ollama")


@contextmanager
def vendor_gateway(vendors: dict[str, Vendor], workdir: Path) -> Iterator[Gateway]:
    """A real ``tako serve`` with one deployment per served vendor: one attempt per
    deployment, and no breaker opening or 429 cool-down on the failures tests script."""
    config = basic_config()
    config["deployments"] = [v.deployment() for v in vendors.values()]
    config["profiles"] = []
    config["runtime"] = {"retry": {"max_attempts": 1},
                         "breaker": {"failure_threshold": 100, "cool_down_on_429": False}}
    with gateway(config, env=aws_env(workdir)) as served:
        yield served
