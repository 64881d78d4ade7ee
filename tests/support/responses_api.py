"""The Responses API through a real gateway: its tenants' keys and configuration, and a
streamed answer's events read and checked against OpenAI's spec."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from tests.support.gateway import TEST_KEY, Gateway, basic_config
from tests.support.openai_schema import validate

OTHER_TENANT_KEY = "sk-test-globex-responses"
CAPPED_KEY = "sk-test-capped-responses"
LIMITED_KEY = "sk-test-rpm-responses"
#: the spec's schema for each event type tako sends
EVENT_SCHEMAS = {
    "response.created": "ResponseCreatedEvent",
    "response.in_progress": "ResponseInProgressEvent",
    "response.output_item.added": "ResponseOutputItemAddedEvent",
    "response.output_item.done": "ResponseOutputItemDoneEvent",
    "response.content_part.added": "ResponseContentPartAddedEvent",
    "response.content_part.done": "ResponseContentPartDoneEvent",
    "response.output_text.delta": "ResponseTextDeltaEvent",
    "response.output_text.done": "ResponseTextDoneEvent",
    "response.function_call_arguments.delta": "ResponseFunctionCallArgumentsDeltaEvent",
    "response.function_call_arguments.done": "ResponseFunctionCallArgumentsDoneEvent",
    "response.completed": "ResponseCompletedEvent",
    "response.incomplete": "ResponseIncompleteEvent",
    "response.failed": "ResponseFailedEvent",
    "error": "ResponseErrorEvent",
}


def responses_config() -> dict[str, Any]:
    config = basic_config()
    config["deployments"][0]["price"] = {"input": 1.0, "output": 4.0}
    config["auth"]["keys"] += [
        {"key": OTHER_TENANT_KEY, "key_id": "globex", "tenant_id": "globex", "user_id": "gil"},
        {"key": CAPPED_KEY, "key_id": "capped", "tenant_id": "acme", "user_id": "cy",
         "budgets": [{"scope": "key", "period": "request", "usd": 1e-9}]},
        {"key": LIMITED_KEY, "key_id": "rpm", "tenant_id": "acme", "user_id": "rae",
         "rate_limits": [{"scope": "key", "rpm": 1}]}]
    return config


def validate_event(event: dict[str, Any]) -> None:
    validate(EVENT_SCHEMAS[event["type"]], event)
    validate("ResponseStreamEvent", event)


def stream_events(gw: Gateway, body: dict[str, Any], *, key: str = TEST_KEY,
                  skip: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """A streamed answer's events: each validated against the spec (but the types in
    ``skip``), the ``event:`` lines naming them, sequence numbers 0, 1, 2..."""
    with httpx.stream("POST", gw.base_url + "/responses", json={**body, "stream": True},
                      headers={"authorization": f"Bearer {key}"}, timeout=10) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line and not line.startswith(":")]
    names = [line[7:] for line in lines if line.startswith("event: ")]
    events = [orjson.loads(line[6:]) for line in lines if line.startswith("data: ")]
    assert names == [e["type"] for e in events]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    for event in events:
        if event["type"] not in skip:
            validate_event(event)
    return events
