"""Every vendor adapter end to end: the official openai SDK talks to a real ``tako serve``
process with one deployment per vendor, and each deployment talks to that vendor's loopback
fake in the vendor's own wire format (Anthropic Messages, Bedrock Converse event streams
signed with SigV4, Vertex Gemini with service-account tokens, Ollama NDJSON, Azure,
Mistral, OpenAI and an OpenAI-compatible server)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import openai
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.gateway import TEST_KEY, Gateway
from tests.support.openai_schema import validate_chunk, validate_completion, validate_error
from tests.support.vendors import (
    PNG_DATA_URL,
    SAMPLING,
    Answered,
    BedrockVendor,
    Call,
    Vendor,
    VertexVendor,
    names,
    serve_vendors,
    vendor_gateway,
)

VENDORS = list(names())
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "kelvin"]},
        "days": {"type": "integer"}}, "required": ["city"]}}}]


@pytest.fixture(scope="module")
def vendors(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Vendor]]:
    with ExitStack() as stack:
        yield serve_vendors(stack, tmp_path_factory.mktemp("vendors"))


@pytest.fixture(scope="module")
def gw(vendors: dict[str, Vendor], tmp_path_factory: pytest.TempPathFactory
       ) -> Iterator[Gateway]:
    with vendor_gateway(vendors, tmp_path_factory.mktemp("aws")) as g:
        yield g


@pytest.fixture(params=VENDORS)
def vendor(request: pytest.FixtureRequest, vendors: dict[str, Vendor]) -> Vendor:
    chosen = vendors[request.param]
    chosen.reset()
    return chosen


@pytest.fixture
def client(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=TEST_KEY, max_retries=0)


def cost_total(gw: Gateway, model: str) -> float:
    text = httpx.get(gw.url + "/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "tako_cost_usd_total" and sample.labels.get("model") == model:
                return float(sample.value)
    return 0.0


def sse_frames(gw: Gateway, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The raw ``data:`` payloads of a streamed answer, each checked against OpenAI's
    chunk schema; the stream must end with ``[DONE]``."""
    with httpx.stream("POST", gw.base_url + "/chat/completions", json=body, timeout=10,
                      headers={"authorization": f"Bearer {TEST_KEY}"}) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        payloads = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert payloads[-1] == "[DONE]"
    frames = [orjson.loads(p) for p in payloads[:-1]]
    for frame in frames:
        validate_chunk(frame)
    return frames


def test_chat_non_streaming(vendor: Vendor, client: openai.OpenAI, gw: Gateway) -> None:
    text = f"Paris is the capital of France, says {vendor.name}."
    vendor.push_text(text, stream=False)
    spent_before = cost_total(gw, vendor.name)
    raw = client.chat.completions.with_raw_response.create(
        model=vendor.name, max_tokens=64, temperature=0.3,
        messages=[{"role": "system", "content": "Answer in one sentence."},
                  {"role": "user", "content": "What is the capital of France?"}])
    validate_completion(orjson.loads(raw.content))
    assert raw.headers["x-tako-deployment"] == vendor.name
    completion = raw.parse()
    assert completion.model == vendor.name
    assert completion.choices[0].message.content == text
    assert completion.choices[0].finish_reason == "stop"
    usage = completion.usage
    assert usage is not None
    scripted = vendor.usage
    assert (usage.prompt_tokens, usage.completion_tokens) == (scripted.prompt,
                                                              scripted.completion)
    assert usage.total_tokens == scripted.prompt + scripted.completion
    assert usage.prompt_tokens_details and (
        usage.prompt_tokens_details.cached_tokens == scripted.cached)
    spent = cost_total(gw, vendor.name) - spent_before
    expected = vendor.price().cost(scripted.prompt, scripted.completion, scripted.cached)
    assert expected > 0
    assert spent == pytest.approx(expected, rel=1e-6)
    if isinstance(vendor, BedrockVendor):
        assert vendor.signed()
    if isinstance(vendor, VertexVendor):
        assert vendor.fake.requests[-1].headers["authorization"][7:] in vendor.fake.issued


def test_chat_streaming(vendor: Vendor, client: openai.OpenAI, gw: Gateway) -> None:
    text = f"Streaming through {vendor.name} word by word."
    request = {"model": vendor.name, "stream": True,
               "stream_options": {"include_usage": True},
               "messages": [{"role": "user", "content": "Say something."}]}
    vendor.push_text(text, stream=True)
    spent_before = cost_total(gw, vendor.name)
    frames = sse_frames(gw, request)
    assert frames[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(f["choices"][0]["delta"].get("content") or "" for f in frames
                   if f["choices"]) == text
    assert frames[-1]["choices"] == []
    scripted = vendor.usage
    assert frames[-1]["usage"]["prompt_tokens"] == scripted.prompt
    assert frames[-1]["usage"]["completion_tokens"] == scripted.completion
    assert frames[-1]["usage"]["prompt_tokens_details"]["cached_tokens"] == scripted.cached
    # the stream's spend is settled once the stream closes
    expected = vendor.price().cost(scripted.prompt, scripted.completion, scripted.cached)
    deadline = time.monotonic() + 3
    while (spent := cost_total(gw, vendor.name) - spent_before) < expected * 0.999:
        assert time.monotonic() < deadline, (spent, expected)
        time.sleep(0.02)
    assert spent == pytest.approx(expected, rel=1e-6)

    vendor.push_text(text, stream=True)
    chunks = list(client.chat.completions.create(**request))
    deltas = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert len([d for d in deltas if d]) > 1, "the answer should arrive in several deltas"
    assert "".join(deltas) == text
    finishes = [c.choices[0].finish_reason for c in chunks
                if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == vendor.usage.prompt + vendor.usage.completion


PARIS: Call = ("get_weather", {"city": "Paris", "unit": "celsius"})
TOKYO: Call = ("get_weather", {"city": "Tokyo", "unit": "kelvin", "days": 2})
# (text the model says before calling, the calls)
CALLS: dict[str, tuple[str, list[Call]]] = {
    "one_call": ("", [PARIS]),
    "parallel_calls": ("", [PARIS, TOKYO]),
    "text_then_calls": ("Let me look that up.", [PARIS, TOKYO]),
}


@pytest.mark.parametrize("script", list(CALLS.values()), ids=list(CALLS))
def test_client_side_tool_call_round_trip(vendor: Vendor, client: openai.OpenAI,
                                          script: tuple[str, list[Call]]) -> None:
    said, calls = script
    messages: list[Any] = [{"role": "user", "content": "What's the weather in Paris?"}]
    vendor.push_tool_calls(calls, stream=False, text=said)
    raw = client.chat.completions.with_raw_response.create(
        model=vendor.name, messages=messages, tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}})
    vendor.tools_sent(TOOLS, forced="get_weather")
    validate_completion(orjson.loads(raw.content))
    first = raw.parse()
    assert first.choices[0].finish_reason == "tool_calls"
    assert (first.choices[0].message.content or "") == said
    got = first.choices[0].message.tool_calls or []
    assert [(c.type, c.function.name, orjson.loads(c.function.arguments)) for c in got] == [
        ("function", name, args) for name, args in calls]
    ids = [c.id for c in got]
    assert all(ids) and len(set(ids)) == len(ids)
    assert vendor.call_ids(len(calls)) in (None, ids)

    answered = [Answered(c.id, c.function.name, orjson.loads(c.function.arguments),
                         f"sunny, {20 + i}C") for i, c in enumerate(got)]
    messages += [first.choices[0].message.model_dump(exclude_none=True),
                 *({"role": "tool", "tool_call_id": a.id, "content": a.result}
                   for a in answered)]
    vendor.push_text("It is sunny.", stream=False)
    second = client.chat.completions.create(model=vendor.name, messages=messages, tools=TOOLS)
    assert second.choices[0].message.content == "It is sunny."
    vendor.tool_results_sent(answered, said)


@pytest.mark.parametrize("script", list(CALLS.values()), ids=list(CALLS))
def test_streamed_tool_calls_reassemble(vendor: Vendor, client: openai.OpenAI, gw: Gateway,
                                        script: tuple[str, list[Call]]) -> None:
    said, calls = script
    request = {"model": vendor.name, "stream": True, "tools": TOOLS,
               "messages": [{"role": "user", "content": "Weather in Paris and Tokyo?"}]}
    vendor.push_tool_calls(calls, stream=True, text=said)
    frames = sse_frames(gw, request)
    assert any(f["choices"] and f["choices"][0]["delta"].get("tool_calls") for f in frames)

    vendor.push_tool_calls(calls, stream=True, text=said)
    assembled: dict[int, dict[str, str]] = {}
    finish = None
    content = ""
    for chunk in client.chat.completions.create(**request):
        if not chunk.choices:
            continue
        content += chunk.choices[0].delta.content or ""
        for tc in chunk.choices[0].delta.tool_calls or ():
            entry = assembled.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
            entry["id"] += tc.id or ""
            if tc.function:
                entry["name"] += tc.function.name or ""
                entry["arguments"] += tc.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert content == said
    assert sorted(assembled) == list(range(len(calls))), "tool call indexes count from 0"
    got = [assembled[i] for i in range(len(calls))]
    assert [(c["name"], orjson.loads(c["arguments"])) for c in got] == calls
    ids = [c["id"] for c in got]
    assert all(ids) and len(set(ids)) == len(ids)
    assert vendor.call_ids(len(calls)) in (None, ids)


def test_image_data_url_reaches_the_vendor(vendor: Vendor, client: openai.OpenAI) -> None:
    vendor.push_text("A tiny black square.", stream=False)
    answer = client.chat.completions.create(model=vendor.name, messages=[
        {"role": "user", "content": [
            {"type": "text", "text": "What is in this picture?"},
            {"type": "image_url", "image_url": {"url": PNG_DATA_URL}}]}])
    assert answer.choices[0].message.content == "A tiny black square."
    vendor.image_sent()


def test_sampling_fields_reach_the_vendor_in_its_names(vendor: Vendor,
                                                       client: openai.OpenAI) -> None:
    vendor.push_text("Sampled.", stream=False)
    answer = client.chat.completions.create(
        model=vendor.name, messages=[{"role": "user", "content": "Be creative."}], **SAMPLING)
    assert answer.choices[0].message.content == "Sampled."
    vendor.sampling_sent()


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_vendor_error_surfaces_with_vendor_status(vendor: Vendor, client: openai.OpenAI,
                                                 gw: Gateway, stream: bool) -> None:
    vendor.push_error()
    with pytest.raises(openai.APIStatusError) as info:
        answer = client.chat.completions.create(
            model=vendor.name, stream=stream, messages=[{"role": "user", "content": "hello"}])
        if stream:
            list(answer)  # type: ignore[arg-type]
    error = info.value
    if vendor.error_status == 429:
        assert isinstance(error, openai.RateLimitError)
        assert error.status_code == 429
    else:
        assert isinstance(error, openai.InternalServerError)
        assert error.status_code == 502
    body = error.body
    assert isinstance(body, dict)
    assert body["details"]["status"] == vendor.error_status
    assert body["details"]["provider"] == vendor.name
    assert f"provider {vendor.name}" in body["message"]
    validate_error(orjson.loads(error.response.content))
    assert len(vendor.fake.requests) == 1, "one attempt per deployment in this gateway"


@pytest.mark.parametrize("dropped", [False, True], ids=["vendor_error_event", "dropped"])
def test_failure_mid_stream_ends_with_error_frame(vendor: Vendor, client: openai.OpenAI,
                                                  gw: Gateway, dropped: bool) -> None:
    text = "one two three four five six seven eight"
    request = {"model": vendor.name, "stream": True,
               "messages": [{"role": "user", "content": "Count to eight."}]}
    vendor.push_broken_stream(text, dropped=dropped)
    with httpx.stream("POST", gw.base_url + "/chat/completions", json=request, timeout=10,
                      headers={"authorization": f"Bearer {TEST_KEY}"}) as response:
        assert response.status_code == 200
        payloads = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert payloads[-1] == "[DONE]"
    error = orjson.loads(payloads[-2])
    validate_error(error)
    details = error["error"].get("details") or {}
    assert details.get("provider") == vendor.name
    if dropped:
        assert error["error"]["code"] == "upstream_connection_error"
    else:
        assert details["status"] >= 500 and details["body"], "the vendor's error is kept"
    chunks = [orjson.loads(p) for p in payloads[:-2]]
    for chunk in chunks:
        validate_chunk(chunk)
    received = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert received and text.startswith(received) and received != text
    assert not any(c["choices"][0]["finish_reason"] for c in chunks)

    vendor.push_broken_stream(text, dropped=dropped)
    seen = ""
    with pytest.raises(openai.APIError):
        for chunk in client.chat.completions.create(**request):
            seen += chunk.choices[0].delta.content or "" if chunk.choices else ""
    assert seen == received
