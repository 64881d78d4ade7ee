"""``POST /v1/responses`` and the stored-response routes end to end: the official ``openai``
SDK and the OpenAI Agents SDK talk to a real ``tako serve`` (echo deployments, the
``echo-tools`` profile); every body and streamed event is checked against OpenAI's
published schema."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.gateway import TEST_KEY, Gateway, gateway
from tests.support.openai_schema import validate, validate_error
from tests.support.responses_api import (
    CAPPED_KEY,
    LIMITED_KEY,
    OTHER_TENANT_KEY,
    responses_config,
    stream_events,
)

WEATHER = {"type": "function", "name": "get_weather", "description": "Current weather",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"]}}
TEXT_EVENTS = ["response.created", "response.in_progress", "response.output_item.added",
               "response.content_part.added", "response.output_text.delta",
               "response.output_text.done", "response.content_part.done",
               "response.output_item.done", "response.completed"]


@pytest.fixture(scope="module")
def gw() -> Iterator[Gateway]:
    with gateway(responses_config()) as g:
        yield g


@pytest.fixture
def client(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=TEST_KEY, max_retries=0)


def post(gw: Gateway, body: Any, key: str = TEST_KEY) -> httpx.Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return httpx.post(gw.base_url + "/responses", content=content, timeout=10,
                      headers={"authorization": f"Bearer {key}",
                               "content-type": "application/json"})


def metric(gw: Gateway, name: str, **labels: str) -> float:
    text = httpx.get(gw.url + "/metrics", timeout=5).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


# ---- create, retrieve, delete ----


def test_create_answers_with_the_spec_response(client: openai.OpenAI) -> None:
    raw = client.responses.with_raw_response.create(
        model="echo", input="What is the capital of France?", instructions="Be brief.",
        metadata={"ticket": "T-1"}, max_output_tokens=64, temperature=0.2, top_p=0.9)
    body = orjson.loads(raw.content)
    validate("Response", body)
    assert raw.headers["x-tako-deployment"] == "echo"
    response = raw.parse()
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.status == "completed" and response.model == "echo"
    assert response.output_text == "echo: What is the capital of France?"
    assert response.instructions == "Be brief." and response.metadata == {"ticket": "T-1"}
    assert (response.temperature, response.top_p, response.max_output_tokens) == (0.2, 0.9, 64)
    usage = response.usage
    assert usage is not None and usage.input_tokens > 0 and usage.output_tokens > 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.input_tokens_details.cached_tokens == 0
    assert body["usage"]["cost_usd"] > 0
    # stored by default: retrieve gives the same object back
    assert client.responses.retrieve(response.id).model_dump(mode="json") == \
        response.model_dump(mode="json")


def test_input_items_in_and_out(client: openai.OpenAI, gw: Gateway) -> None:
    response = client.responses.create(model="echo", input=[
        {"role": "developer", "content": "Answer plainly."},
        {"type": "message", "role": "user",
         "content": [{"type": "input_text", "text": "first"},
                     {"type": "input_text", "text": " second"}]}])
    assert response.output_text == "echo: first second"
    raw = httpx.get(f"{gw.base_url}/responses/{response.id}/input_items", timeout=5,
                    headers={"authorization": f"Bearer {TEST_KEY}"})
    validate("ResponseItemList", raw.json())
    listed = client.responses.input_items.list(response.id, order="asc")
    assert [i.role for i in listed.data] == ["developer", "user"]  # type: ignore[union-attr]
    newest_first = client.responses.input_items.list(response.id)
    assert [i.id for i in newest_first.data] == [i.id for i in reversed(listed.data)]


def test_delete_forgets_the_response(client: openai.OpenAI) -> None:
    response = client.responses.create(model="echo", input="forget me")
    client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(response.id)


def test_store_false_keeps_nothing(client: openai.OpenAI, gw: Gateway) -> None:
    response = client.responses.create(model="echo", input="do not keep", store=False)
    assert response.store is False and response.output_text == "echo: do not keep"
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.create(model="echo", input="more", previous_response_id=response.id)
    validate_error(caught.value.response.json())
    streamed = stream_events(gw, {"model": "echo", "input": "not kept", "store": False})
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(streamed[0]["response"]["id"])


def test_another_tenant_gets_404(client: openai.OpenAI, gw: Gateway) -> None:
    response = client.responses.create(model="echo", input="acme's secret")
    other = openai.OpenAI(base_url=gw.base_url, api_key=OTHER_TENANT_KEY, max_retries=0)
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.input_items.list(response.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.create(model="echo", input="x", previous_response_id=response.id)
    assert client.responses.retrieve(response.id).output_text == "echo: acme's secret"


def test_previous_response_id_continues_the_conversation(client: openai.OpenAI) -> None:
    first = client.responses.create(model="echo", input="one two three four five six")
    fresh = client.responses.create(model="echo", input="next", store=False)
    second = client.responses.create(model="echo", input="next", previous_response_id=first.id)
    assert second.previous_response_id == first.id
    assert second.output_text == "echo: next"
    assert first.usage and second.usage and fresh.usage
    # the earlier turn (input and answer) was sent again
    assert second.usage.input_tokens > fresh.usage.input_tokens + first.usage.output_tokens
    third = client.responses.create(model="echo", input="again", previous_response_id=second.id)
    assert third.usage and third.usage.input_tokens > second.usage.input_tokens


# ---- streaming ----


def test_stream_sends_the_full_event_sequence(gw: Gateway, client: openai.OpenAI) -> None:
    events = stream_events(gw, {"model": "echo", "input": "stream these four words"})
    kinds = [e["type"] for e in events]
    deltas = kinds.count("response.output_text.delta")
    assert deltas >= 2
    assert kinds == TEXT_EVENTS[:4] + ["response.output_text.delta"] * deltas + TEXT_EVENTS[5:]
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == "echo: stream these four words"
    done = events[-1]["response"]
    assert done["status"] == "completed" and done["output"][0]["content"][0]["text"] == text
    assert done["usage"]["output_tokens"] > 0
    # what the stream completed is what was stored
    stored = httpx.get(f"{gw.base_url}/responses/{done['id']}", timeout=5,
                       headers={"authorization": f"Bearer {TEST_KEY}"}).json()
    assert stored == done


def test_sdk_stream(client: openai.OpenAI) -> None:
    with client.responses.stream(model="echo", input="hello stream") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text == "echo: hello stream"
    assert client.responses.retrieve(final.id).output_text == final.output_text


def test_streamed_function_call_arguments(gw: Gateway) -> None:
    events = stream_events(gw, {"model": "echo", "input": "get_weather: Paris",
                                "tools": [WEATHER]})
    kinds = [e["type"] for e in events]
    assert kinds[:3] == ["response.created", "response.in_progress",
                         "response.output_item.added"]
    assert kinds[-3:] == ["response.function_call_arguments.done",
                          "response.output_item.done", "response.completed"]
    arguments = "".join(e["delta"] for e in events
                        if e["type"] == "response.function_call_arguments.delta")
    assert orjson.loads(arguments) == {"city": "Paris"}
    item = events[-2]["item"]
    assert item["type"] == "function_call" and item["name"] == "get_weather"
    assert item["arguments"] == arguments and item["call_id"]
    assert events[-1]["response"]["output"] == [item]


# ---- tools ----


@pytest.mark.parametrize("stream", [False, True])
def test_function_tool_round_trip(client: openai.OpenAI, stream: bool) -> None:
    def create(**kw: Any) -> Any:
        if not stream:
            return client.responses.create(model="echo", tools=[WEATHER], **kw)
        with client.responses.stream(model="echo", tools=[WEATHER], **kw) as s:
            for _ in s:
                pass
            return s.get_final_response()

    asked = create(input="get_weather: Lyon", tool_choice="auto")
    calls = [o for o in asked.output if o.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    assert orjson.loads(calls[0].arguments) == {"city": "Lyon"}
    # the result back, continuing the stored conversation
    answered = create(previous_response_id=asked.id, input=[
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": "18C, sunny"}])
    assert answered.output_text == "tool get_weather returned: 18C, sunny"
    # and with the whole conversation sent again, nothing stored
    again = create(store=False, input=[
        {"role": "user", "content": "get_weather: Lyon"},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather",
         "arguments": '{"city": "Lyon"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "19C"}])
    assert again.output_text == "tool get_weather returned: 19C"


def test_tool_choice_forces_a_function(client: openai.OpenAI) -> None:
    response = client.responses.create(model="echo", input="anything", tools=[WEATHER],
                                       tool_choice={"type": "function", "name": "get_weather"})
    assert [o.type for o in response.output] == ["function_call"]
    none = client.responses.create(model="echo", input="get_weather: Oslo", tools=[WEATHER],
                                   tool_choice="none")
    assert none.output_text == "echo: get_weather: Oslo"


def test_profile_answers_with_its_server_side_tools(client: openai.OpenAI, gw: Gateway) -> None:
    response = client.responses.create(model="echo-tools", input="calculator: 6*7")
    assert response.output_text == "tool calculator returned: 42"
    validate("Response", orjson.loads(post(gw, {"model": "echo-tools",
                                                "input": "calculator: 1+1"}).content))
    # orchestration events are opt-in; the SDK passes over them
    events = stream_events(gw, {"model": "echo-tools", "input": "calculator: 2+3",
                                "tako": {"events": True}}, skip=("tako.event",))
    kinds = [e["type"] for e in events]
    assert "tako.event" in kinds and kinds[-1] == "response.completed"
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == \
        "tool calculator returned: 5"
    plain = stream_events(gw, {"model": "echo-tools", "input": "calculator: 2+3"})
    assert "tako.event" not in [e["type"] for e in plain]
    with client.responses.stream(model="echo-tools", input="calculator: 3*3",
                                 extra_body={"tako": {"events": True}}) as stream:
        for _ in stream:
            pass
        assert stream.get_final_response().output_text == "tool calculator returned: 9"


# ---- refusals ----


def test_budget_refusal_is_429_and_charges_nothing(gw: Gateway) -> None:
    spent = metric(gw, "tako_cost_usd_total")
    capped = openai.OpenAI(base_url=gw.base_url, api_key=CAPPED_KEY, max_retries=0)
    for stream in (False, True):
        with pytest.raises(openai.RateLimitError) as caught:
            if stream:
                with capped.responses.stream(model="echo", input="too dear"):
                    pass
            else:
                capped.responses.create(model="echo", input="too dear")
        validate_error(caught.value.response.json())
        assert caught.value.response.headers["x-should-retry"] == "false"
    assert metric(gw, "tako_cost_usd_total") == spent


def test_rate_limit_refusal_is_429(gw: Gateway) -> None:
    limited = openai.OpenAI(base_url=gw.base_url, api_key=LIMITED_KEY, max_retries=0)
    assert limited.responses.create(model="echo", input="once").output_text == "echo: once"
    spent = metric(gw, "tako_cost_usd_total")
    with pytest.raises(openai.RateLimitError) as caught:
        limited.responses.create(model="echo", input="twice")
    validate_error(caught.value.response.json())
    assert caught.value.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert metric(gw, "tako_cost_usd_total") == spent


@pytest.mark.parametrize(("body", "status", "param"), [
    (b"{not json", 400, None),
    ({"input": "no model"}, 400, "model"),
    ({"model": "echo"}, 400, "input"),
    ({"model": "echo", "input": 42}, 400, "input"),
    ({"model": "echo", "input": [{"type": "item_reference", "id": "x"}]}, 400, "input[0].type"),
    ({"model": "echo", "input": [{"role": "robot", "content": "hi"}]}, 400, "input[0].role"),
    ({"model": "echo", "input": [{"role": "user", "content": [
        {"type": "input_image", "file_id": "file-1"}]}]}, 400, "input[0].content"),
    ({"model": "echo", "input": "x", "tools": [{"type": "web_search"}]}, 400, "tools[0].type"),
    ({"model": "echo", "input": "x", "tools": [WEATHER],
      "tool_choice": {"type": "function", "name": "nope"}}, 400, None),
    ({"model": "echo", "input": "x", "temperature": 3}, 400, "temperature"),
    ({"model": "echo", "input": "x", "background": True}, 400, "background"),
    ({"model": "echo", "input": "x", "text": {"format": {"type": "yaml"}}}, 400,
     "text.format.type"),
    ({"model": "echo", "input": "x", "metadata": {"k": "v" * 600}}, 400, "metadata"),
    ({"model": "no-such-model", "input": "x"}, 404, "model"),
])
def test_bad_requests_get_openai_errors(gw: Gateway, body: Any, status: int,
                                        param: str | None) -> None:
    spent = metric(gw, "tako_cost_usd_total")
    response = post(gw, body)
    assert response.status_code == status, response.text
    validate_error(response.json())
    if param is not None:
        assert response.json()["error"]["param"] == param
    assert metric(gw, "tako_cost_usd_total") == spent


def test_unknown_response_ids_are_404(gw: Gateway) -> None:
    for method, path in (("GET", "/responses/resp_nope"), ("DELETE", "/responses/resp_nope"),
                         ("GET", "/responses/resp_nope/input_items")):
        response = httpx.request(method, gw.base_url + path, timeout=5,
                                 headers={"authorization": f"Bearer {TEST_KEY}"})
        assert response.status_code == 404
        validate_error(response.json())
    assert httpx.get(gw.base_url + "/responses/resp_nope", timeout=5).status_code == 401


# ---- the OpenAI Agents SDK ----


def test_agents_sdk_runs_a_function_tool(gw: Gateway) -> None:
    from agents import Agent, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled

    set_tracing_disabled(True)
    seen: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """Current weather for a city."""
        seen.append(city)
        return f"sunny in {city}"

    async def run() -> Any:
        client = openai.AsyncOpenAI(base_url=gw.base_url, api_key=TEST_KEY, max_retries=0)
        model = OpenAIResponsesModel(model="echo", openai_client=client)
        agent = Agent(name="weather", instructions="Use the tool.", model=model,
                      tools=[get_weather])
        try:
            return await Runner.run(agent, "get_weather: Kyoto")
        finally:
            await client.close()

    result = asyncio.run(run())
    assert seen == ["Kyoto"]
    assert result.final_output == "tool get_weather returned: sunny in Kyoto"

    async def run_streamed() -> tuple[Any, list[str]]:
        client = openai.AsyncOpenAI(base_url=gw.base_url, api_key=TEST_KEY, max_retries=0)
        model = OpenAIResponsesModel(model="echo", openai_client=client)
        agent = Agent(name="weather", model=model, tools=[get_weather])
        try:
            streamed = Runner.run_streamed(agent, "get_weather: Nara")
            kinds = [e.data.type async for e in streamed.stream_events()
                     if e.type == "raw_response_event"]
            return streamed, kinds
        finally:
            await client.close()

    streamed, kinds = asyncio.run(run_streamed())
    assert seen == ["Kyoto", "Nara"]
    assert streamed.final_output == "tool get_weather returned: sunny in Nara"
    assert kinds.count("response.completed") == 2  # the call, then the answer
    assert "response.function_call_arguments.delta" in kinds
