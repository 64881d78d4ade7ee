"""Reading what models write, strictly: a JSON value inside prose or code fences, and a
judgement only from a well-formed field or an explicit ``SCORE:`` / ``VERDICT:`` line.

A number somewhere in the prose ("391", "Step 1: think", "$56$") is no score, and a word
somewhere in a sentence ("I cannot ACCEPT this") is no verdict: an unreadable judgement
is reported as such (None), never guessed."""

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


def json_object(text: str) -> dict[str, Any] | None:
    """The JSON object the reply holds, or None."""
    try:
        data = extract_json(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def clamp(value: float) -> float:
    return min(1.0, max(0.0, value))


_NUMBER = r"(\d+(?:\.\d+)?)"
_SCORE_LINE = re.compile(
    rf"^[\s*#>_`]*SCORE[\s*_`]*[:=][\s*_`]*{_NUMBER}\s*(?:(/|out of)\s*{_NUMBER}|(%))?"
    r"[\s*_`.]*$", re.IGNORECASE | re.MULTILINE)


def parse_score(text: str) -> float | None:
    """A score in [0, 1] from a JSON field (``{"score": 0.8}``) or an explicit line
    (``SCORE: 0.8``, ``SCORE: 8/10``, ``SCORE: 80%``); None otherwise, and for a value
    outside [0, 1]."""
    data = json_object(text)
    if data is not None and "score" in data:
        return score_value(data["score"])
    match = _SCORE_LINE.search(text)
    if match is None:
        return None
    value = float(match.group(1))
    if match.group(3):
        denominator = float(match.group(3))
        value = value / denominator if denominator > 0 else -1.0
    elif match.group(4):
        value /= 100
    return value if 0.0 <= value <= 1.0 else None


def score_value(value: Any) -> float | None:
    """A JSON score field's value in [0, 1] (a number, or a number written as a string)."""
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if 0.0 <= number <= 1.0 else None


ACCEPT, REVISE = "accept", "revise"

_VERDICT_LINE = re.compile(
    r"^[\s*#>_`]*VERDICT[\s*_`]*[:=][\s*_`]*(ACCEPT|REVISE)\b[\s*:`_.-]*(.*)",
    re.IGNORECASE | re.MULTILINE | re.DOTALL)
_BARE_ACCEPT = re.compile(r"[\s*_`]*ACCEPT[\s*_`.!]*", re.IGNORECASE)


def parse_verdict(text: str) -> tuple[str, str] | None:
    """(ACCEPT, "") or (REVISE, diagnosis) from a JSON ``verdict`` field, a
    ``VERDICT: ACCEPT`` / ``VERDICT: REVISE: <diagnosis>`` line, or a reply that is
    nothing but ACCEPT; None when the reply says neither that way."""
    data = json_object(text)
    if data is not None and isinstance(data.get("verdict"), str):
        verdict = data["verdict"].strip().lower()
        if verdict not in (ACCEPT, REVISE):
            return None
        diagnosis = data.get("diagnosis")
        return verdict, diagnosis.strip() if isinstance(diagnosis, str) else ""
    if _BARE_ACCEPT.fullmatch(text):
        return ACCEPT, ""
    match = _VERDICT_LINE.search(text)
    if match is None:
        return None
    if match.group(1).upper() == "ACCEPT":
        return ACCEPT, ""
    return REVISE, match.group(2).strip()
