"""Request bodies the load generators send: a one-line ping (as chat, and as Responses and
Messages requests), streams, and bodies of a given size (1 KB of one question, a 20 KB chat
history, a 1 MB document)."""

from __future__ import annotations

import json
from typing import Any

JSON_MODEL = "bench"  # the tako deployment answering with the canned completion
BODY_SIZES = {"1 KB": 1_000, "20 KB": 20_000, "1 MB": 1_000_000}
HISTORY_TURNS = 20
MAX_TOKENS = 16  # the canned completion is one token
STREAM_MAX_TOKENS = 4096  # above the 1,000-chunk stream's tokens: tako cuts at max_tokens
WORDS = ("the gateway forwards each request to the vendor and counts what it cost "
         "while the budget and the rate limit decide whether it may run at all ")


def encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def chat(model: str, messages: list[dict[str, str]], *, stream: bool = False) -> bytes:
    body: dict[str, Any] = {"model": model, "messages": messages, "max_tokens": MAX_TOKENS}
    if stream:
        body.update(stream=True, max_tokens=STREAM_MAX_TOKENS)
    return encode(body)


def ping(model: str = JSON_MODEL, *, stream: bool = False) -> bytes:
    return chat(model, [{"role": "user", "content": "ping"}], stream=stream)


def responses_ping(model: str = JSON_MODEL) -> bytes:
    """The ping as a non-streamed OpenAI Responses request, nothing stored."""
    return encode({"model": model, "input": "ping", "store": False})


def messages_ping(model: str = JSON_MODEL) -> bytes:
    """The ping as a non-streamed Anthropic Messages request."""
    return encode({"model": model, "max_tokens": MAX_TOKENS,
                   "messages": [{"role": "user", "content": "ping"}]})


def prose(length: int) -> str:
    repeats = length // len(WORDS) + 1
    return (WORDS * repeats)[:length]


def _history(turn_length: int) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": "You are a terse assistant."}]
    for turn in range(HISTORY_TURNS):
        role = "user" if turn % 2 == 0 else "assistant"
        messages.append({"role": role, "content": prose(turn_length)})
    messages.append({"role": "user", "content": ""})
    return messages


def body_of_size(size: int) -> bytes:
    """A chat request of exactly ``size`` bytes: a question for small sizes, a history of
    ``HISTORY_TURNS`` turns from 10 KB up, one long document from 500 KB up; the last user
    message is padded to the size."""
    if size >= 500_000:
        messages = [{"role": "user", "content": "Summarise this document:\n"},
                    {"role": "user", "content": ""}]
    elif size >= 10_000:
        messages = _history(size // (HISTORY_TURNS + 2))
    else:
        messages = [{"role": "system", "content": "You are a terse assistant."},
                    {"role": "user", "content": ""}]
    unpadded = len(chat(JSON_MODEL, messages))
    messages[-1]["content"] = prose(max(0, size - unpadded))
    return chat(JSON_MODEL, messages)
