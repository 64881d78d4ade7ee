"""One conformance suite for every vendor adapter: each runs in process over real HTTP on
loopback against the fake that speaks its vendor's wire format (``tests/support/vendors``),
and keeps the same promises: chat with usage and cost, streamed text with usage, tool
calls plain and streamed, vendor errors with their status and body, and the stream
contract of docs/architecture.md, section 3, under every kind of failure."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import ExitStack
from typing import Any

import orjson
import pytest

from tako.core.errors import TakoError, UpstreamTransient
from tako.core.protocols import LlmProvider
from tako.core.specs import DeploymentSpec
from tako.core.types import ChatChunk, ChatRequest, ChunkError, Delta, End, Usage
from tako.providers.base import StreamOutcome, keep_stream_contract
from tako.providers.registry import build
from tests.support.net import free_port
from tests.support.providers import WEATHER_TOOL, tool_calls_by_index
from tests.support.vendors import Call, Vendor, aws_env, names, serve_vendors

VENDORS = list(names())


@pytest.fixture(scope="module")
def vendors(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Vendor]]:
    workdir = tmp_path_factory.mktemp("vendors")
    with ExitStack() as stack, pytest.MonkeyPatch.context() as env:
        for name, value in aws_env(workdir).items():
            env.setenv(name, value)
        env.delenv("AWS_SESSION_TOKEN", raising=False)
        env.delenv("AWS_PROFILE", raising=False)
        yield serve_vendors(stack, workdir)


@pytest.fixture(params=VENDORS)
def vendor(request: pytest.FixtureRequest, vendors: dict[str, Vendor]) -> Vendor:
    chosen = vendors[request.param]
    chosen.reset()
    return chosen


@pytest.fixture
async def provider(vendor: Vendor) -> AsyncIterator[LlmProvider]:
    built = build(DeploymentSpec(**vendor.deployment()))
    try:
        yield built
    finally:
        await built.aclose()


def chat(vendor: Vendor, text: str = "Say something.", **fields: Any) -> ChatRequest:
    return ChatRequest.model_validate({"model": vendor.name, "messages": [
        {"role": "user", "content": text}], **fields})


async def drain(provider: LlmProvider, req: ChatRequest) -> list[ChatChunk]:
    return [item async for item in provider.stream(req)]


def assert_contract(items: list[ChatChunk], *, failed: bool) -> str:
    """``items`` keep the stream contract: Deltas, then at most one ChunkError (only after
    a Delta, and only when ``failed``), then exactly one End, with nothing after it.
    Returns the text the Deltas carried."""
    assert items and isinstance(items[-1], End), items
    assert sum(isinstance(i, End) for i in items) == 1
    errors = [i for i in items if isinstance(i, ChunkError)]
    assert len(errors) == (1 if failed else 0), items
    body = items[:-2] if failed else items[:-1]
    assert body and all(isinstance(i, Delta) for i in body), items
    assert all(i.content or i.tool_calls for i in body), "no empty deltas"
    if failed:
        assert isinstance(items[-2], ChunkError)
        assert items[-1].finish_reason == "error"
    return "".join(i.content or "" for i in body if isinstance(i, Delta))


def assert_priced(usage: Usage, vendor: Vendor) -> None:
    scripted = vendor.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens) == (
        scripted.prompt, scripted.completion, scripted.cached)
    expected = vendor.price().cost(scripted.prompt, scripted.completion, scripted.cached)
    assert expected > 0
    assert usage.cost_usd == pytest.approx(expected, rel=1e-9)


# ---------------------------------------------------------------- answers


async def test_chat_with_usage_and_cost(vendor: Vendor, provider: LlmProvider) -> None:
    text = f"Paris is the capital of France, says {vendor.name}."
    vendor.push_text(text, stream=False)
    answer = await provider.chat(chat(vendor, "What is the capital of France?"))
    assert answer.content == text
    assert answer.finish_reason == "stop"
    assert answer.provider_id == vendor.name
    assert_priced(answer.usage, vendor)


async def test_streamed_text_with_usage(vendor: Vendor, provider: LlmProvider) -> None:
    text = f"Streaming through {vendor.name} word by word."
    vendor.push_text(text, stream=True)
    items = await drain(provider, chat(vendor))
    assert assert_contract(items, failed=False) == text
    assert len(items) > 2, "the answer arrives in several deltas"
    end = items[-1]
    assert isinstance(end, End) and end.finish_reason == "stop"
    assert_priced(end.usage, vendor)


PARIS: Call = ("get_weather", {"city": "Paris", "unit": "celsius"})
TOKYO: Call = ("get_weather", {"city": "Tokyo", "unit": "kelvin", "days": 2})
# (text the model says before calling, the calls)
CALLS: dict[str, tuple[str, list[Call]]] = {
    "one_call": ("", [PARIS]),
    "parallel_calls": ("", [PARIS, TOKYO]),
    "text_then_calls": ("Let me look that up.", [PARIS, TOKYO]),
}


def assert_calls(vendor: Vendor, got: list[tuple[str, str, str]], calls: list[Call]) -> None:
    """``got`` (id, name, arguments) are the scripted ``calls``, with distinct ids: the
    vendor's own where it gives them."""
    assert [(name, orjson.loads(arguments)) for _, name, arguments in got] == calls
    ids = [call_id for call_id, _, _ in got]
    assert all(ids) and len(set(ids)) == len(ids)
    assert vendor.call_ids(len(calls)) in (None, ids)


@pytest.mark.parametrize("script", list(CALLS.values()), ids=list(CALLS))
async def test_tool_calls(vendor: Vendor, provider: LlmProvider,
                          script: tuple[str, list[Call]]) -> None:
    said, calls = script
    vendor.push_tool_calls(calls, stream=False, text=said)
    answer = await provider.chat(chat(vendor, "Weather in Paris?", tools=[WEATHER_TOOL]))
    assert answer.finish_reason == "tool_calls"
    assert (answer.content or "") == said
    assert_calls(vendor, [(c.id, c.function.name, c.function.arguments)
                          for c in answer.tool_calls or ()], calls)


@pytest.mark.parametrize("script", list(CALLS.values()), ids=list(CALLS))
async def test_streamed_tool_calls_reassemble(vendor: Vendor, provider: LlmProvider,
                                              script: tuple[str, list[Call]]) -> None:
    said, calls = script
    vendor.push_tool_calls(calls, stream=True, text=said)
    items = await drain(provider, chat(vendor, "Weather in Paris?", tools=[WEATHER_TOOL]))
    assert assert_contract(items, failed=False) == said
    end = items[-1]
    assert isinstance(end, End) and end.finish_reason == "tool_calls"
    assembled = tool_calls_by_index(items)
    assert sorted(assembled) == list(range(len(calls))), "tool call indexes count from 0"
    assert_calls(vendor, [(c["id"], c["name"], c["arguments"])
                          for _, c in sorted(assembled.items())], calls)


# ---------------------------------------------------------------- errors


def assert_vendor_error_kept(error: TakoError, vendor: Vendor) -> None:
    assert error.details is not None
    assert error.details["provider"] == vendor.name
    assert error.details["status"] == vendor.error_status
    assert error.details["body"] == vendor.error_body()
    assert error.message.startswith(f"provider {vendor.name} ")
    assert error.retryable


async def test_vendor_error_keeps_status_and_body(vendor: Vendor,
                                                  provider: LlmProvider) -> None:
    vendor.push_error()
    with pytest.raises(TakoError) as answered:
        await provider.chat(chat(vendor))
    assert_vendor_error_kept(answered.value, vendor)

    vendor.push_error()
    with pytest.raises(type(answered.value)) as streamed:
        await drain(provider, chat(vendor))
    assert_vendor_error_kept(streamed.value, vendor)


async def test_unreachable_vendor_fails_before_the_first_chunk(vendor: Vendor) -> None:
    deployment = vendor.deployment()
    dead = f"http://127.0.0.1:{free_port()}"
    if "endpoint_url" in deployment.get("options", {}):
        deployment["options"] = {**deployment["options"], "endpoint_url": dead}
    else:
        deployment["base_url"] = dead + deployment["base_url"].removeprefix(vendor.url)
    unreachable = build(DeploymentSpec(**deployment))
    try:
        with pytest.raises(UpstreamTransient) as answered:
            await unreachable.chat(chat(vendor))
        with pytest.raises(UpstreamTransient) as streamed:
            await drain(unreachable, chat(vendor))
    finally:
        await unreachable.aclose()
    for caught in (answered, streamed):
        assert caught.value.code == "upstream_connection_error" and caught.value.retryable
        assert caught.value.message.startswith(f"provider {vendor.name} connection failed")
    assert vendor.fake.requests == []


# ---------------------------------------------------------------- the stream contract

BEFORE_FIRST_CHUNK = ["error_status", "error_event_first"]
MID_STREAM = ["error_event_mid", "dropped_mid"]


@pytest.mark.parametrize("failure", BEFORE_FIRST_CHUNK + MID_STREAM)
async def test_stream_contract_under_failure(vendor: Vendor, provider: LlmProvider,
                                             failure: str) -> None:
    text = "one two three four five six seven eight"
    if failure == "error_status":
        vendor.push_error()
    elif failure == "error_event_first":
        vendor.push_error_event_first()
    else:
        vendor.push_broken_stream(text, dropped=failure == "dropped_mid")
    items: list[ChatChunk] = []
    if failure in BEFORE_FIRST_CHUNK:
        with pytest.raises(TakoError) as raised:
            async for item in provider.stream(chat(vendor, "Count to eight.")):
                items.append(item)
        assert items == [], "a failure before the first chunk raises, so fallbacks can act"
        assert raised.value.details and raised.value.details["status"] >= 400
        return
    async for item in provider.stream(chat(vendor, "Count to eight.")):
        items.append(item)
    received = assert_contract(items, failed=True)
    assert received and text.startswith(received) and received != text
    error = items[-2]
    assert isinstance(error, ChunkError) and error.error.details is not None
    assert error.error.details["provider"] == vendor.name
    if failure == "dropped_mid":
        assert error.error.code == "upstream_connection_error" and error.error.retryable
    else:
        assert error.error.details["status"] >= 500 and error.error.details["body"], (
            "the vendor's error is kept")


# ------------------------------------------------- the contract itself, without a vendor


async def contract_around(*steps: Delta | Exception, usage: Usage | None = None,
                          ) -> list[ChatChunk]:
    """What ``keep_stream_contract`` makes of a delta generator that goes through
    ``steps`` (yielding the Deltas, raising the first exception) and reports ``usage``
    up front."""

    async def deltas(outcome: StreamOutcome) -> AsyncGenerator[Delta, None]:
        outcome.usage = usage or Usage()
        outcome.finish_reason = "length"
        for step in steps:
            if isinstance(step, Exception):
                raise step
            yield step

    return [item async for item in keep_stream_contract("dep", deltas)]


async def test_contract_ends_with_the_reported_finish_and_usage() -> None:
    seen = Usage(prompt_tokens=7, completion_tokens=2, cost_usd=0.5)
    items = await contract_around(Delta(content="a"), Delta(content=""), Delta(content="b"),
                                  usage=seen)
    assert assert_contract(items, failed=False) == "ab"
    assert items[-1] == End("length", seen)


async def test_contract_after_a_failure_keeps_the_usage_seen_so_far() -> None:
    seen = Usage(prompt_tokens=11)
    items = await contract_around(Delta(content="a"), KeyError("choices"), Delta(content="b"),
                                  usage=seen)
    assert assert_contract(items, failed=True) == "a"
    error = items[-2]
    assert isinstance(error, ChunkError) and isinstance(error.error, UpstreamTransient)
    assert "malformed stream event" in error.error.message
    assert items[-1] == End("error", seen)


async def test_contract_raises_when_nothing_but_empty_deltas_came_first() -> None:
    with pytest.raises(UpstreamTransient, match="provider dep sent a malformed stream event"):
        await contract_around(Delta(content=""), ValueError("not JSON"))


async def test_contract_closes_the_delta_generator_when_the_reader_stops() -> None:
    closed: list[bool] = []

    async def deltas(outcome: StreamOutcome) -> AsyncGenerator[Delta, None]:
        try:
            yield Delta(content="a")
            yield Delta(content="b")
        finally:
            closed.append(True)

    stream = keep_stream_contract("dep", deltas)
    assert await anext(stream) == Delta(content="a")
    await stream.aclose()
    assert closed == [True]
