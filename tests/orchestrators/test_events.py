"""Every kind's event stream ends with ``final`` and then the End; turning events on does
not change what a run counts."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tako.core.types import ChatChunk, ChatRequest, Delta, End, OrchEvent, Usage
from tako.orchestrators.api import run
from tests.fakes.provider import ScriptedProvider
from tests.support.orchestrator_profiles import PROFILES

REQ = {"messages": [{"role": "user", "content": "Name a prime number."}]}

EVERY_KIND = {"single": {"deployment": "m"},
              "single-with-tools": {"deployment": "m", "tools": ["calculator"]}, **PROFILES}


def model() -> ScriptedProvider:
    plan = '[{"worker": "m", "subtask": "answer"}]'
    return ScriptedProvider("m", rules=[("You coordinate", plan),
                          ("You are the Verifier", "VERDICT: ACCEPT"),
                          ("strict grader", "SCORE: 1.0")],
                    default="7", match_all=True)


class UsagelessStreams(ScriptedProvider):
    """Answers JSON with usage, but its streams carry none (llama.cpp 0.3.x)."""

    async def stream(self, req: ChatRequest) -> AsyncIterator[ChatChunk]:
        async for item in super().stream(req):
            yield End(item.finish_reason, Usage()) if isinstance(item, End) else item


def kind_of(name: str) -> str:
    return "single" if name.startswith("single") else name


@pytest.mark.parametrize("name", sorted(EVERY_KIND))
async def test_every_event_stream_ends_with_final(name: str) -> None:
    from tako.tools.builtin import BUILTIN

    profile = {"kind": kind_of(name), "params": EVERY_KIND[name]}
    items = [i async for i in await run(profile, REQ, {"m": model()}, stream=True,
                                        tools=[BUILTIN["calculator"]])]
    assert isinstance(items[-1], End)
    final = items[-2]
    assert isinstance(final, OrchEvent) and final.kind == "final"
    assert [i for i in items if isinstance(i, OrchEvent) and i.kind == "final"] == [final]
    assert final.data["usage"]["total_tokens"] == items[-1].usage.total_tokens > 0
    assert "".join(i.content or "" for i in items if isinstance(i, Delta)) == "7"


async def test_events_do_not_change_the_selfcallers_count() -> None:
    profile = {"kind": "selfcaller", "params": {
        "inner": {"kind": "single", "params": {"deployment": "m"}},
        "verifier": {"kind": "llm", "deployment": "m"}, "threshold": 0.9, "max_depth": 1}}
    ends = []
    for events in (False, True):
        m = UsagelessStreams("m", rules=[("strict grader", "SCORE: 0.5")], default="7",
                             match_all=True)
        items = [i async for i in await run(profile, REQ, {"m": m}, stream=True,
                                            events=events)]
        ends.append(items[-1])
        assert all(not r.stream for r in m.requests[:-1])
    assert ends[0].usage == ends[1].usage
    assert (ends[0].usage.prompt_tokens, ends[0].usage.completion_tokens) == (40, 20)
