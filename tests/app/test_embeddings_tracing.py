"""Traces of ``POST /v1/embeddings``: the run span, a ``tako.provider.embeddings`` client span
per upstream call with its usage and ``gen_ai.*`` attributes, and its ``traceparent`` sent
to the vendor."""

from __future__ import annotations

import time
from collections.abc import Iterator

import openai
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.applications import Starlette

from tako.app.config import Settings
from tako.app.factory import create_app
from tests.fakes import embeddings as fake_embeddings
from tests.support.gateway import TEST_KEY, basic_config
from tests.support.net import serve_asgi

TEXTS = ["traced text", "another traced text"]


@pytest.fixture(scope="module")
def traced() -> Iterator[tuple[str, InMemorySpanExporter, fake_embeddings.OpenAIEmbeddings]]:
    fake = fake_embeddings.OpenAIEmbeddings()
    with serve_asgi(Starlette(routes=[fake.route()])) as upstream:
        config = basic_config()
        config["deployments"].append(
            {"name": "embedder", "provider": "http-generic", "model": "served-embedder",
             "base_url": upstream + "/v1", "price": {"input": 10.0, "output": 0.0}})
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        app = create_app(Settings(**config), tracer_provider=provider)
        with serve_asgi(app) as url:
            yield url, exporter, fake


def _finished(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        spans = list(exporter.get_finished_spans())
        if any(s.name == name for s in spans):
            return spans
        time.sleep(0.02)
    raise AssertionError(f"no {name} span among {[s.name for s in exporter.get_finished_spans()]}")


def test_an_embeddings_call_is_traced(
        traced: tuple[str, InMemorySpanExporter, fake_embeddings.OpenAIEmbeddings]) -> None:
    url, exporter, fake = traced
    exporter.clear()
    client = openai.OpenAI(base_url=url + "/v1", api_key=TEST_KEY, max_retries=0)
    answer = client.embeddings.create(model="embedder", input=TEXTS)
    assert [d.embedding for d in answer.data] == [fake_embeddings.vector(t) for t in TEXTS]
    spans = _finished(exporter, "tako.orchestrator.run")
    call = next(s for s in spans if s.name == "tako.provider.embeddings")
    run = next(s for s in spans if s.name == "tako.orchestrator.run")
    assert call.parent is not None and call.parent.span_id == run.context.span_id
    tokens = sum(fake_embeddings.tokens(t) for t in TEXTS)
    assert call.attributes is not None
    assert call.attributes["gen_ai.operation.name"] == "embeddings"
    assert call.attributes["tako.provider.id"] == "embedder"
    assert call.attributes["tako.tokens.input"] == tokens
    assert call.attributes["tako.cost.usd"] == pytest.approx(tokens * 10.0 / 1e6)
    assert run.attributes is not None and run.attributes["tako.orchestrator.kind"] == "embeddings"
    traceparent = fake.requests[-1][0]["traceparent"]
    assert traceparent.split("-")[1] == format(call.context.trace_id, "032x")


def test_a_chat_deployment_refuses_embeddings_when_traced(
        traced: tuple[str, InMemorySpanExporter, fake_embeddings.OpenAIEmbeddings]) -> None:
    url, _exporter, _fake = traced
    client = openai.OpenAI(base_url=url + "/v1", api_key=TEST_KEY, max_retries=0)
    with pytest.raises(openai.BadRequestError) as refused:
        client.embeddings.create(model="echo", input="x")
    assert refused.value.code == "model_not_supported"
    models = {m.id: m.model_extra for m in client.models.list()}
    assert models["embedder"]["tako_capabilities"] == ["embeddings"]
    assert models["echo"]["tako_capabilities"] == ["chat"]
