"""What embedding adapters share: OpenAI's embeddings wire format (OpenAI, Azure OpenAI,
Mistral and OpenAI-compatible servers speak it), the usage of a call whose vendor reported
no token count, and reading vectors out of a vendor answer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tako.core.errors import UpstreamTransient
from tako.core.protocols import EmbeddingRequest, Embeddings
from tako.core.tokens import estimate_text_tokens
from tako.core.types import Usage

Cost = Callable[[int, int], float]


def estimate_tokens(inputs: list[str]) -> int:
    """The prompt tokens of ``inputs``, estimated on the high side (at least one each)."""
    return sum(max(1, estimate_text_tokens(text)) for text in inputs)


def usage_of(req: EmbeddingRequest, reported: Any, cost: Cost) -> Usage:
    """The usage of an embeddings call: the vendor's token count when it gave one, else an
    estimate from the inputs (marked estimated); priced at the deployment's input rate."""
    if isinstance(reported, int) and not isinstance(reported, bool) and reported >= 0:
        return Usage(prompt_tokens=reported, cost_usd=cost(reported, 0))
    tokens = estimate_tokens(req.inputs)
    return Usage(prompt_tokens=tokens, cost_usd=cost(tokens, 0), estimated=True)


def vector(provider_id: str, value: Any) -> list[float]:
    """One embedding from a vendor answer, checked to be a list of numbers."""
    if not isinstance(value, list) or not all(
            isinstance(x, (int, float)) and not isinstance(x, bool) for x in value):
        raise malformed(provider_id, "an embedding that is not a list of numbers")
    return [float(x) for x in value]


def malformed(provider_id: str, what: str) -> UpstreamTransient:
    return UpstreamTransient(f"provider {provider_id} sent {what}",
                             details={"provider": provider_id})


def openai_body(req: EmbeddingRequest, model: str, *,
                dimensions_field: str = "dimensions") -> dict[str, Any]:
    """An OpenAI-shaped embeddings request. Floats are always asked for: the gateway
    encodes base64 itself, so every vendor answers the same way."""
    body: dict[str, Any] = {"model": model, "input": list(req.inputs),
                            "encoding_format": "float"}
    if req.dimensions is not None:
        body[dimensions_field] = req.dimensions
    if req.user:
        body["user"] = req.user
    return body


def parse_openai(req: EmbeddingRequest, answer: Any, provider_id: str,
                 cost: Cost) -> Embeddings:
    """An OpenAI-shaped embeddings answer: ``data`` (ordered by ``index``) and ``usage``."""
    data = answer.get("data") if isinstance(answer, dict) else None
    if not isinstance(data, list) or len(data) != len(req.inputs):
        raise malformed(provider_id, f"{len(data) if isinstance(data, list) else 'no'} "
                        f"embeddings for {len(req.inputs)} inputs")
    items = sorted(data, key=lambda item: item.get("index", 0) if isinstance(item, dict) else 0)
    vectors = [vector(provider_id, item.get("embedding") if isinstance(item, dict) else None)
               for item in items]
    usage = answer.get("usage")
    reported = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    return Embeddings(vectors, usage_of(req, reported, cost))


def check_count(provider_id: str, vectors: list[list[float]], inputs: list[str]) -> None:
    if len(vectors) != len(inputs):
        raise malformed(provider_id, f"{len(vectors)} embeddings for {len(inputs)} inputs")
