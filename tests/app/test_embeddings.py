"""``POST /v1/embeddings`` end to end: the official openai SDK's ``embeddings.create``
against a real ``tako serve`` with one deployment per vendor, each talking to that vendor's
loopback fake in its own embeddings wire format (OpenAI and OpenAI-compatible, Azure
OpenAI, Mistral, Vertex ``:predict``, Bedrock InvokeModel for Titan and Cohere signed with
SigV4, Ollama ``/api/embed``). Bodies validate against OpenAI's published schema."""

from __future__ import annotations

import base64
import hashlib
import secrets
import struct
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette

from tako.core.tokens import estimate_text_tokens
from tests.fakes import azure as fake_azure
from tests.fakes import bedrock as fake_bedrock
from tests.fakes import embeddings as fake_embeddings
from tests.fakes import mistral as fake_mistral
from tests.fakes import ollama as fake_ollama
from tests.fakes import openai as fake_openai
from tests.fakes import vertex as fake_vertex
from tests.support.gateway import TEST_KEY, Gateway, basic_config, gateway
from tests.support.net import serve_asgi
from tests.support.openai_schema import validate, validate_error
from tests.support.redis_server import redis_server
from tests.support.vendors import (
    AWS_REGION,
    AWS_SECRET_KEY,
    VERTEX_LOCATION,
    VERTEX_PROJECT,
    aws_env,
)

ADMIN_KEY = "sk-admin-embeddings"
TEXTS = ["hello world", "tako routes every embedding"]
DIMS = 16
GENERIC_PRICE = {"input": 100.0, "output": 0.0}  # USD per million tokens: visible spend


@dataclass
class Fakes:
    openai: fake_embeddings.OpenAIEmbeddings
    generic: fake_embeddings.OpenAIEmbeddings
    azure: fake_azure.FakeAzure
    mistral: fake_mistral.FakeMistral
    vertex: fake_vertex.FakeVertex
    bedrock: fake_bedrock.FakeBedrock
    ollama: fake_ollama.FakeOllama
    deployments: list[dict[str, Any]]


def _serve_fakes(stack: ExitStack, workdir: Path) -> Fakes:
    def serve(app: Any) -> str:
        return stack.enter_context(serve_asgi(app))

    openai_app, _ = fake_openai.make_app()
    openai_embeddings = fake_embeddings.OpenAIEmbeddings(api_key="sk-openai-e2e")
    openai_app.router.routes.append(openai_embeddings.route())
    generic = fake_embeddings.OpenAIEmbeddings()
    azure_app, azure = fake_azure.make_app(deployments={"embed-small"})
    mistral_app, mistral = fake_mistral.make_app()
    vertex_app, vertex = fake_vertex.make_app()
    bedrock_app, bedrock = fake_bedrock.make_app()
    ollama_app, ollama = fake_ollama.make_app()
    vertex_url, bedrock_url = serve(vertex_app), serve(bedrock_app)
    credentials = vertex.service_account_file(workdir / "vertex-sa.json", vertex_url,
                                              VERTEX_PROJECT)
    deployments = [
        {"name": "oa-embed", "provider": "openai", "model": "text-embedding-3-small",
         "base_url": serve(openai_app) + "/v1", "api_key": "sk-openai-e2e"},
        {"name": "generic-embed", "provider": "http-generic", "model": "served-embedder",
         "base_url": serve(Starlette(routes=[generic.route()])) + "/v1",
         "price": GENERIC_PRICE},
        {"name": "azure-embed", "provider": "azure-openai", "model": "text-embedding-3-small",
         "base_url": serve(azure_app), "api_key": "azure-test-key",
         "options": {"deployment": "embed-small", "api_version": "2024-10-21"}},
        {"name": "mistral-embed", "provider": "mistral", "model": "mistral-embed",
         "base_url": serve(mistral_app) + "/v1", "api_key": "mistral-test-key"},
        {"name": "vertex-embed", "provider": "vertex", "model": "text-embedding-005",
         "base_url": vertex_url,
         "options": {"credentials_file": str(credentials), "project": VERTEX_PROJECT,
                     "location": VERTEX_LOCATION}},
        {"name": "titan-embed", "provider": "bedrock", "model": "amazon.titan-embed-text-v2:0",
         "options": {"endpoint_url": bedrock_url, "region": AWS_REGION}},
        {"name": "cohere-embed", "provider": "bedrock", "model": "cohere.embed-english-v3",
         "options": {"endpoint_url": bedrock_url, "region": AWS_REGION}},
        {"name": "ollama-embed", "provider": "ollama", "model": "nomic-embed-text",
         "base_url": serve(ollama_app), "price": {"input": 0.5, "output": 0.0}},
    ]
    return Fakes(openai_embeddings, generic, azure, mistral, vertex, bedrock, ollama,
                 deployments)


@pytest.fixture(scope="module")
def fakes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fakes]:
    with ExitStack() as stack:
        yield _serve_fakes(stack, tmp_path_factory.mktemp("embedding-vendors"))


def _config(fakes: Fakes, **runtime: Any) -> dict[str, Any]:
    config = basic_config()
    config["auth"]["admin_key_sha256"] = hashlib.sha256(ADMIN_KEY.encode()).hexdigest()
    config["auth"]["keys"].append({"key": "sk-test-beta", "key_id": "beta",
                                   "tenant_id": "acme", "user_id": "cat"})
    config["auth"]["keys"].append({"key": "sk-test-gamma", "key_id": "gamma",
                                   "tenant_id": "acme", "user_id": "dan"})
    config["deployments"] += fakes.deployments
    config["aliases"] = {"embed-any": {"targets": ["oa-embed", "azure-embed"]}}
    config["runtime"] = {"retry": {"max_attempts": 1}, **runtime}
    return config


@pytest.fixture(scope="module")
def gw(fakes: Fakes, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with gateway(_config(fakes), env=aws_env(tmp_path_factory.mktemp("aws"))) as g:
        yield g


def client(gw: Gateway, key: str = TEST_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0)


def post(gw: Gateway, body: dict[str, Any], key: str = TEST_KEY) -> httpx.Response:
    return httpx.post(gw.base_url + "/embeddings", json=body, timeout=30,
                      headers={"authorization": f"Bearer {key}"})


def spend(gw: Gateway, key_id: str = "alpha") -> float:
    answer = httpx.get(gw.url + "/admin/spend", timeout=10,
                       headers={"authorization": f"Bearer {ADMIN_KEY}"},
                       params={"scope": "key", "id": key_id, "period": "day",
                               "tenant_id": "acme"})
    assert answer.status_code == 200, answer.text
    return float(answer.json()["usd"])


def decoded(value: str) -> list[float]:
    raw = base64.b64decode(value)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


# ---- what each vendor was sent ----


def _sent_openai(fake: fake_embeddings.OpenAIEmbeddings, model: str, key: str | None
                 ) -> None:
    headers, body = fake.requests[-1]
    assert body == {"model": model, "input": TEXTS, "encoding_format": "float",
                    "dimensions": DIMS}
    assert headers.get("authorization") == (f"Bearer {key}" if key else None)


def _sent_azure(f: Fakes) -> None:
    last = f.azure.requests[-1]
    assert last.path == "/openai/deployments/embed-small/embeddings"
    assert last.query == {"api-version": "2024-10-21"}
    assert last.headers["api-key"] == "azure-test-key"
    assert last.body["input"] == TEXTS and last.body["dimensions"] == DIMS


def _sent_mistral(f: Fakes) -> None:
    body = f.mistral.requests[-1].body
    assert body == {"model": "mistral-embed", "input": TEXTS, "encoding_format": "float",
                    "output_dimension": DIMS}


def _sent_vertex(f: Fakes) -> None:
    last = f.vertex.requests[-1]
    assert (last.method, last.model, last.project, last.location) == (
        "predict", "text-embedding-005", VERTEX_PROJECT, VERTEX_LOCATION)
    assert last.body == {"instances": [{"content": t} for t in TEXTS],
                         "parameters": {"outputDimensionality": DIMS}}


def _sent_titan(f: Fakes) -> None:
    calls = f.bedrock.requests[-len(TEXTS):]
    assert {c.raw_path for c in calls} == {"/model/amazon.titan-embed-text-v2:0/invoke"}
    bodies = [orjson.loads(c.raw_body) for c in calls]
    assert sorted(bodies, key=str) == sorted(
        ({"inputText": t, "dimensions": DIMS} for t in TEXTS), key=str)
    assert all(fake_bedrock.signature_ok(c, AWS_SECRET_KEY, AWS_REGION) for c in calls)


def _sent_cohere(f: Fakes) -> None:
    last = f.bedrock.requests[-1]
    assert last.raw_path == "/model/cohere.embed-english-v3/invoke"
    assert fake_bedrock.signature_ok(last, AWS_SECRET_KEY, AWS_REGION)


def _sent_ollama(f: Fakes) -> None:
    last = f.ollama.requests[-1]
    assert last.path == "/api/embed"
    assert last.body == {"model": "nomic-embed-text", "input": TEXTS, "dimensions": DIMS}


SENT: dict[str, Callable[[Fakes], None]] = {
    "oa-embed": lambda f: _sent_openai(f.openai, "text-embedding-3-small", "sk-openai-e2e"),
    "generic-embed": lambda f: _sent_openai(f.generic, "served-embedder", None),
    "azure-embed": _sent_azure,
    "mistral-embed": _sent_mistral,
    "vertex-embed": _sent_vertex,
    "titan-embed": _sent_titan,
    "cohere-embed": _sent_cohere,
    "ollama-embed": _sent_ollama,
}
#: Cohere on Bedrock reports no token count in the body: tako estimates it
ESTIMATED = {"cohere-embed"}


@pytest.mark.parametrize("deployment", list(SENT))
def test_sdk_embeddings_per_vendor(gw: Gateway, fakes: Fakes, deployment: str) -> None:
    # the SDK asks for base64 unless told otherwise, and decodes it
    raw = client(gw).embeddings.with_raw_response.create(
        model=deployment, input=TEXTS, dimensions=DIMS)
    answer = raw.parse()
    SENT[deployment](fakes)
    assert raw.headers["x-tako-deployment"] == deployment
    expected = [fake_embeddings.vector(t, DIMS) for t in TEXTS]
    assert [d.embedding for d in answer.data] == expected
    assert [d.index for d in answer.data] == [0, 1]
    assert answer.model == deployment
    if deployment in ESTIMATED:
        tokens = sum(estimate_text_tokens(t) for t in TEXTS)
    else:
        tokens = sum(fake_embeddings.tokens(t) for t in TEXTS)
    assert (answer.usage.prompt_tokens, answer.usage.total_tokens) == (tokens, tokens)

    floats = post(gw, {"model": deployment, "input": TEXTS, "dimensions": DIMS,
                       "encoding_format": "float"})
    assert floats.status_code == 200, floats.text
    validate("CreateEmbeddingResponse", floats.json())
    assert [d["embedding"] for d in floats.json()["data"]] == expected
    assert floats.json()["usage"].get("estimated", False) is (deployment in ESTIMATED)

    b64 = post(gw, {"model": deployment, "input": TEXTS, "dimensions": DIMS,
                    "encoding_format": "base64"}).json()
    assert all(isinstance(d["embedding"], str) for d in b64["data"])
    as_floats = {**b64, "data": [{**d, "embedding": decoded(d["embedding"])}
                                 for d in b64["data"]]}
    validate("CreateEmbeddingResponse", as_floats)  # the spec types the floats only
    assert as_floats["data"] == floats.json()["data"]


def test_a_single_string_and_an_alias(gw: Gateway, fakes: Fakes) -> None:
    answer = client(gw).embeddings.create(model="embed-any", input="just one text",
                                          encoding_format="float")
    assert len(answer.data) == 1
    assert answer.data[0].embedding == fake_embeddings.vector("just one text")
    assert answer.usage.prompt_tokens == fake_embeddings.tokens("just one text")


def test_models_say_which_serve_embeddings(gw: Gateway) -> None:
    listed = {m.id: m.model_extra for m in client(gw).models.list()}
    for name in SENT:
        assert listed[name]["tako_capabilities"] == ["embeddings"], name
    assert listed["embed-any"]["tako_capabilities"] == ["embeddings"]
    assert listed["echo"]["tako_capabilities"] == ["chat"]
    assert listed["echo-tools"]["tako_capabilities"] == ["chat"]
    one = httpx.get(gw.base_url + "/models/oa-embed", timeout=10,
                    headers={"authorization": f"Bearer {TEST_KEY}"}).json()
    assert one["tako_capabilities"] == ["embeddings"]


BAD_BODIES = {
    "profile": ({"model": "echo-tools", "input": "x"}, 400, "model_not_supported"),
    "chat deployment": ({"model": "echo", "input": "x"}, 400, "model_not_supported"),
    "unknown model": ({"model": "nope", "input": "x"}, 404, "model_not_found"),
    "empty list": ({"model": "oa-embed", "input": []}, 400, "invalid_value"),
    "empty string": ({"model": "oa-embed", "input": ["a", ""]}, 400, "invalid_value"),
    "token arrays": ({"model": "oa-embed", "input": [[1, 2, 3]]}, 400, "invalid_value"),
    "no input": ({"model": "oa-embed"}, 400, "invalid_value"),
    "bad encoding": ({"model": "oa-embed", "input": "x", "encoding_format": "int8"}, 400,
                     "invalid_value"),
    "zero dimensions": ({"model": "oa-embed", "input": "x", "dimensions": 0}, 400,
                        "invalid_value"),
    "unknown field": ({"model": "oa-embed", "input": "x", "temperature": 1}, 400,
                      "invalid_value"),
}


@pytest.mark.parametrize("case", list(BAD_BODIES))
def test_bad_requests_are_openai_errors_and_free(gw: Gateway, fakes: Fakes,
                                                 case: str) -> None:
    body, status, code = BAD_BODIES[case]
    before, sent = spend(gw), len(fakes.openai.requests)
    answer = post(gw, body)
    assert answer.status_code == status, answer.text
    validate_error(answer.json())
    assert answer.json()["error"]["code"] == code
    assert len(fakes.openai.requests) == sent
    assert spend(gw) == before


def test_sdk_maps_the_errors(gw: Gateway, fakes: Fakes) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        client(gw).embeddings.create(model="echo-tools", input="x")
    assert bad.value.param == "model"
    with pytest.raises(openai.NotFoundError):
        client(gw).embeddings.create(model="nope", input="x")
    with pytest.raises(openai.AuthenticationError):
        client(gw, "sk-wrong").embeddings.create(model="oa-embed", input="x")


def test_vendor_errors_keep_their_status_and_cost_nothing(gw: Gateway, fakes: Fakes) -> None:
    refusal = {"error": {"message": "This model does not support specifying dimensions.",
                         "type": "invalid_request_error", "param": "dimensions",
                         "code": None}}
    fakes.openai.fail_next.append((400, refusal))
    before = spend(gw)
    answer = post(gw, {"model": "oa-embed", "input": TEXTS, "dimensions": 3})
    assert answer.status_code == 400, answer.text
    validate_error(answer.json())
    assert answer.json()["error"]["details"]["status"] == 400
    assert answer.json()["error"]["details"]["body"] == refusal
    assert spend(gw) == before
    fakes.vertex.push(fake_vertex.Failure(400, "INVALID_ARGUMENT", "dimension too large"))
    answer = post(gw, {"model": "vertex-embed", "input": TEXTS})
    assert answer.status_code == 400, answer.text
    validate_error(answer.json())


def test_spend_is_recorded_at_the_price_table(gw: Gateway, fakes: Fakes) -> None:
    before = spend(gw, "beta")
    answer = post(gw, {"model": "generic-embed", "input": TEXTS}, key="sk-test-beta").json()
    tokens = sum(fake_embeddings.tokens(t) for t in TEXTS)
    cost = tokens * GENERIC_PRICE["input"] / 1e6
    assert answer["usage"]["cost_usd"] == pytest.approx(cost)
    assert spend(gw, "beta") - before == pytest.approx(cost, abs=1e-9)
    priced = post(gw, {"model": "oa-embed", "input": TEXTS}, key="sk-test-beta").json()
    assert priced["usage"]["cost_usd"] == pytest.approx(tokens * 0.02 / 1e6)


def test_an_alias_falls_back_past_a_failing_deployment(gw: Gateway, fakes: Fakes) -> None:
    fakes.openai.fail_next.append((500, {"error": {
        "message": "The server had an error", "type": "server_error", "param": None,
        "code": None}}))
    raw = client(gw).embeddings.with_raw_response.create(model="embed-any", input=TEXTS)
    assert raw.headers["x-tako-deployment"] == "azure-embed"
    assert [d.embedding for d in raw.parse().data] == [
        fake_embeddings.vector(t) for t in TEXTS]


def test_metrics_and_access_log_name_the_api(gw: Gateway) -> None:
    cost_before = _metric(gw, "tako_cost_usd_total", model="generic-embed")
    post(gw, {"model": "generic-embed", "input": TEXTS})
    tokens = sum(fake_embeddings.tokens(t) for t in TEXTS)
    assert _metric(gw, "tako_cost_usd_total", model="generic-embed") - cost_before == (
        pytest.approx(tokens * GENERIC_PRICE["input"] / 1e6))
    assert _metric(gw, "tako_requests_total", model="generic-embed", api="embeddings") > 0
    lines = [orjson.loads(line) for line in gw.log().splitlines()
             if line.startswith("{") and '"generic-embed"' in line]
    assert lines, gw.log()[-2000:]
    assert lines[-1]["event"] == "embeddings"
    assert lines[-1]["deployment"] == "generic-embed"


def _metric(gw: Gateway, name: str, **labels: str) -> float:
    text = httpx.get(gw.url + "/metrics", timeout=5).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v
                                           for k, v in labels.items()):
                total += float(sample.value)
    return total


# ---- budgets, token rate limits and policy over this endpoint ----


@pytest.fixture(scope="module", params=["memory", "redis"])
def limited(request: pytest.FixtureRequest, fakes: Fakes,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """Budgets, a token rate limit and policy, on the memory backend and on a real Redis."""
    with ExitStack() as stack:
        backend: dict[str, Any] = {}
        if request.param == "redis":
            redis = stack.enter_context(redis_server())
            # a prefix of its own: REDIS_URL may name a server other runs share
            backend = {"backend": "redis", "redis_url": redis.url,
                       "key_prefix": f"emb{secrets.token_hex(4)}"}
        yield stack.enter_context(_limited_gateway(fakes, backend, tmp_path_factory))


@contextmanager
def _limited_gateway(fakes: Fakes, backend: dict[str, Any],
                     tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    config = _config(fakes, budgets=[{"scope": "key", "period": "day", "usd": 0.003}],
                     rate_limits=[{"scope": "user", "tpm": 60}], **backend)
    config["policy"] = {"mode": "embedded",
                        "data": {"denied_models": {"acme": ["ollama-embed"]},
                                 "blocked_phrases": ["project bluebird"],
                                 "redaction_text": "[REDACTED]"},
                        "pii": {"request": {"mode": "redact", "kinds": ["email"]}}}
    with gateway(config, env=aws_env(tmp_path_factory.mktemp("aws-limits"))) as g:
        yield g


def test_a_spent_budget_refuses_with_429_and_charges_nothing(limited: Gateway,
                                                             fakes: Fakes) -> None:
    spent_first = 0
    for _ in range(10):  # each call costs $0.0008 (reserves $0.0013) of a $0.003 budget
        answer = post(limited, {"model": "generic-embed", "input": TEXTS})
        if answer.status_code != 200:
            break
        spent_first += 1
    assert spent_first >= 1
    assert answer.status_code == 429, answer.text
    validate_error(answer.json())
    assert answer.json()["error"]["type"] == "insufficient_quota"
    assert answer.headers["x-should-retry"] == "false"
    sent, before = len(fakes.generic.requests), spend(limited)
    with pytest.raises(openai.RateLimitError):
        client(limited).embeddings.create(model="generic-embed", input=TEXTS)
    assert len(fakes.generic.requests) == sent
    assert spend(limited) == before


def test_embedding_tokens_count_in_the_token_rate_limit(limited: Gateway,
                                                        fakes: Fakes) -> None:
    text = "word " * 30  # about 50 estimated tokens against 60 a minute
    first = post(limited, {"model": "oa-embed", "input": text}, key="sk-test-beta")
    assert first.status_code == 200, first.text
    assert "x-ratelimit-remaining-tokens" in first.headers
    second = post(limited, {"model": "oa-embed", "input": text}, key="sk-test-beta")
    assert second.status_code == 429, second.text
    validate_error(second.json())
    assert second.json()["error"]["code"] == "rate_limit_exceeded"
    assert float(second.headers["retry-after"]) > 0


def test_policy_and_pii_guards_see_every_input(limited: Gateway, fakes: Fakes) -> None:
    user = "sk-test-gamma"  # its own key and user: no budget or rate limit spent yet
    hidden = post(limited, {"model": "mistral-embed", "input": "x"}, key="sk-test-limited")
    assert hidden.status_code == 404, "a key limited to other models does not see it"
    answer = post(limited, {"model": "mistral-embed", "encoding_format": "float",
                            "input": ["mail ann@example.com", "status of project bluebird"]},
                  key=user)
    assert answer.status_code == 200, answer.text
    sent = fakes.mistral.requests[-1].body["input"]
    assert "ann@example.com" not in sent[0] and "<EMAIL>" in sent[0]
    assert sent[1] == "status of [REDACTED]"
    assert answer.json()["data"][0]["embedding"] == fake_embeddings.vector(sent[0])
    denied = post(limited, {"model": "ollama-embed", "input": "x"}, key=user)
    assert denied.status_code == 403, denied.text
    validate_error(denied.json())
