"""The labelled PII/secret corpus: each line has a text and the exact findings expected."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CORPUS_PATH = Path(__file__).resolve().parents[1] / "policies" / "data" / "pii_corpus.jsonl"


def load_corpus() -> list[dict[str, Any]]:
    with CORPUS_PATH.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


CORPUS = load_corpus()
POSITIVES = [r for r in CORPUS if r["expected"]]
NEGATIVES = [r for r in CORPUS if not r["expected"]]


def sample_id(record: dict[str, Any]) -> str:
    kinds = ",".join(sorted({e["kind"] for e in record["expected"]})) or "none"
    return f"{kinds}:{record['text'][:40]!r}"
