"""``POST /v1/responses`` over every vendor adapter: the openai SDK talks to a real ``tako
serve`` with one deployment per vendor, each deployment to that vendor's loopback fake in
its own wire format. Text answers and tool round trips, streamed and not, with the usage the
vendor reported; what reaches the vendor (tool history, images, ``text.format``,
``reasoning``, an earlier turn); a vendor failing mid-stream."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import openai
import orjson
import pytest

from tests.support.gateway import TEST_KEY, Gateway
from tests.support.openai_schema import validate
from tests.support.responses_api import stream_events
from tests.support.vendors import (
    PNG_DATA_URL,
    Answered,
    Call,
    Vendor,
    names,
    serve_vendors,
    vendor_gateway,
)

VENDORS = list(names())
WEATHER = {"type": "function", "name": "get_weather", "description": "Current weather for a city",
           "parameters": {"type": "object", "properties": {
               "city": {"type": "string"}, "unit": {"type": "string",
                                                    "enum": ["celsius", "kelvin"]},
               "days": {"type": "integer"}}, "required": ["city"]}}
PARIS: Call = ("get_weather", {"city": "Paris", "unit": "celsius"})
TOKYO: Call = ("get_weather", {"city": "Tokyo", "unit": "kelvin", "days": 2})


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


def create(gw: Gateway, client: openai.OpenAI, stream: bool, **body: Any) -> dict[str, Any]:
    """The finished Response as JSON: from the body, or from a stream's last event (every
    event checked against the spec)."""
    if stream:
        events = stream_events(gw, body)
        assert events[-1]["type"] == "response.completed"
        return dict(events[-1]["response"])
    raw = client.responses.with_raw_response.create(**body)
    answer = orjson.loads(raw.content)
    validate("Response", answer)
    return dict(answer)


def output_text(response: dict[str, Any]) -> str:
    return "".join(part["text"] for item in response["output"] if item["type"] == "message"
                   for part in item["content"])


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_text_answer_with_the_vendors_usage(vendor: Vendor, gw: Gateway, client: openai.OpenAI,
                                            stream: bool) -> None:
    text = f"Paris is the capital of France, says {vendor.name}."
    vendor.push_text(text, stream=stream)
    response = create(gw, client, stream, model=vendor.name, instructions="One sentence.",
                      input="What is the capital of France?", max_output_tokens=64)
    assert response["status"] == "completed" and output_text(response) == text
    usage, scripted = response["usage"], vendor.usage
    assert (usage["input_tokens"], usage["output_tokens"]) == (scripted.prompt,
                                                               scripted.completion)
    assert usage["input_tokens_details"]["cached_tokens"] == scripted.cached
    assert usage["total_tokens"] == scripted.prompt + scripted.completion


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_tool_round_trip(vendor: Vendor, gw: Gateway, client: openai.OpenAI,
                         stream: bool) -> None:
    said = "Let me look that up."
    vendor.push_tool_calls([PARIS, TOKYO], stream=stream, text=said)
    asked = create(gw, client, stream, model=vendor.name, tools=[WEATHER],
                   input="Weather in Paris and Tokyo?")
    assert output_text(asked) == said
    calls = [item for item in asked["output"] if item["type"] == "function_call"]
    assert [(c["name"], orjson.loads(c["arguments"])) for c in calls] == [PARIS, TOKYO]
    ids = [c["call_id"] for c in calls]
    assert all(ids) and len(set(ids)) == 2
    assert vendor.call_ids(2) in (None, ids)

    answered = [Answered(c["call_id"], c["name"], orjson.loads(c["arguments"]),
                         f"sunny, {20 + i}C") for i, c in enumerate(calls)]
    vendor.push_text("It is sunny in both.", stream=stream)
    final = create(gw, client, stream, model=vendor.name, tools=[WEATHER],
                   previous_response_id=asked["id"],
                   input=[{"type": "function_call_output", "call_id": a.id, "output": a.result}
                          for a in answered])
    assert output_text(final) == "It is sunny in both."
    vendor.tool_results_sent(answered, said)


def test_image_input_reaches_the_vendor(vendor: Vendor, client: openai.OpenAI) -> None:
    vendor.push_text("A tiny black square.", stream=False)
    answer = client.responses.create(model=vendor.name, input=[{"role": "user", "content": [
        {"type": "input_text", "text": "What is in this picture?"},
        {"type": "input_image", "image_url": PNG_DATA_URL, "detail": "auto"}]}])
    assert answer.output_text == "A tiny black square."
    vendor.image_sent()


def test_openai_receives_format_reasoning_and_the_earlier_turn(
        vendors: dict[str, Vendor], client: openai.OpenAI) -> None:
    vendor = vendors["openai"]
    vendor.reset()
    vendor.push_text('{"city": "Paris"}', stream=False)
    schema = {"type": "object", "properties": {"city": {"type": "string"}},
              "required": ["city"], "additionalProperties": False}
    first = client.responses.create(
        model="openai", input="Which city?", reasoning={"effort": "low"},
        text={"format": {"type": "json_schema", "name": "city", "schema": schema,
                         "strict": True}})
    body = vendor.last_body()
    assert body["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "city", "schema": schema, "strict": True}}
    assert body["reasoning_effort"] == "low"
    assert first.text.format.type == "json_schema"  # type: ignore[union-attr]
    vendor.push_text("Lyon.", stream=False)
    client.responses.create(model="openai", input="And another?", instructions="Be brief.",
                            previous_response_id=first.id)
    assert vendor.last_body()["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Which city?"}]},
        {"role": "assistant", "content": '{"city": "Paris"}'},
        {"role": "user", "content": [{"type": "text", "text": "And another?"}]}]


@pytest.mark.parametrize("dropped", [False, True], ids=["vendor_error_event", "dropped"])
def test_failure_mid_stream_sends_error_and_failed(vendor: Vendor, gw: Gateway,
                                                  client: openai.OpenAI, dropped: bool) -> None:
    text = "one two three four five six seven eight"
    vendor.push_broken_stream(text, dropped=dropped)
    events = stream_events(gw, {"model": vendor.name, "input": "Count to eight."})
    kinds = [e["type"] for e in events]
    assert kinds[-2:] == ["error", "response.failed"]
    assert "response.completed" not in kinds
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and failed["error"]["message"]
    received = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert received and text.startswith(received) and received != text
    with pytest.raises(openai.NotFoundError):  # a failed response is not kept
        client.responses.retrieve(failed["id"])
