"""Lenient parsing of what models write: JSON inside prose or code fences, and scores."""

from __future__ import annotations

import json
import re
from typing import Any

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)


def extract_json(text: str) -> Any:
    """The first JSON value found in ``text`` (fenced block, whole text, or the first
    ``{``/``[`` that starts a valid value). Raises ValueError when there is none."""
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    decoder = json.JSONDecoder()
    for candidate in candidates:
        stripped = candidate.strip()
        try:
            return json.loads(stripped)
        except ValueError:
            pass
        for i, ch in enumerate(stripped):
            if ch in "{[":
                try:
                    value, _ = decoder.raw_decode(stripped[i:])
                    return value
                except ValueError:
                    continue
    raise ValueError("no JSON value found")


_FRACTION = re.compile(r"(-?\d+(?:\.\d+)?)\s*(?:/|out of)\s*(\d+(?:\.\d+)?)", re.IGNORECASE)
_PERCENT = re.compile(r"(-?\d+(?:\.\d+)?)\s*%")
_LABELLED = re.compile(r"score\W{0,3}\s*(-?\d+(?:\.\d+)?)", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def clamp(value: float) -> float:
    return min(1.0, max(0.0, value))


def _scale(value: float) -> float:
    """A bare number above 1 is read as out of 10 (up to 10) or out of 100 (up to 100);
    anything larger is clamped to 1 by the caller."""
    if value <= 1:
        return value
    if value <= 10:
        return value / 10
    return value / 100


def parse_score(text: str) -> float | None:
    """A score in [0, 1] from "0.8", "Score: 8/10", "80%", ``{"score": 0.8}``; None when
    no number can be read."""
    try:
        data = extract_json(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        from_json = _score_field(data)
        if from_json is not None:
            return from_json
    elif isinstance(data, (int, float)) and not isinstance(data, bool):
        return clamp(_scale(float(data)))
    return _score_in_text(text)


def _score_field(data: dict[str, Any]) -> float | None:
    for key in ("score", "confidence", "rating", "value"):
        value = data.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return clamp(_scale(float(value)))
        if isinstance(value, str):
            parsed = parse_score(value)
            if parsed is not None:
                return parsed
    return None


def _score_in_text(text: str) -> float | None:
    if m := _FRACTION.search(text):
        denominator = float(m.group(2))
        if denominator > 0:
            return clamp(float(m.group(1)) / denominator)
    if m := _PERCENT.search(text):
        return clamp(float(m.group(1)) / 100)
    if m := _LABELLED.search(text):
        return clamp(_scale(float(m.group(1))))
    if m := _NUMBER.search(text):
        return clamp(_scale(float(m.group(0))))
    return None
