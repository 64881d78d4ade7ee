"""``POST /v1/messages`` over every vendor: the anthropic SDK talks to a real ``tako serve``
with one deployment per vendor, each served by that vendor's loopback fake in its own wire
format. Per vendor a Messages call plain and streamed, and a tool round trip plain and
streamed; for Anthropic deployments, ``cache_control`` and thinking blocks go through
unchanged, and for Bedrock Claude they map onto Converse's fields."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import anthropic
import httpx
import orjson
import pytest
from anthropic.types import ErrorResponse, Message, RawMessageStreamEvent
from pydantic import TypeAdapter

from tests.fakes import anthropic as fake_anthropic
from tests.fakes import bedrock as fake_bedrock
from tests.support.gateway import TEST_KEY, Gateway
from tests.support.openai_schema import validate_chunk
from tests.support.vendors import (
    PNG_B64,
    Answered,
    AnthropicVendor,
    Call,
    Vendor,
    names,
    serve_vendors,
    vendor_gateway,
)

EVENT = TypeAdapter(RawMessageStreamEvent)
WEATHER = {"name": "get_weather", "description": "Current weather for a city",
           "input_schema": {"type": "object", "properties": {
               "city": {"type": "string"}, "unit": {"type": "string"}}, "required": ["city"]}}
PARIS: Call = ("get_weather", {"city": "Paris", "unit": "celsius"})
TOKYO: Call = ("get_weather", {"city": "Tokyo", "unit": "kelvin"})


@pytest.fixture(scope="module")
def vendors(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Vendor]]:
    with ExitStack() as stack:
        yield serve_vendors(stack, tmp_path_factory.mktemp("vendors"))


@pytest.fixture(scope="module")
def gw(vendors: dict[str, Vendor], tmp_path_factory: pytest.TempPathFactory
       ) -> Iterator[Gateway]:
    with vendor_gateway(vendors, tmp_path_factory.mktemp("aws")) as g:
        yield g


@pytest.fixture(params=list(names()))
def vendor(request: pytest.FixtureRequest, vendors: dict[str, Vendor]) -> Vendor:
    chosen = vendors[request.param]
    chosen.reset()
    return chosen


@pytest.fixture
def client(gw: Gateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=TEST_KEY, max_retries=0)


def raw_events(gw: Gateway, body: dict[str, Any]) -> list[dict[str, Any]]:
    with httpx.stream("POST", gw.url + "/v1/messages", json={**body, "stream": True},
                      headers={"x-api-key": TEST_KEY}, timeout=10) as response:
        assert response.status_code == 200, response.read()
        return [orjson.loads(line[6:]) for line in response.iter_lines()
                if line.startswith("data: ")]


def test_message_plain(vendor: Vendor, client: anthropic.Anthropic) -> None:
    text = f"Paris is the capital of France, says {vendor.name}."
    vendor.push_text(text, stream=False)
    raw = client.messages.with_raw_response.create(
        model=vendor.name, max_tokens=64, system="Answer in one sentence.",
        messages=[{"role": "user", "content": "What is the capital of France?"}])
    Message.model_validate(orjson.loads(raw.http_response.content))
    assert raw.headers["x-tako-deployment"] == vendor.name
    message = raw.parse()
    assert [(b.type, getattr(b, "text", None)) for b in message.content] == [("text", text)]
    assert message.stop_reason == "end_turn"
    scripted = vendor.usage
    assert message.usage.input_tokens + (message.usage.cache_read_input_tokens or 0) == (
        scripted.prompt)
    assert message.usage.output_tokens == scripted.completion


def test_message_streamed(vendor: Vendor, client: anthropic.Anthropic, gw: Gateway) -> None:
    text = f"Streaming through {vendor.name} word by word."
    request = {"model": vendor.name, "max_tokens": 64,
               "messages": [{"role": "user", "content": "Say something."}]}
    vendor.push_text(text, stream=True)
    events = [EVENT.validate_python(e) for e in raw_events(gw, request)]
    assert events[0].type == "message_start" and events[-1].type == "message_stop"
    assert "".join(e.delta.text for e in events if e.type == "content_block_delta") == text
    assert events[-2].usage.output_tokens == vendor.usage.completion

    vendor.push_text(text, stream=True)
    with client.messages.stream(**request) as stream:
        assert "".join(stream.text_stream) == text
        final = stream.get_final_message()
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == vendor.usage.completion


def _results(message: Message) -> tuple[list[Answered], list[dict[str, Any]]]:
    uses = [b for b in message.content if b.type == "tool_use"]
    answered = [Answered(u.id, u.name, dict(u.input), f"sunny, {20 + i}C")
                for i, u in enumerate(uses)]
    return answered, [{"type": "tool_result", "tool_use_id": a.id, "content": a.result}
                      for a in answered]


@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "streamed"])
def test_tool_round_trip(vendor: Vendor, client: anthropic.Anthropic, streamed: bool) -> None:
    said = "Let me look that up."
    question = {"role": "user", "content": "What's the weather in Paris and Tokyo?"}
    vendor.push_tool_calls([PARIS, TOKYO], stream=streamed, text=said)
    request: dict[str, Any] = {"model": vendor.name, "max_tokens": 256, "tools": [WEATHER],
                               "messages": [question]}
    if streamed:
        with client.messages.stream(**request) as stream:
            first = stream.get_final_message()
    else:
        first = client.messages.create(**request)
    assert first.stop_reason == "tool_use"
    assert [(b.type, getattr(b, "text", None)) for b in first.content][0] == ("text", said)
    assert [(b.name, b.input) for b in first.content if b.type == "tool_use"] == [
        PARIS, TOKYO]
    answered, results = _results(first)
    assert len({a.id for a in answered}) == 2 and all(a.id for a in answered)

    vendor.push_text("Sunny in both.", stream=False)
    history = [question, {"role": "assistant", "content": [
        b.model_dump(exclude_none=True, include={"type", "text", "id", "name", "input"})
        for b in first.content]}, {"role": "user", "content": results}]
    second = client.messages.create(model=vendor.name, max_tokens=256, tools=[WEATHER],
                                    messages=history)
    vendor.tool_results_sent(answered, said)
    assert second.content[0].type == "text" and second.content[0].text == "Sunny in both."


def test_image_block_reaches_the_vendor(vendor: Vendor, client: anthropic.Anthropic) -> None:
    vendor.push_text("A tiny image.", stream=False)
    client.messages.create(model=vendor.name, max_tokens=64, messages=[{"role": "user",
        "content": [{"type": "text", "text": "What is this?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                 "data": PNG_B64}}]}])
    vendor.image_sent()


def test_vendor_error_mid_stream_is_an_error_event(vendor: Vendor, gw: Gateway) -> None:
    vendor.push_broken_stream("one two three four five six seven eight", dropped=False)
    events = raw_events(gw, {"model": vendor.name, "max_tokens": 64,
                             "messages": [{"role": "user", "content": "count"}]})
    assert events[0]["type"] == "message_start"
    assert events[-1]["type"] == "error"
    ErrorResponse.model_validate(events[-1])
    assert "message_stop" not in [e["type"] for e in events]


@pytest.fixture
def claude(vendors: dict[str, Vendor]) -> AnthropicVendor:
    chosen = vendors["anthropic"]
    assert isinstance(chosen, AnthropicVendor)
    chosen.reset()
    return chosen


def test_cache_control_and_thinking_pass_through(claude: AnthropicVendor,
                                                 client: anthropic.Anthropic) -> None:
    thinking = {"type": "thinking", "thinking": "The user asks about Paris.",
                "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"}
    answer = fake_anthropic.message("It is sunny.")
    answer["content"].insert(0, thinking)
    claude.fake.push(fake_anthropic.Reply(body=answer))
    ephemeral = {"type": "ephemeral"}
    message = client.messages.create(
        model="anthropic", max_tokens=2048,
        thinking={"type": "enabled", "budget_tokens": 1024},
        system=[{"type": "text", "text": "You know the weather.", "cache_control": ephemeral}],
        tools=[{**WEATHER, "cache_control": ephemeral}],
        messages=[{"role": "user", "content": [
            {"type": "text", "text": "Weather in Paris?", "cache_control": ephemeral}]}])
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[0].model_dump(exclude_none=True) == thinking
    sent = claude.last_body()
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assert sent["system"] == [{"type": "text", "text": "You know the weather.",
                               "cache_control": ephemeral}]
    assert sent["tools"][0]["cache_control"] == ephemeral
    assert sent["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "Weather in Paris?", "cache_control": ephemeral}]}]

    # the signed thinking block goes back unchanged, first in its turn
    claude.fake.push(fake_anthropic.Reply(body=fake_anthropic.message("Still sunny.")))
    client.messages.create(model="anthropic", max_tokens=2048,
                           thinking={"type": "enabled", "budget_tokens": 1024},
                           messages=[{"role": "user", "content": "Weather in Paris?"},
                                     {"role": "assistant", "content": [
                                         thinking, {"type": "text", "text": "It is sunny."}]},
                                     {"role": "user", "content": "And tomorrow?"}])
    assert claude.last_body()["messages"][1] == {"role": "assistant", "content": [
        thinking, {"type": "text", "text": "It is sunny."}]}



def test_anthropic_only_fields_stay_away_from_other_vendors(
        vendors: dict[str, Vendor], client: anthropic.Anthropic) -> None:
    """An OpenAI-compatible vendor is sent unknown fields as they come, and refuses them:
    thinking, top_k, cache_control and earlier thinking blocks are not sent there."""
    openai_vendor = vendors["openai"]
    openai_vendor.reset()
    openai_vendor.push_text("Fine.", stream=False)
    ephemeral = {"type": "ephemeral"}
    client.messages.create(
        model="openai", max_tokens=2048, extra_body={"top_k": 5},
        thinking={"type": "enabled", "budget_tokens": 1024},
        system=[{"type": "text", "text": "Be brief.", "cache_control": ephemeral}],
        tools=[{**WEATHER, "cache_control": ephemeral}],
        messages=[{"role": "user", "content": "Hi"},
                  {"role": "assistant", "content": [
                      {"type": "thinking", "thinking": "hm", "signature": "sig"},
                      {"type": "text", "text": "Hello."}]},
                  {"role": "user", "content": [
                      {"type": "text", "text": "Weather?", "cache_control": ephemeral}]}])
    sent = openai_vendor.last_body()
    assert not {"top_k", "thinking", "service_tier"} & sent.keys()
    assert b"cache_control" not in orjson.dumps(sent)
    assert b"thinking" not in orjson.dumps(sent)
    assert sent["messages"][-1]["content"] == [{"type": "text", "text": "Weather?"}]



def test_count_tokens_asks_anthropic(claude: AnthropicVendor, vendors: dict[str, Vendor],
                                     client: anthropic.Anthropic, gw: Gateway) -> None:
    """An Anthropic deployment answers count_tokens with the vendor's own count (sent the
    translated request, no max_tokens); other vendors with tako's estimate."""
    claude.fake.counts.clear()
    counted = client.messages.count_tokens(
        model="anthropic", system="Be brief.", tools=[WEATHER],
        messages=[{"role": "user", "content": "Weather in Paris?"}])
    assert counted.input_tokens == claude.fake.counted_tokens
    (sent,) = claude.fake.counts
    assert sent.headers["x-api-key"] == "sk-ant-test"
    assert sent.body["model"] == claude.model and sent.body["system"] == "Be brief."
    assert sent.body["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "Weather in Paris?"}]}]
    assert sent.body["tools"][0]["name"] == "get_weather"
    assert "max_tokens" not in sent.body and "stream" not in sent.body
    seen = len(vendors["openai"].fake.requests)
    estimated = httpx.post(gw.url + "/v1/messages/count_tokens", timeout=10,
                           headers={"x-api-key": TEST_KEY},
                           json={"model": "openai", "messages": [
                               {"role": "user", "content": "Weather in Paris?"}]})
    assert estimated.headers["x-tako-token-count"] == "estimate"
    assert 0 < estimated.json()["input_tokens"] != claude.fake.counted_tokens
    assert len(vendors["openai"].fake.requests) == seen  # nothing ran there



def test_streamed_thinking_passes_through(claude: AnthropicVendor,
                                          client: anthropic.Anthropic, gw: Gateway) -> None:
    thinking = [
        {"type": "content_block_start", "index": 0,
         "content_block": {"type": "thinking", "thinking": "", "signature": ""}},
        {"type": "content_block_delta", "index": 0,
         "delta": {"type": "thinking_delta", "thinking": "The user wants "}},
        {"type": "content_block_delta", "index": 0,
         "delta": {"type": "thinking_delta", "thinking": "the weather."}},
        {"type": "content_block_delta", "index": 0,
         "delta": {"type": "signature_delta", "signature": "EqQBCgIYAhIMsig"}},
        {"type": "content_block_stop", "index": 0}]
    claude.fake.push(fake_anthropic.Reply(events=[
        fake_anthropic.message_start(), *thinking,
        *fake_anthropic.text_block(1, ["It is ", "sunny."]),
        *fake_anthropic.message_end("end_turn", 30)]))
    with client.messages.stream(model="anthropic", max_tokens=2048,
                                thinking={"type": "enabled", "budget_tokens": 1024},
                                messages=[{"role": "user", "content": "Weather?"}]) as stream:
        kinds = [e.type for e in stream if e.type in ("thinking", "signature", "text")]
        final = stream.get_final_message()
    assert kinds[:3] == ["thinking", "thinking", "signature"] and "text" in kinds
    assert [b.type for b in final.content] == ["thinking", "text"]
    block = final.content[0]
    assert block.type == "thinking"
    assert (block.thinking, block.signature) == ("The user wants the weather.",
                                                 "EqQBCgIYAhIMsig")
    assert final.content[1].type == "text" and final.content[1].text == "It is sunny."
    assert claude.last_body()["thinking"] == {"type": "enabled", "budget_tokens": 1024}


    # over chat the same stream is text only, every chunk still OpenAI's
    claude.fake.push(fake_anthropic.Reply(events=[
        fake_anthropic.message_start(), *thinking,
        *fake_anthropic.text_block(1, ["It is ", "sunny."]),
        *fake_anthropic.message_end("end_turn", 30)]))
    with httpx.stream("POST", gw.base_url + "/chat/completions", timeout=10,
                      headers={"authorization": f"Bearer {TEST_KEY}"},
                      json={"model": "anthropic", "stream": True,
                            "thinking": {"type": "enabled", "budget_tokens": 1024},
                            "messages": [{"role": "user", "content": "Weather?"}]}) as chat:
        payloads = [line[6:] for line in chat.iter_lines() if line.startswith("data: ")]
    assert payloads[-1] == "[DONE]"
    chunks = [orjson.loads(p) for p in payloads[:-1]]
    for chunk in chunks:
        validate_chunk(chunk)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks
                   if c["choices"]) == "It is sunny."


BEDROCK_THOUGHT = ("The user wants the weather.", "EqQBCgIYAhIMbedrock")


def test_bedrock_claude_takes_anthropic_fields(vendors: dict[str, Vendor],
                                               client: anthropic.Anthropic) -> None:
    """A Claude model on Bedrock: thinking and top_k go in additionalModelRequestFields,
    earlier thinking blocks back as reasoningContent, cache_control as a cachePoint after
    its block; the answer's reasoningContent comes back as a thinking block."""
    bedrock = vendors["bedrock"]
    bedrock.reset()
    bedrock.fake.push(fake_bedrock.Turn(text="It is sunny.", reasoning=BEDROCK_THOUGHT))
    ephemeral = {"type": "ephemeral"}
    message = client.messages.create(
        model="bedrock", max_tokens=2048, extra_body={"top_k": 5},
        thinking={"type": "enabled", "budget_tokens": 1024},
        system=[{"type": "text", "text": "Be brief.", "cache_control": ephemeral}],
        tools=[{**WEATHER, "cache_control": ephemeral}],
        messages=[{"role": "user", "content": "Hi"},
                  {"role": "assistant", "content": [
                      {"type": "thinking", "thinking": "hm", "signature": "sig"},
                      {"type": "text", "text": "Hello."}]},
                  {"role": "user", "content": [
                      {"type": "text", "text": "Weather?", "cache_control": ephemeral}]}])
    sent = bedrock.last_body()
    assert sent["additionalModelRequestFields"] == {
        "top_k": 5, "thinking": {"type": "enabled", "budget_tokens": 1024}}
    assert sent["messages"][1]["content"] == [
        {"reasoningContent": {"reasoningText": {"text": "hm", "signature": "sig"}}},
        {"text": "Hello."}]
    assert sent["messages"][2]["content"] == [{"text": "Weather?"},
                                              {"cachePoint": {"type": "default"}}]
    assert sent["system"] == [{"text": "Be brief."}, {"cachePoint": {"type": "default"}}]
    assert [list(tool) for tool in sent["toolConfig"]["tools"]] == [["toolSpec"],
                                                                    ["cachePoint"]]
    assert b"cache_control" not in orjson.dumps(sent)
    assert [b.type for b in message.content] == ["thinking", "text"]
    block = message.content[0]
    assert block.type == "thinking"
    assert (block.thinking, block.signature) == BEDROCK_THOUGHT


def test_bedrock_claude_streams_thinking(vendors: dict[str, Vendor],
                                         client: anthropic.Anthropic, gw: Gateway) -> None:
    """ConverseStream's reasoningContent deltas become thinking and signature deltas."""
    bedrock = vendors["bedrock"]
    bedrock.reset()
    turn = fake_bedrock.Turn(text="It is sunny.", reasoning=BEDROCK_THOUGHT)
    bedrock.fake.push(turn)
    request = {"model": "bedrock", "max_tokens": 2048,
               "thinking": {"type": "enabled", "budget_tokens": 1024},
               "messages": [{"role": "user", "content": "Weather?"}]}
    for raw in raw_events(gw, request):
        EVENT.validate_python(raw)
    bedrock.fake.push(turn)
    with client.messages.stream(**request) as stream:  # type: ignore[arg-type]
        kinds = [e.type for e in stream if e.type in ("thinking", "signature", "text")]
        final = stream.get_final_message()
    assert kinds[0] == "thinking" and "signature" in kinds and kinds[-1] == "text"
    assert [b.type for b in final.content] == ["thinking", "text"]
    block = final.content[0]
    assert block.type == "thinking"
    assert (block.thinking, block.signature) == BEDROCK_THOUGHT
    assert final.content[1].type == "text" and final.content[1].text == "It is sunny."
    assert bedrock.last_body()["additionalModelRequestFields"] == {
        "thinking": {"type": "enabled", "budget_tokens": 1024}}


# last: a vendor's 429 cools its deployment for a second
def test_vendor_error_keeps_its_status(vendor: Vendor, client: anthropic.Anthropic) -> None:
    vendor.push_error()
    with pytest.raises(anthropic.APIStatusError) as caught:
        client.messages.create(model=vendor.name, max_tokens=64,
                               messages=[{"role": "user", "content": "hi"}])
    response = caught.value.response
    # a vendor's 429 stays a 429; its 5xx is tako's 502 (a bad gateway)
    assert response.status_code == (429 if vendor.error_status == 429 else 502)
    error = ErrorResponse.model_validate(response.json())
    assert f"provider {vendor.name}" in error.error.message
