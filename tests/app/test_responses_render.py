"""The Responses event renderer on its own: every event it writes validates against the
spec, also for streams a vendor interleaves (text between tool-call fragments), answers cut
at the output limit and failures after the first byte."""

from __future__ import annotations

from typing import Any

import orjson

from tako.app.ingress.response_store import MemoryResponseStore
from tako.app.ingress.responses import ResponsesIngress
from tako.app.ingress.responses_stream import ResponseEventRenderer
from tako.core.errors import RateLimited, UpstreamTransient
from tako.core.types import Delta, End, ToolCallDelta, Usage
from tests.support.responses_api import validate_event


def renderer(**body: Any) -> ResponseEventRenderer:
    ingress = ResponsesIngress(MemoryResponseStore())
    parsed = ingress.parse(orjson.dumps({"model": "m", "input": "hi", "stream": True, **body}))
    return ingress.frames(parsed)


def events_of(frames: bytes) -> list[dict[str, Any]]:
    events = [orjson.loads(line[6:]) for line in frames.decode().splitlines()
              if line.startswith("data: ")]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    for event in events:
        validate_event(event)
    return events


def test_interleaved_text_and_call_fragments_stay_in_their_items() -> None:
    r = renderer()
    frames = b"".join([
        r.delta(Delta(tool_calls=[ToolCallDelta(0, "call_a", "get_weather", "")])),
        r.delta(Delta(content="Let me ")),
        r.delta(Delta(tool_calls=[ToolCallDelta(0, arguments='{"city": ')])),
        r.delta(Delta(tool_calls=[ToolCallDelta(1, "call_b", "get_time", '{}')])),
        r.delta(Delta(content="check.")),
        r.delta(Delta(tool_calls=[ToolCallDelta(0, arguments='"Oslo"}')])),
        r.end(End("tool_calls", Usage(prompt_tokens=5, completion_tokens=7, cached_tokens=2))),
    ])
    events = events_of(frames)
    final = events[-1]["response"]
    assert events[-1]["type"] == "response.completed"
    assert [(o["type"], o.get("arguments"), o.get("call_id")) for o in final["output"]] == [
        ("function_call", '{"city": "Oslo"}', "call_a"), ("message", None, None),
        ("function_call", "{}", "call_b")]
    assert final["output"][1]["content"][0]["text"] == "Let me check."
    assert final["usage"]["input_tokens_details"]["cached_tokens"] == 2
    done = [e["item"]["id"] for e in events if e["type"] == "response.output_item.done"]
    assert done == [o["id"] for o in final["output"]]


def test_cut_at_the_output_limit_is_incomplete() -> None:
    r = renderer(max_output_tokens=16)
    events = events_of(r.delta(Delta(content="a long")) + r.end(End("length")))
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


def test_failure_after_the_first_byte() -> None:
    r = renderer()
    events = events_of(r.delta(Delta(content="par")) + r.error(UpstreamTransient("gone")))
    assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
    failed = events[-1]["response"]
    assert failed["error"] == {"code": "server_error", "message": "gone"}
    assert failed["output"][0]["status"] == "incomplete"
    limited = renderer()
    events = events_of(limited.error(RateLimited("slow down")))
    assert events[-1]["response"]["error"]["code"] == "rate_limit_exceeded"
