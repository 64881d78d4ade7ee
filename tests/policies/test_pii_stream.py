"""StreamRedactor: chunked output always concatenates to the guard's whole-text result."""

from __future__ import annotations

import random
from typing import Any

import pytest

from tako.core.errors import PolicyDenied
from tako.policies.pii import PiiFilter
from tako.policies.pii_stream import StreamRedactor
from tako.policies.settings import PiiFilterSettings
from tests.support.pii_corpus import CORPUS, POSITIVES, sample_id


def guard(mode: str = "hash") -> PiiFilter:
    return PiiFilter(PiiFilterSettings(mode=mode))  # type: ignore[arg-type]


def run_stream(g: PiiFilter, chunks: list[str]) -> str:
    stream = StreamRedactor(g)
    return "".join(stream.feed(c) for c in chunks) + stream.flush()


def split_at(text: str, points: list[int]) -> list[str]:
    bounds = [0, *points, len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def value_spans(record: dict[str, Any]) -> list[tuple[int, int]]:
    spans, pos = [], 0
    for e in record["expected"]:
        start = record["text"].index(e["value"], pos)
        spans.append((start, start + len(e["value"])))
        pos = start + len(e["value"])
    return spans


@pytest.mark.parametrize("record", POSITIVES, ids=sample_id)
def test_every_two_chunk_split_matches_whole_text(record: dict[str, Any]) -> None:
    g = guard()
    text = record["text"]
    expected = g.apply(text)
    assert expected != text
    for i in range(len(text) + 1):
        assert run_stream(g, [text[:i], text[i:]]) == expected, f"split at {i}"


@pytest.mark.parametrize("record", POSITIVES, ids=sample_id)
def test_secrets_split_across_three_and_more_chunks(record: dict[str, Any]) -> None:
    g = guard("redact")
    text = record["text"]
    expected = g.apply(text)
    for start, end in value_spans(record):
        inner = list(range(start + 1, end))
        step = max(1, len(inner) // 12)
        points = inner[::step]
        for a in points:
            for b in points:
                if a < b:
                    assert run_stream(g, split_at(text, [a, b])) == expected, (a, b)
        assert run_stream(g, split_at(text, points)) == expected  # many chunks in one value
    assert run_stream(g, list(text)) == expected  # one character at a time
    rng = random.Random(len(text))
    for _ in range(5):
        points = sorted(rng.sample(range(1, len(text)), k=min(len(text) - 1, 6)))
        assert run_stream(g, split_at(text, points)) == expected


def test_whole_corpus_as_one_stream_in_random_chunks() -> None:
    g = guard("mask")
    text = "\n".join(r["text"] for r in CORPUS)
    expected = g.apply(text)
    rng = random.Random(7)
    for _ in range(20):
        chunks, pos = [], 0
        while pos < len(text):
            size = rng.choice([1, 2, 3, 5, 8, 13, 40])
            chunks.append(text[pos:pos + size])
            pos += size
        assert run_stream(g, chunks) == expected


def test_only_a_short_tail_is_held_back() -> None:
    g = guard("redact")
    stream = StreamRedactor(g)
    prose = "The quick brown fox, 42 times, jumped over 3.5 lazy dogs; SO LOUD it was. " * 200
    emitted = []
    held_max = 0
    for ch in prose:
        emitted.append(stream.feed(ch))
        held_max = max(held_max, stream.held)
    assert held_max <= 80
    emitted.append(stream.feed("\n"))
    assert stream.held == 0
    assert "".join(emitted) + stream.flush() == prose + "\n"


def test_long_token_like_runs_are_not_held_whole() -> None:
    rng = random.Random(3)
    blob = "".join(rng.choice("0123456789abcdef_-") for _ in range(5000))
    stream = StreamRedactor(guard("redact"))
    emitted = []
    held_max = 0
    for i in range(0, len(blob), 3):
        emitted.append(stream.feed(blob[i:i + 3]))
        held_max = max(held_max, stream.held)
    assert held_max <= 80
    assert "".join(emitted) + stream.flush() == blob


def test_text_without_findings_passes_through_promptly() -> None:
    stream = StreamRedactor(guard("redact"))
    assert stream.feed("Hello there, how are you today?\n") == "Hello there, how are you today?\n"
    assert stream.flush() == ""


def test_unterminated_private_key_is_held_until_flush() -> None:
    stream = StreamRedactor(guard("redact"))
    out = stream.feed("key:\n-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEAu1SU1L\n")
    assert out == "key:\n"
    assert stream.feed("fVLPHCozMxH2Mo4lgOEePz\n") == ""
    assert stream.feed("-----END RSA PRIVATE KEY-----\nbye") == "<PRIVATE_KEY>\n"
    assert stream.flush() == "bye"


def test_block_mode_stream_raises_without_leaking_the_secret() -> None:
    secret = "sk-proj-Xy7_Qm2LpZ9aB4cD6eF8gH0iJ1kL3mN5oP7q"
    stream = StreamRedactor(guard("block"))
    emitted = stream.feed("here: " + secret[:10])
    with pytest.raises(PolicyDenied, match="openai_api_key"):
        emitted += stream.feed(secret[10:25])
        emitted += stream.feed(secret[25:] + " done")
        emitted += stream.flush()
    assert secret[:5] not in emitted


def test_random_mixtures_of_secrets_and_punctuation_in_random_chunks() -> None:
    g = guard("hash")
    alphabet = "0123456789 -.:@+()/_=abcdefABCDEFXYZeyJsk\n\"'"
    values = [e["value"] for r in POSITIVES for e in r["expected"]]
    rng = random.Random(11)
    for _ in range(300):
        parts = [
            rng.choice(values)
            if rng.random() < 0.5
            else "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
            for _ in range(rng.randint(1, 6))
        ]
        text = "".join(parts)
        chunks, pos = [], 0
        while pos < len(text):
            size = rng.randint(1, 10)
            chunks.append(text[pos:pos + size])
            pos += size
        assert run_stream(g, chunks) == g.apply(text), text
