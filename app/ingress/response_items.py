"""Responses input items (``tests/data/openai-openapi.yaml``: InputItem, EasyInputMessage,
FunctionToolCall, FunctionCallOutputItemParam) as Chat Completions messages, and the
conversation items a stored response keeps (ItemResource shapes, each with an id)."""

from __future__ import annotations

import random
import time
from typing import Any

from tako.core.errors import InvalidRequest
from tako.core.types import Usage

ROLES = ("user", "assistant", "system", "developer")


def new_id(prefix: str) -> str:
    """A unique id (not a secret: stored responses are scoped by tenant, not by id)."""
    return f"{prefix}_{random.getrandbits(192):048x}"


def _bad(index: int, message: str, field: str = "") -> InvalidRequest:
    where = f"input[{index}]" + (f".{field}" if field else "")
    return InvalidRequest(f"invalid {where}: {message}", param=where, code="invalid_value")


def _input_part(index: int, part: Any) -> dict[str, Any]:
    """One input content part as a Chat Completions content part."""
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in ("input_text", "output_text") and isinstance(part.get("text"), str):
        return {"type": "text", "text": part["text"]}
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str) or not url:
            raise _bad(index, "input_image needs an image_url (a data URL or an http(s) URL);"
                       " file ids are not supported", "content")
        image: dict[str, Any] = {"url": url}
        if part.get("detail"):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_file" and isinstance(part.get("file_data"), str):
        file = {k: part[k] for k in ("file_data", "filename") if part.get(k)}
        return {"type": "file", "file": file}
    raise _bad(index, f"unsupported content part type {str(kind)[:40]!r}", "content")


def _text_of(index: int, content: Any) -> str:
    if isinstance(content, str):
        return content
    texts = []
    for part in content or ():
        if not isinstance(part, dict):
            raise _bad(index, "content parts must be objects", "content")
        text = part.get("text") if part.get("type") != "refusal" else part.get("refusal")
        texts.append(text if isinstance(text, str) else "")
    return "".join(texts)


def _message(index: int, item: dict[str, Any]) -> dict[str, Any]:
    role = item.get("role")
    if role not in ROLES:
        raise _bad(index, f"role must be one of {', '.join(ROLES)}", "role")
    content = item.get("content")
    if not isinstance(content, (str, list)):
        raise _bad(index, "content must be a string or a list of parts", "content")
    if role == "assistant" or isinstance(content, str):
        return {"role": role, "content": _text_of(index, content)}
    return {"role": role, "content": [_input_part(index, p) for p in content]}


def _function_call(index: int, item: dict[str, Any]) -> dict[str, Any]:
    call_id, name = item.get("call_id"), item.get("name")
    if not isinstance(call_id, str) or not isinstance(name, str):
        raise _bad(index, "a function_call needs call_id and name")
    arguments = item.get("arguments")
    return {"id": call_id, "type": "function",
            "function": {"name": name, "arguments": arguments if isinstance(arguments, str)
                         else "{}"}}


def _add_call(messages: list[dict[str, Any]], call: dict[str, Any]) -> None:
    """Calls after an assistant turn belong to it (one message: text and its calls)."""
    last = messages[-1] if messages else None
    if last is None or last["role"] != "assistant":
        last = {"role": "assistant", "content": None}
        messages.append(last)
    last.setdefault("tool_calls", []).append(call)


def _call_output(index: int, item: dict[str, Any]) -> dict[str, Any]:
    call_id, output = item.get("call_id"), item.get("output")
    if not isinstance(call_id, str):
        raise _bad(index, "a function_call_output needs call_id")
    if not isinstance(output, (str, list)):
        raise _bad(index, "output must be a string or a list of parts", "output")
    return {"role": "tool", "tool_call_id": call_id, "content": _text_of(index, output)}


SKIPPED = ("reasoning",)  # tako's answers carry none; a client may send back others'


def to_messages(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chat Completions messages for a list of Responses input items."""
    messages: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        kind = item.get("type", "message")
        if kind == "message":
            messages.append(_message(index, item))
        elif kind == "function_call":
            _add_call(messages, _function_call(index, item))
        elif kind == "function_call_output":
            messages.append(_call_output(index, item))
        elif kind not in SKIPPED:
            raise _bad(index, f"unsupported item type {str(kind)[:40]!r}; tako takes "
                       f"message, function_call and function_call_output items", "type")
    return messages


def as_items(value: Any) -> list[dict[str, Any]]:
    """``input`` as a list of items: a string is one user message."""
    if value is None:
        return []
    if isinstance(value, str):
        return [{"type": "message", "role": "user",
                 "content": [{"type": "input_text", "text": value}]}]
    if not isinstance(value, list) or not all(isinstance(i, dict) for i in value):
        raise InvalidRequest("input must be a string or a list of items", param="input",
                             code="invalid_value")
    return value


def _stored_content(item: dict[str, Any]) -> list[dict[str, Any]]:
    content = item.get("content")
    if isinstance(content, str):
        kind = "output_text" if item.get("role") == "assistant" else "input_text"
        part: dict[str, Any] = {"type": kind, "text": content}
        if kind == "output_text":
            part["annotations"] = []
        return [part]
    return list(content or [])


def resource(item: dict[str, Any]) -> dict[str, Any]:
    """An input item as the API lists it back: with an id and a status."""
    kind = item.get("type", "message")
    if kind == "message":
        shaped = {"id": item.get("id") or new_id("msg"), "type": "message",
                  "role": item.get("role"), "status": "completed",
                  "content": _stored_content(item)}
    elif kind == "function_call":
        shaped = {**item, "id": item.get("id") or new_id("fc"), "status": "completed"}
    elif kind == "function_call_output":
        shaped = {**item, "id": item.get("id") or new_id("fco"), "status": "completed"}
    else:
        shaped = {**item, "id": item.get("id") or new_id("item")}
    return shaped


# ---- output items and the finished Response ----


def usage_body(usage: Usage) -> dict[str, Any]:
    """ResponseUsage, plus tako's ``cost_usd`` (and ``estimated`` when counted here)."""
    body: dict[str, Any] = {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens, "cache_write_tokens": 0},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total_tokens,
        "cost_usd": round(usage.cost_usd, 9),
    }
    if usage.estimated:
        body["estimated"] = True
    return body


def finished(body: dict[str, Any], finish_reason: str, usage: Usage) -> dict[str, Any]:
    """The Response object once its output is complete."""
    reason = {"length": "max_output_tokens", "content_filter": "content_filter"}.get(
        finish_reason)
    return {**body, "status": "incomplete" if reason else "completed",
            "completed_at": int(time.time()),
            "incomplete_details": {"reason": reason} if reason else None,
            "usage": usage_body(usage)}


def message_item(text: str, item_id: str | None = None,
                 status: str = "completed") -> dict[str, Any]:
    return {"id": item_id or new_id("msg"), "type": "message", "role": "assistant",
            "status": status, "content": [{"type": "output_text", "text": text,
                                           "annotations": [], "logprobs": []}]}


def call_item(call_id: str, name: str, arguments: str, item_id: str | None = None,
              status: str = "completed") -> dict[str, Any]:
    return {"id": item_id or new_id("fc"), "type": "function_call", "status": status,
            "call_id": call_id, "name": name, "arguments": arguments}
