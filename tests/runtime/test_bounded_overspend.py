"""A call cannot legally cost more than its reservation: the upstream is sent the output
cap that was reserved for, a stream past it is cut with finish_reason "length", spend at
or over a budget refuses admission, and what an upstream ignoring the cap can still
overspend on non-streamed answers is bounded by in-flight calls times the overrun."""

from __future__ import annotations

import asyncio

import pytest

from tako.core.errors import QuotaExceeded
from tako.core.specs import DeploymentSpec
from tako.core.tokens import DEFAULT_OUTPUT_TOKENS, estimate_prompt_tokens
from tako.core.types import ChatRequest, Delta, End, Principal
from tests.fakes.provider import Reply, ScriptedProvider, Stream, request

ALICE = Principal("acme", "alice", "key-a")
DAILY = [{"scope": "tenant", "period": "day", "usd": 1}]


class RecordingProvider(ScriptedProvider):
    """Keeps the requests it was sent and whether its stream was closed early."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sent: list[ChatRequest] = []
        self.streams_closed = 0

    async def chat(self, req: ChatRequest):
        self.sent.append(req)
        return await super().chat(req)

    async def stream(self, req: ChatRequest):
        self.sent.append(req)
        try:
            async for chunk in super().stream(req):
                yield chunk
        except GeneratorExit:
            self.streams_closed += 1
            raise


async def _spent(runtime) -> float:
    return await runtime.spend("tenant", "acme", "day", "acme")


async def _admit_like_the_route(runtime, req: ChatRequest, usd: float):
    """The chat route reserves the prompt estimate plus the output limit (1024 unset)."""
    output = req.output_limit() or DEFAULT_OUTPUT_TOKENS
    return await runtime.admit(ALICE, "m", estimate_prompt_tokens(req) + output, usd)


async def test_without_max_tokens_the_upstream_is_sent_the_reserved_cap(make_runtime):
    runtime = await make_runtime(budgets=DAILY)
    upstream = RecordingProvider("d", [Reply(), Stream()])
    for streamed in (False, True):
        req = request(max_tokens=None)
        admission = await _admit_like_the_route(runtime, req, 0.01)
        guarded = runtime.alias_provider(admission, "a", [upstream])
        if streamed:
            _ = [chunk async for chunk in guarded.stream(req)]
        else:
            await guarded.chat(req)
    assert [r.max_tokens for r in upstream.sent] == [DEFAULT_OUTPUT_TOKENS] * 2
    # a later call of the same request reserves, and caps, its own
    later = runtime.alias_provider(await runtime.admit(ALICE, "m", 10, 0.0), "a", [upstream])
    await later.chat(request(max_tokens=None))
    await later.chat(request(max_tokens=None))
    assert upstream.sent[-1].max_tokens == DEFAULT_OUTPUT_TOKENS


async def test_a_client_limit_is_passed_on_unchanged(make_runtime):
    runtime = await make_runtime()
    upstream = RecordingProvider("d")
    req = request(max_tokens=42)
    admission = await _admit_like_the_route(runtime, req, 0.0)
    await runtime.alias_provider(admission, "a", [upstream]).chat(req)
    assert upstream.sent[0].max_tokens == 42


async def test_a_stream_past_its_reserved_completion_is_cut_with_length(make_runtime):
    runtime = await make_runtime(budgets=DAILY)
    req = request(max_tokens=20)
    reserved_usd = (estimate_prompt_tokens(req) + 20) * 1e-6
    admission = await _admit_like_the_route(runtime, req, reserved_usd)
    # an upstream that ignores max_tokens: 200 deltas of 4 characters
    careless = RecordingProvider("d", default=Stream(deltas=["abcd"] * 200, usd=1.0))
    chunks = [c async for c in runtime.alias_provider(admission, "a", [careless]).stream(req)]
    end = chunks[-1]
    assert isinstance(end, End) and end.finish_reason == "length"
    streamed = "".join(c.content or "" for c in chunks if isinstance(c, Delta))
    assert 20 * 4 < len(streamed) <= 20 * 5 + 4  # stopped reading just past the cap
    assert careless.streams_closed == 1
    assert await _spent(runtime) <= reserved_usd + 1e-12
    assert await _spent(runtime) > 0


async def test_an_upstream_keeping_to_the_cap_is_never_cut(make_runtime):
    runtime = await make_runtime()
    req = request(max_tokens=20)
    admission = await _admit_like_the_route(runtime, req, 0.0)
    # 20 tokens of ordinary English, about 4 characters each
    honest = ScriptedProvider("d", default=Stream(deltas=["word"] * 20, completion=20))
    chunks = [c async for c in runtime.alias_provider(admission, "a", [honest]).stream(req)]
    assert isinstance(chunks[-1], End) and chunks[-1].finish_reason == "stop"


async def test_admission_refuses_while_settled_spend_is_at_or_over_the_budget(make_runtime):
    runtime = await make_runtime(budgets=DAILY)
    admission = await runtime.admit(ALICE, "m", 100, 0.1)
    # an upstream that ignored the cap and billed 1.5 for a 0.1 reservation
    await runtime.alias_provider(admission, "a", [ScriptedProvider("d", [Reply(usd=1.5)])]
                                 ).chat(request())
    assert await _spent(runtime) == pytest.approx(1.5)
    for usd in (0.0, 1e-9, 0.1):
        with pytest.raises(QuotaExceeded):
            await runtime.admit(ALICE, "m", 10, usd)


async def test_exactly_at_the_budget_refuses_too(make_runtime):
    runtime = await make_runtime(budgets=DAILY)
    admission = await runtime.admit(ALICE, "m", 100, 0.5)
    await runtime.alias_provider(admission, "a", [ScriptedProvider("d", [Reply(usd=1.0)])]
                                 ).chat(request())
    with pytest.raises(QuotaExceeded):
        await runtime.admit(ALICE, "m", 10, 0.0)


async def test_residual_overspend_is_at_most_in_flight_calls_times_the_overrun(
        make_runtime):
    """Non-streamed answers from an upstream that ignores the cap: every call admitted
    while the budget still had room may cost its overrun; nothing more gets in."""
    runtime = await make_runtime(budgets=DAILY)
    reserved, actual = 0.1, 0.25
    careless = ScriptedProvider("d", default=Reply(usd=actual), delay_s=0.2)

    async def one_call() -> str:
        try:
            admission = await runtime.admit(ALICE, "m", 100, reserved)
        except QuotaExceeded:
            return "refused"
        await runtime.alias_provider(admission, "a", [careless]).chat(request())
        return "answered"

    outcomes = await asyncio.gather(*(one_call() for _ in range(25)))
    in_flight = outcomes.count("answered")
    assert in_flight == 10  # $1 of room, $0.1 a reservation
    spent = await _spent(runtime)
    assert spent == pytest.approx(in_flight * actual)
    assert spent <= 1.0 + in_flight * (actual - reserved) + 1e-9
    assert await one_call() == "refused"


async def test_a_key_without_a_budget_is_told_the_limit_it_actually_hit(make_runtime):
    runtime = await make_runtime()  # no budgets: spend is only counted
    with pytest.raises(QuotaExceeded) as denied:
        await runtime.admit(ALICE, "m", 10**12, 1e7)
    message = denied.value.message
    assert "budget of" not in message and "9.0072e+06" not in message
    assert "without a budget ($9,007,199)" in message
    assert "$10,000,000.00" in message


class ProviderWithDefault(RecordingProvider):
    """A deployment configured with its own output default (``default_max_tokens``)."""

    def __init__(self, *args, default_max_tokens: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.spec = DeploymentSpec(name=self.id, provider="anthropic", model=self.model,
                                   options={"default_max_tokens": default_max_tokens})


async def test_a_deployment_default_is_reserved_and_sent_when_the_budget_has_room(
        make_runtime):
    runtime = await make_runtime(budgets=DAILY)  # $1 at 1e-6 USD a token: plenty
    upstream = ProviderWithDefault("d", [Reply(usd=0.002)], default_max_tokens=4096)
    req = request(max_tokens=None)
    admission = await _admit_like_the_route(runtime, req, 0.001)
    guarded = runtime.alias_provider(admission, "a", [upstream])
    await guarded.chat(req)
    assert upstream.sent[0].max_tokens == 4096
    assert await _spent(runtime) == pytest.approx(0.002)  # the top-up was settled too


async def test_without_room_for_the_default_the_cap_is_what_the_budget_allowed(
        make_runtime):
    # $0.0012 a day at 1e-6 USD a token: 1,032 tokens reserved fit, 4,104 would not
    runtime = await make_runtime(budgets=[{"scope": "tenant", "period": "day",
                                           "usd": 0.0012}])
    upstream = ProviderWithDefault("d", default=Stream(usd=0.0001), default_max_tokens=4096)
    req = request(max_tokens=None)
    reserved = (estimate_prompt_tokens(req) + DEFAULT_OUTPUT_TOKENS) * 1e-6
    admission = await _admit_like_the_route(runtime, req, reserved)
    _ = [c async for c in runtime.alias_provider(admission, "a", [upstream]).stream(req)]
    assert upstream.sent[0].max_tokens == DEFAULT_OUTPUT_TOKENS
    assert await _spent(runtime) == pytest.approx(0.0001)


async def test_a_smaller_deployment_default_is_kept(make_runtime):
    runtime = await make_runtime()
    upstream = ProviderWithDefault("d", default_max_tokens=256)
    req = request(max_tokens=None)
    admission = await _admit_like_the_route(runtime, req, 0.0)
    await runtime.alias_provider(admission, "a", [upstream]).chat(req)
    assert upstream.sent[0].max_tokens == 256
