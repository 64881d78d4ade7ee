"""The adapters' ``embed`` against loopback fakes speaking each vendor's embeddings format,
and an embeddings call through the runtime stack (reservation, retry, settlement)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.applications import Starlette

from tako.core.errors import InvalidRequest, UpstreamTransient
from tako.core.protocols import EmbeddingRequest, EmbeddingsProvider, embedder_of
from tako.core.specs import DeploymentSpec
from tako.core.tokens import estimate_text_tokens
from tako.core.types import Principal
from tako.providers.registry import build
from tako.providers.vendors.bedrock import BedrockProvider
from tako.providers.vendors.mistral import MistralProvider
from tako.providers.vendors.openai import OpenAICompatible
from tako.providers.vendors.vertex import VertexProvider, parse_predictions
from tests.fakes import bedrock as fake_bedrock
from tests.fakes import embeddings as fake_embeddings
from tests.fakes import mistral as fake_mistral
from tests.fakes import vertex as fake_vertex
from tests.support.net import serve_asgi
from tests.support.providers import built
from tests.support.runtimes import fresh_key_prefix, started_runtime
from tests.support.vendors import AWS_REGION, AWS_SECRET_KEY, aws_env

PRICE = {"input": 100.0, "output": 0.0}


@pytest.fixture(scope="module")
def generic() -> Iterator[tuple[str, fake_embeddings.OpenAIEmbeddings]]:
    fake = fake_embeddings.OpenAIEmbeddings()
    with serve_asgi(Starlette(routes=[fake.route()])) as url:
        yield url, fake


@pytest.fixture(scope="module")
def bedrock_server() -> Iterator[tuple[str, fake_bedrock.FakeBedrock]]:
    app, fake = fake_bedrock.make_app()
    with serve_asgi(app) as url:
        yield url, fake


def generic_spec(url: str) -> DeploymentSpec:
    return DeploymentSpec(name="gen", provider="http-generic", model="served-embedder",
                          base_url=url + "/v1", price=PRICE)


def embedding(texts: list[str], dims: int | None = None) -> EmbeddingRequest:
    return EmbeddingRequest("m", texts, dims)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name, value in aws_env(tmp_path).items():
        monkeypatch.setenv(name, value)


async def test_cohere_on_bedrock_batches_96_texts_a_call_in_order(
        aws: None, bedrock_server: tuple[str, fake_bedrock.FakeBedrock]) -> None:
    url, fake = bedrock_server
    fake.reset()
    texts = [f"text number {i}" for i in range(200)]
    spec = DeploymentSpec(name="co", provider="bedrock", model="cohere.embed-english-v3",
                          options={"endpoint_url": url, "region": AWS_REGION})
    async with built(spec, BedrockProvider) as provider:
        result = await provider.embed(embedding(texts))
    assert result.vectors == [fake_embeddings.vector(t) for t in texts]
    assert sorted(len(fake_bedrock_body(r)["texts"]) for r in fake.requests) == [8, 96, 96]
    assert all(fake_bedrock.signature_ok(r, AWS_SECRET_KEY, AWS_REGION)
               for r in fake.requests)
    assert result.usage.estimated
    assert result.usage.prompt_tokens == sum(estimate_text_tokens(t) for t in texts)
    assert result.usage.cost_usd == pytest.approx(result.usage.prompt_tokens * 0.1 / 1e6)


async def test_titan_is_one_call_per_text_with_its_token_counts(
        aws: None, bedrock_server: tuple[str, fake_bedrock.FakeBedrock]) -> None:
    url, fake = bedrock_server
    fake.reset()
    texts = ["one", "two words", "and three words"]
    spec = DeploymentSpec(name="ti", provider="bedrock", model="amazon.titan-embed-text-v2:0",
                          options={"endpoint_url": url, "region": AWS_REGION})
    async with built(spec, BedrockProvider) as provider:
        result = await provider.embed(embedding(texts, 4))
    assert result.vectors == [fake_embeddings.vector(t, 4) for t in texts]
    assert [fake_bedrock_body(r)["inputText"] for r in fake.requests] == texts
    assert not result.usage.estimated
    assert result.usage.prompt_tokens == sum(fake_embeddings.tokens(t) for t in texts)


async def test_a_bedrock_model_that_embeds_nothing_is_a_400(aws: None) -> None:
    spec = DeploymentSpec(name="nova", provider="bedrock", model="amazon.nova-lite-v1:0",
                          options={"endpoint_url": "http://127.0.0.1:9", "region": AWS_REGION})
    async with built(spec, BedrockProvider) as provider:
        with pytest.raises(InvalidRequest):
            await provider.embed(embedding(["x"]))


def fake_bedrock_body(received: Any) -> dict[str, Any]:
    return dict(orjson.loads(received.raw_body))


async def test_openai_shaped_answers_are_ordered_by_index_and_checked(
        generic: tuple[str, fake_embeddings.OpenAIEmbeddings]) -> None:
    url, fake = generic
    shuffled = {"object": "list", "model": "m", "usage": {"prompt_tokens": 7},
                "data": [{"object": "embedding", "index": 1, "embedding": [2.0]},
                         {"object": "embedding", "index": 0, "embedding": [1, 1.5]}]}
    fake.fail_next.append((200, shuffled))
    async with built(generic_spec(url), OpenAICompatible) as provider:
        result = await provider.embed(embedding(["a", "b"]))
        assert result.vectors == [[1.0, 1.5], [2.0]]
        assert result.usage.prompt_tokens == 7
        assert result.usage.cost_usd == pytest.approx(7 * 100 / 1e6)
        fake.fail_next.append((200, {**shuffled, "data": shuffled["data"][:1]}))
        with pytest.raises(UpstreamTransient, match="1 embeddings for 2 inputs"):
            await provider.embed(embedding(["a", "b"]))
        fake.fail_next.append((200, {**shuffled, "data": [
            {"index": 0, "embedding": ["x"]}, {"index": 1, "embedding": [1]}]}))
        with pytest.raises(UpstreamTransient, match="not a list of numbers"):
            await provider.embed(embedding(["a", "b"]))
        fake.fail_next.append((200, {"data": shuffled["data"]}))  # no usage: estimated
        result = await provider.embed(embedding(["a", "b"]))
        assert result.usage.estimated and result.usage.prompt_tokens == 2


async def test_mistral_sends_output_dimension_and_no_user() -> None:
    app, fake = fake_mistral.make_app()
    with serve_asgi(app) as url:
        spec = DeploymentSpec(name="mi", provider="mistral", model="mistral-embed",
                              base_url=url + "/v1", api_key="mistral-test-key")
        async with built(spec, MistralProvider) as provider:
            result = await provider.embed(EmbeddingRequest("m", ["hi"], 12, user="u-1"))
    assert fake.requests[-1].body == {"model": "mistral-embed", "input": ["hi"],
                                      "encoding_format": "float", "output_dimension": 12}
    assert result.vectors == [fake_embeddings.vector("hi", 12)]


@pytest.mark.parametrize(("model", "count", "calls"), [
    ("gemini-embedding-001", 3, [1, 1, 1]), ("text-embedding-005", 260, [10, 250])])
async def test_vertex_predict_keeps_to_the_models_instance_limit(
        tmp_path: Path, model: str, count: int, calls: list[int]) -> None:
    app, fake = fake_vertex.make_app()
    texts = [f"passage {i}" for i in range(count)]
    with serve_asgi(app) as url:
        credentials = fake.service_account_file(tmp_path / "sa.json", url, "proj")
        spec = DeploymentSpec(name="vx", provider="vertex", model=model, base_url=url,
                              options={"credentials_file": str(credentials),
                                       "project": "proj", "location": "europe-west4"})
        async with built(spec, VertexProvider) as provider:
            result = await provider.embed(embedding(texts, 8))
    assert sorted(len(r.body["instances"]) for r in fake.requests) == calls
    assert {r.method for r in fake.requests} == {"predict"}
    assert result.vectors == [fake_embeddings.vector(t, 8) for t in texts]
    assert result.usage.prompt_tokens == sum(fake_embeddings.tokens(t) for t in texts)
    assert not result.usage.estimated


def test_vertex_predictions_without_token_counts_are_estimated() -> None:
    answer = {"predictions": [{"embeddings": {"values": [0.5, 0.25]}}]}
    result = parse_predictions(embedding(["some text"]), answer, "vx", lambda p, c: p * 1.0)
    assert result.vectors == [[0.5, 0.25]]
    assert result.usage.estimated and result.usage.cost_usd == result.usage.prompt_tokens
    with pytest.raises(UpstreamTransient):
        parse_predictions(embedding(["a", "b"]), answer, "vx", lambda p, c: 0.0)


def test_only_adapters_with_embed_serve_embeddings() -> None:
    echo = build(DeploymentSpec(name="echo", provider="echo", model="echo"))
    with pytest.raises(InvalidRequest, match="does not serve embeddings"):
        embedder_of(echo)
    generic_adapter = build(generic_spec("http://127.0.0.1:9"))
    assert isinstance(embedder_of(generic_adapter), EmbeddingsProvider)


def test_capabilities_follow_the_flag_or_the_model_name() -> None:
    def caps(model: str, flag: bool | None = None) -> list[str]:
        return DeploymentSpec(name="d", provider="openai", model=model,
                              embeddings=flag).capabilities()

    assert caps("text-embedding-3-small") == ["embeddings"]
    assert caps("cohere.embed-english-v3") == ["embeddings"]
    assert caps("gpt-4o") == ["chat"]
    assert caps("served-llama", True) == ["chat", "embeddings"]
    assert caps("mistral-embed", False) == []


# ---- through the runtime stack ----

PRINCIPAL = Principal(tenant_id="acme", user_id="ann", key_id="k1")


async def test_embeddings_are_reserved_settled_and_charged(
        generic: tuple[str, fake_embeddings.OpenAIEmbeddings]) -> None:
    url, fake = generic
    runtime = await started_runtime("memory", None, fresh_key_prefix("emb"),
                                    retry={"max_attempts": 2, "base_delay_s": 0.001,
                                           "max_delay_s": 0.002})
    texts = ["hello world", "tako"]
    tokens = sum(fake_embeddings.tokens(t) for t in texts)
    try:
        await _three_calls(runtime, generic_spec(url), fake, texts)
        spent = await runtime.spend("key", "k1", "day", "acme")
    finally:
        await runtime.aclose()
    assert spent == pytest.approx(2 * tokens * PRICE["input"] / 1e6, abs=1e-9)


async def _three_calls(runtime: Any, spec: DeploymentSpec,
                       fake: fake_embeddings.OpenAIEmbeddings, texts: list[str]) -> None:
    tokens = sum(fake_embeddings.tokens(t) for t in texts)
    async with built(spec, OpenAICompatible) as provider:
        admission = await runtime.admit(PRINCIPAL, "gen", 10, 0.001)
        alias = runtime.alias_provider(admission, "gen", [provider])
        first = await alias.embed(embedding(texts))  # takes the admission's reservation
        fake.fail_next.append((503, {"error": {"message": "busy", "type": "server_error"}}))
        second = await alias.embed(embedding(texts))  # its own reservation, one retry
        assert alias.answered_by == "gen"
        fake.fail_next += [(500, {"error": {"message": "down"}})] * 2
        with pytest.raises(UpstreamTransient):
            await alias.embed(embedding(texts))  # failed: charged nothing
    assert first.usage.prompt_tokens == second.usage.prompt_tokens == tokens
