"""Traces through the real HTTP surface: the gateway served by uvicorn, the openai SDK as
the client, a loopback OpenAI-format upstream, and every span kept in memory."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tako.app.config import Settings
from tako.app.factory import create_app
from tests.fakes.openai import FakeOpenAI, Reply
from tests.support.gateway import TEST_KEY, basic_config
from tests.support.net import serve_asgi
from tests.support.upstreams import served

CLIENT_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_PARENT_ID = "00f067aa0ba902b7"


upstream = served()


@pytest.fixture(scope="module")
def traced(upstream: tuple[str, FakeOpenAI]) -> Iterator[tuple[str, InMemorySpanExporter]]:
    config = basic_config()
    config["deployments"].append(
        {"name": "upstream", "provider": "http-generic", "model": "served-model",
         "base_url": upstream[0] + "/v1", "api_key": "sk-upstream-secret",
         "price": {"input": 2.0, "output": 8.0}})
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = create_app(Settings(**config), tracer_provider=provider)
    with serve_asgi(app) as url:
        yield url, exporter


@pytest.fixture
def spans(traced: tuple[str, InMemorySpanExporter],
          upstream: tuple[str, FakeOpenAI]) -> InMemorySpanExporter:
    traced[1].clear()
    upstream[1].requests.clear()
    return traced[1]


@pytest.fixture
def client(traced: tuple[str, InMemorySpanExporter]) -> openai.OpenAI:
    return openai.OpenAI(base_url=traced[0] + "/v1", api_key=TEST_KEY, max_retries=0)


def finished(spans: InMemorySpanExporter, *names: str) -> list[ReadableSpan]:
    """Every finished span, once each name in ``names`` has finished at least once.
    The request's span ends just after the client has read the last byte, so wait for it."""
    deadline = time.monotonic() + 5
    while True:
        done = spans.get_finished_spans()
        if all(any(s.name == n for s in done) for n in names) or time.monotonic() > deadline:
            return list(done)
        time.sleep(0.01)


def only(done: list[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in done if s.name == name]
    assert len(found) == 1, [s.name for s in done]
    return found[0]


def ancestors(span: ReadableSpan, done: list[ReadableSpan]) -> list[ReadableSpan]:
    """The span's parents up to the root, nearest first."""
    by_id = {s.context.span_id: s for s in done}
    chain = []
    parent = span.parent
    while parent is not None and parent.span_id in by_id:
        span = by_id[parent.span_id]
        chain.append(span)
        parent = span.parent
    return chain


def server_span(done: list[ReadableSpan]) -> ReadableSpan:
    """The request's one SERVER span: the run itself is the root."""
    return only([s for s in done if s.kind == SpanKind.SERVER], "tako.orchestrator.run")


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def assert_provider_chat(span: ReadableSpan, deployment: str, model: str, system: str) -> None:
    a = attrs(span)
    assert a["tako.provider.id"] == deployment
    assert a["tako.provider.model"] == model
    assert a["gen_ai.system"] == system
    assert a["gen_ai.request.model"] == model
    assert a["gen_ai.operation.name"] == "chat"
    assert a["tako.tokens.input"] > 0 and a["tako.tokens.output"] > 0
    assert a["gen_ai.usage.input_tokens"] == a["tako.tokens.input"]
    assert a["gen_ai.usage.output_tokens"] == a["tako.tokens.output"]


def test_plain_chat_is_one_run_with_one_provider_call(client: openai.OpenAI,
                                                      spans: InMemorySpanExporter) -> None:
    resp = client.chat.completions.create(model="upstream", temperature=0.3, max_tokens=50,
                                          messages=[{"role": "user", "content": "hi there"}])
    assert resp.choices[0].message.content == "echo: hi there"
    done = finished(spans, "tako.orchestrator.run")
    server = server_span(done)
    run = only(done, "tako.orchestrator.run")
    chat = only(done, "tako.provider.chat")

    assert server is run and run.parent is None  # the root
    assert run in ancestors(chat, done)
    assert {s.context.trace_id for s in done} == {server.context.trace_id}

    expected = {"tako.orchestrator.kind": "deployment", "tako.principal.tenant_id": "acme",
                "tako.principal.user_id": "ann"}
    assert {k: attrs(run).get(k) for k in expected} == expected
    assert_provider_chat(chat, "upstream", "served-model", "openai")
    a = attrs(chat)
    # The fake upstream reports 12 prompt and 5 completion tokens; the price is 2/8 USD per
    # million (2 of the prompt tokens are cached, priced at the input rate).
    assert (a["tako.tokens.input"], a["tako.tokens.output"]) == (12, 5)
    assert a["tako.cost.usd"] == pytest.approx((12 * 2.0 + 5 * 8.0) / 1e6)
    assert a["gen_ai.request.temperature"] == pytest.approx(0.3)
    assert a["gen_ai.request.max_tokens"] == 50
    assert a["gen_ai.response.finish_reasons"] == ("stop",)
    assert attrs(run)["tako.tokens.input"] == 12
    assert attrs(run)["tako.cost.usd"] == pytest.approx(a["tako.cost.usd"])
    assert resp.usage is not None and resp.usage.prompt_tokens == 12


def test_client_traceparent_joins_the_trace_and_reaches_the_vendor(
        client: openai.OpenAI, spans: InMemorySpanExporter,
        upstream: tuple[str, FakeOpenAI]) -> None:
    traceparent = f"00-{CLIENT_TRACE_ID}-{CLIENT_PARENT_ID}-01"
    client.chat.completions.create(model="upstream", extra_headers={"traceparent": traceparent},
                                   messages=[{"role": "user", "content": "traced"}])
    done = finished(spans, "tako.orchestrator.run")
    server = server_span(done)
    run = only(done, "tako.orchestrator.run")
    chat = only(done, "tako.provider.chat")
    assert format(run.context.trace_id, "032x") == CLIENT_TRACE_ID
    assert server.parent is not None and server.parent.is_remote
    assert format(server.parent.span_id, "016x") == CLIENT_PARENT_ID

    (received,) = upstream[1].requests
    sent = received.headers.get("traceparent")
    assert sent is not None, received.headers
    version, trace_id, parent_id, _flags = sent.split("-")
    assert (version, trace_id) == ("00", CLIENT_TRACE_ID)
    # The vendor sees the gateway's outgoing call, the provider span, as its parent.
    outgoing = [s for s in done if s.kind == SpanKind.CLIENT]
    assert [format(s.context.span_id, "016x") for s in outgoing] == [parent_id]
    assert outgoing == [chat]


def test_stream_run_and_provider_spans_close_with_usage(client: openai.OpenAI,
                                                        spans: InMemorySpanExporter) -> None:
    stream = client.chat.completions.create(
        model="upstream", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "one two three"}])
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "echo: one two three"
    done = finished(spans, "tako.orchestrator.run")
    server = server_span(done)
    run = only(done, "tako.orchestrator.run")
    chat = only(done, "tako.provider.chat")
    assert server is run and run.parent is None  # the root
    assert run in ancestors(chat, done)
    assert attrs(chat)["tako.stream"] is True
    assert_provider_chat(chat, "upstream", "served-model", "openai")
    assert attrs(chat)["tako.cost.usd"] > 0
    assert attrs(run)["tako.tokens.output"] == attrs(chat)["tako.tokens.output"]
    # The run ends when the last frame is rendered, not when the first one is.
    assert run.end_time is not None and chat.end_time is not None
    assert run.end_time >= chat.end_time


def test_tool_profile_traces_each_model_call_and_the_tool(client: openai.OpenAI,
                                                          spans: InMemorySpanExporter) -> None:
    resp = client.chat.completions.create(
        model="echo-tools", messages=[{"role": "user", "content": "calculator: 2+3"}])
    assert resp.choices[0].message.content == "tool calculator returned: 5"
    done = finished(spans, "tako.orchestrator.run")
    server = server_span(done)
    run = only(done, "tako.orchestrator.run")
    tool = only(done, "tako.tool.invoke")
    calls = [s for s in done if s.name == "tako.provider.chat"]
    assert len(calls) == 2
    assert attrs(run)["tako.orchestrator.kind"] == "single"
    assert server is run and run.parent is None  # the root
    for span in [*calls, tool]:
        assert run in ancestors(span, done)
    for call in calls:
        assert_provider_chat(call, "echo", "echo", "tako.echo")
    assert attrs(tool)["tako.tool.name"] == "calculator"
    duration_ms = attrs(tool)["tako.tool.duration_ms"]
    assert isinstance(duration_ms, float) and 0 < duration_ms < 5_000
    # The tool runs between the call that asked for it and the call that used its result.
    first, second = sorted(calls, key=lambda s: s.start_time or 0)
    assert first.end_time <= tool.start_time <= tool.end_time <= second.start_time  # type: ignore[operator]
    assert attrs(run)["tako.tokens.input"] == sum(attrs(c)["tako.tokens.input"] for c in calls)


def test_failed_upstream_attempts_are_error_spans(client: openai.OpenAI,
                                                  spans: InMemorySpanExporter,
                                                  upstream: tuple[str, FakeOpenAI]) -> None:
    upstream[1].push(*[Reply(status=500, body={"error": {"message": "vendor down"}})] * 5)
    with pytest.raises(openai.APIStatusError) as failure:
        client.chat.completions.create(model="upstream",
                                       messages=[{"role": "user", "content": "fail"}])
    attempts = len(upstream[1].requests)
    upstream[1].replies.clear()
    assert failure.value.status_code >= 500
    done = finished(spans, "tako.orchestrator.run")
    run = only(done, "tako.orchestrator.run")
    calls = [s for s in done if s.name == "tako.provider.chat"]
    assert len(calls) == attempts >= 1
    for call in calls:
        assert run in ancestors(call, done)
        assert call.status.status_code == StatusCode.ERROR
        assert attrs(call)["error.type"]
        assert any(e.name == "exception" for e in call.events)
    server = server_span(done)
    status = attrs(server).get("http.response.status_code", attrs(server).get("http.status_code"))
    assert status == failure.value.status_code
    assert server.status.status_code == StatusCode.ERROR
