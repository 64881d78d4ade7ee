"""Multi-LLM orchestrators behind the model name, end to end: a real ``tako serve`` process,
the official openai SDK, and one scripted OpenAI-compatible upstream serving every role
(coordinator, workers, verifier, judge, router) under its own model name."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import openai
import orjson
import pytest

from tests.fakes.openai import Call, FakeOpenAI, serve_openai
from tests.support.gateway import TEST_KEY, Gateway, gateway
from tests.support.openai_schema import validate_chunk, validate_completion, validate_error
from tests.support.orchestrator_scenario import (
    CASES,
    FINAL_FROM,
    LONG_CHUNKS,
    LONG_PIECE,
    PRICE,
    SCRIPT,
    Case,
    ask,
    check_answer,
    orchestrator_config,
)


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[str, FakeOpenAI]]:
    with serve_openai(SCRIPT) as served:
        yield served


@pytest.fixture(scope="module")
def gw(upstream: tuple[str, FakeOpenAI]) -> Iterator[Gateway]:
    with gateway(orchestrator_config(upstream[0])) as g:
        yield g


@pytest.fixture
def fake(upstream: tuple[str, FakeOpenAI]) -> FakeOpenAI:
    upstream[1].reset()
    return upstream[1]


@pytest.fixture(scope="module")
def client(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=TEST_KEY, max_retries=0, timeout=30)


def sse_payloads(lines: Iterator[str]) -> list[str]:
    return [line[len("data: "):] for line in lines if line.startswith("data: ")]


# ---- every profile, four ways ----


@pytest.mark.parametrize("name", CASES)
def test_non_streaming_answer_and_summed_usage(name: str, client: openai.OpenAI,
                                               fake: FakeOpenAI) -> None:
    case = CASES[name]
    raw = client.chat.completions.with_raw_response.create(model=case.profile,
                                                           messages=ask(case))
    body = orjson.loads(raw.content)
    validate_completion(body)
    assert "tako_trace" not in body
    completion = raw.parse()
    assert completion.model == case.profile
    check_answer(name, case, completion.choices[0].message.content, fake)
    prompt, output = fake.usage_sum()
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (prompt,
                                                                                    output)
    assert all(c.finished and not c.failed for c in fake.requests)


@pytest.mark.parametrize("name", CASES)
def test_streaming_without_events_is_plain_openai(name: str, client: openai.OpenAI,
                                                  fake: FakeOpenAI) -> None:
    case = CASES[name]
    with client.chat.completions.with_streaming_response.create(
            model=case.profile, messages=ask(case), stream=True,
            stream_options={"include_usage": True}) as response:
        payloads = sse_payloads(response.iter_lines())
    assert payloads[-1] == "[DONE]" and payloads.count("[DONE]") == 1
    chunks = [orjson.loads(p) for p in payloads[:-1]]
    for chunk in chunks:
        validate_chunk(chunk)
        assert "tako_event" not in chunk and "error" not in chunk
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks
                   if c["choices"])
    check_answer(name, case, text, fake)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    finishes = [c["choices"][0]["finish_reason"] for c in chunks
                if c["choices"] and c["choices"][0]["finish_reason"]]
    assert finishes == ["stop"]
    usage = chunks[-1]["usage"]
    assert not chunks[-1]["choices"]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == fake.usage_sum()


def event_checks(name: str, events: list[dict[str, Any]], fake: FakeOpenAI) -> None:
    """What the events of each case say, beyond their kinds."""
    of = {kind: [e for e in events if e["kind"] == kind] for kind in {e["kind"] for e in events}}
    assert events[-1]["kind"] == "final"
    assert of["final"][0]["usage"]["prompt_tokens"] == fake.usage_sum()[0]
    if name in ("conductor", "conductor-nested", "trinity", "trinity-llm"):
        assert of["final"][0]["deployment"] == "beta"
    if name == "conductor":
        assert [(e["step"], e["worker"]) for e in sorted(of["step_start"],
                                                         key=lambda e: e["step"])] == [
            (0, "alpha"), (1, "beta"), (2, "beta")]
    elif name == "conductor-nested":
        assert of["recursion"] == [{"kind": "recursion", "depth": 1, "worker": "self"}]
        assert {e["level"] for e in of["step_start"]} == {0, 1}
    elif name in ("trinity", "trinity-llm"):
        assert [e["role"] for e in of["step_start"]] == [
            "thinker", "worker", "verifier", "worker", "verifier"]
        assert [(e["step"], e["branch"], e["score"]) for e in of["verifier_score"]] == [
            (2, 0, 0.0), (4, 0, 1.0)]
    elif name == "selfcaller-rules":
        assert [(e["depth"], e["confidence"]) for e in of["recursion"]] == [(0, 0.0),
                                                                          (1, 1.0)]
        assert [e["name"] for e in of["tool_call_start"]] == ["self_call"]
        assert of["tool_result"][0]["output"] == "6 * 7 = 42"
        kinds = [e["kind"] for e in events]
        assert kinds.index("tool_call_start") < kinds.index("tool_result") < kinds.index(
            "recursion")
    elif name == "selfcaller-judge":
        assert [(e["depth"], e["confidence"]) for e in of["recursion"]] == [(0, 0.2),
                                                                          (1, 0.95)]
    else:  # abmcts: one step_start and one verifier_score per generated answer
        workers = [c for c in fake.requests if c.model in ("alpha", "beta")]
        assert len(of["step_start"]) == len(of["verifier_score"]) == len(workers)
        allowed = {0.3, 0.6, 0.9} if name == "abmcts-judge" else {0.5, 1.0}
        for e in of["verifier_score"]:
            assert {"step", "branch", "score"} <= set(e) and e["score"] in allowed
            assert e["action"] in ("alpha", "beta")
        assert len({e["branch"] for e in of["verifier_score"]}) == len(workers)


HEADER_CASES = {**CASES, "conductor-order": Case(
    "team-conductor", "ORDER-CHECK: what is six times seven?",
    "Final answer: 42 (seen: nothing)", None)}


def answering_model(name: str, content: str, fake: FakeOpenAI) -> str:
    """The served model whose reply is the answer: each case's known worker, or for
    AB-MCTS the worker call whose reply the search picked."""
    known = {"conductor": "beta", "conductor-nested": "beta", "conductor-order": "beta",
             "trinity": "beta", "trinity-llm": "beta", "selfcaller-rules": "alpha",
             "selfcaller-judge": "beta"}
    if name in known:
        return known[name]
    (call,) = [c for c in fake.requests if c.model in ("alpha", "beta") and c.reply == content]
    return call.model


@pytest.mark.parametrize("name", HEADER_CASES)
def test_the_deployment_header_names_the_answer_s_deployment(
        name: str, client: openai.OpenAI, fake: FakeOpenAI) -> None:
    case = HEADER_CASES[name]
    raw = client.chat.completions.with_raw_response.create(model=case.profile,
                                                           messages=ask(case))
    content = raw.parse().choices[0].message.content or ""
    if case.answer is not None:
        assert content == case.answer
    expected = answering_model(name, content, fake)
    if name in ("trinity", "trinity-llm", "selfcaller-judge"):
        assert fake.requests[-1].model != expected  # a verifier or judge spoke last
    if name == "conductor-order":
        assert fake.requests[-1].model == "alpha"  # the final step did not start last
    assert raw.headers["x-tako-deployment"] == expected
    fake.reset()
    with client.chat.completions.with_streaming_response.create(
            model=case.profile, messages=ask(case), stream=True) as response:
        payloads = sse_payloads(response.iter_lines())
        header = response.headers.get("x-tako-deployment")
    text = "".join(orjson.loads(p)["choices"][0]["delta"].get("content") or ""
                   for p in payloads[:-1] if orjson.loads(p)["choices"])
    assert header == answering_model(name, text, fake)


@pytest.mark.parametrize("name", CASES)
def test_streaming_with_events_parses_in_the_stock_sdk(name: str, client: openai.OpenAI,
                                                       fake: FakeOpenAI) -> None:
    case = CASES[name]
    stream = client.chat.completions.create(
        model=case.profile, messages=ask(case), stream=True,
        stream_options={"include_usage": True}, extra_body={"tako": {"events": True}})
    chunks = list(stream)
    events = [c.model_extra["tako_event"] for c in chunks
              if c.model_extra and "tako_event" in c.model_extra]
    for chunk in chunks:
        if chunk.model_extra and "tako_event" in chunk.model_extra:
            assert chunk.choices == [] and chunk.object == "chat.completion.chunk"
            validate_chunk(chunk.model_dump(exclude_unset=True))
    assert case.events <= {e["kind"] for e in events}
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    check_answer(name, case, text, fake)
    event_checks(name, events, fake)
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == fake.usage_sum()[0]


def test_events_opt_in_by_header(client: openai.OpenAI, fake: FakeOpenAI) -> None:
    case = CASES["trinity"]
    stream = client.chat.completions.create(model=case.profile, messages=ask(case),
                                            stream=True, extra_headers={"x-tako-events": "1"})
    kinds = [c.model_extra["tako_event"]["kind"] for c in stream
             if c.model_extra and "tako_event" in c.model_extra]
    assert kinds.count("verifier_score") == 2


def trace_checks(name: str, trace: list[dict[str, Any]], fake: FakeOpenAI) -> None:
    of: dict[str, list[dict[str, Any]]] = {}
    for entry in trace:
        of.setdefault(entry["type"], []).append(entry)
    if name == "conductor":
        assert [(s["worker"], s["access"]) for s in of["workflow"][0]["steps"]] == [
            ("alpha", []), ("beta", []), ("beta", [0])]
        outputs = {s["step"]: s["output"] for s in of["step"]}
        assert outputs[0].startswith("FACT-ALPHA") and outputs[1].startswith("FACT-BETA")
    elif name == "conductor-nested":
        assert sorted(w["level"] for w in of["workflow"]) == [0, 1]
    elif name in ("trinity", "trinity-llm"):
        assert [(t["role"], t["llm"], t["verdict"]) for t in of["turn"]] == [
            ("thinker", "alpha", None), ("worker", "beta", None),
            ("verifier", "judge", "revise"), ("worker", "beta", None),
            ("verifier", "judge", "accept")]
        if name == "trinity-llm":
            assert of["router_fallbacks"] == [{"type": "router_fallbacks", "count": 1}]
    elif name == "selfcaller-rules":
        assert [(a["depth"], a["score"]) for a in of["attempt"]] == [(0, 0.0), (1, 1.0)]
        assert of["self_call"][0]["answer"] == "6 * 7 = 42"
    elif name == "selfcaller-judge":
        assert [(a["depth"], a["score"], a["feedback"]) for a in of["attempt"]] == [
            (0, 0.2, "Paris is in France"), (1, 0.95, "correct")]
    else:
        workers = [c for c in fake.requests if c.model in ("alpha", "beta")]
        assert len(of["node"]) == len(workers)
        assert {n["action"] for n in of["node"]} <= {"alpha", "beta"}
        summary = of["abmcts"][0]
        assert summary["calls"] == len(workers)
        assert summary["score"] == max(n["score"] for n in of["node"])


@pytest.mark.parametrize("name", CASES)
def test_trace_lists_the_run(name: str, client: openai.OpenAI, fake: FakeOpenAI) -> None:
    case = CASES[name]
    raw = client.chat.completions.with_raw_response.create(
        model=case.profile, messages=ask(case), extra_body={"tako": {"trace": True}})
    body = orjson.loads(raw.content)
    validate_completion(body)
    check_answer(name, case, body["choices"][0]["message"]["content"], fake)
    trace = body["tako_trace"]
    assert isinstance(trace, list) and trace
    assert case.trace_types <= {entry["type"] for entry in trace}
    trace_checks(name, trace, fake)


# ---- conductor specifics ----


def test_conductor_workers_see_only_what_access_grants(client: openai.OpenAI,
                                                       fake: FakeOpenAI) -> None:
    case = CASES["conductor"]
    stream = client.chat.completions.create(model=case.profile, messages=ask(case),
                                            stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == (
        case.answer)
    (plan,) = fake.calls_to("coord")
    assert "ACCESS-CHECK" in plan.prompt_text
    # the plan is a control message: a JSON schema, temperature 0, its own output limit
    assert plan.body["response_format"]["type"] == "json_schema"
    assert "steps" in plan.body["response_format"]["json_schema"]["schema"]["properties"]
    assert (plan.body["temperature"], plan.body["max_tokens"]) == (0.0, 2048)
    workers = fake.calls_to("alpha") + fake.calls_to("beta")
    by_subtask = {c.last_text: c for c in workers}
    research = by_subtask["research the topic: list facts"]
    side = by_subtask["independent side note"]
    final = by_subtask[FINAL_FROM]
    for call in workers:  # the client's conversation never reaches a worker
        assert "ACCESS-CHECK" not in call.prompt_text
    assert "FACT" not in research.prompt_text and "FACT" not in side.prompt_text
    assert research.reply in final.prompt_text  # access [0]
    assert side.reply not in final.prompt_text  # no access to step 1
    assert "FACT-BETA" not in final.prompt_text
    # only the last step streams (its text goes to the client as it arrives)
    assert final.stream and not research.stream and not side.stream
    assert all("response_format" not in c.body for c in workers)


# ---- failures ----


def test_upstream_failing_mid_stream_ends_with_an_error_frame(
        client: openai.OpenAI, fake: FakeOpenAI) -> None:
    messages = [{"role": "user", "content": "FLAKY: what is six times seven?"}]
    with client.chat.completions.with_streaming_response.create(
            model="team-conductor", messages=messages, stream=True) as response:
        assert response.status_code == 200
        payloads = sse_payloads(response.iter_lines())
    assert payloads[-1] == "[DONE]"
    error = orjson.loads(payloads[-2])
    validate_error(error)
    assert "flaky" in error["error"]["message"]
    chunks = [orjson.loads(p) for p in payloads[:-2]]
    for chunk in chunks:
        validate_chunk(chunk)
    partial = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert partial == "Partial answer that"  # three pieces went out before the failure
    assert not any(c["choices"][0]["finish_reason"] for c in chunks)
    (flaky,) = fake.calls_to("flaky")
    assert flaky.failed

    stream = client.chat.completions.create(model="team-conductor", messages=messages,
                                            stream=True)
    received: list[str] = []
    with pytest.raises(openai.APIError, match="flaky"):
        for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
    assert "".join(received) == "Partial answer that"


def test_upstream_failure_before_the_first_byte_is_an_http_error(
        client: openai.OpenAI, fake: FakeOpenAI) -> None:
    messages = [{"role": "user", "content": "BROKEN: what is six times seven?"}]
    with pytest.raises(openai.APIStatusError) as failure:
        client.chat.completions.create(model="team-trinity-llm", messages=messages)
    assert failure.value.status_code == 502
    assert "router" in failure.value.message
    with pytest.raises(openai.APIStatusError) as streamed:
        client.chat.completions.create(model="team-trinity-llm", messages=messages,
                                       stream=True)
    assert streamed.value.status_code == 502
    validate_error(streamed.value.response.json())
    assert [c.model for c in fake.requests] == ["router", "router"]


# ---- usage and cost ----


def access_lines(gw: Gateway, request_id: str) -> list[dict[str, Any]]:
    """The access-log lines of ``request_id``, once written (flushed once per loop turn)."""
    deadline = time.monotonic() + 10
    while True:
        lines = [orjson.loads(line) for line in gw.log().splitlines()
                 if line.startswith("{") and request_id in line]
        if lines or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def test_a_usage_less_stream_is_counted_and_marked_estimated(
        gw: Gateway, client: openai.OpenAI, fake: FakeOpenAI) -> None:
    question = [{"role": "user", "content": "Name a prime number."}]
    request_id = f"mute-{time.monotonic_ns()}"
    stream = client.chat.completions.create(model="mute", messages=question, stream=True,
                                            stream_options={"include_usage": True},
                                            extra_headers={"x-request-id": request_id})
    chunks = list(stream)
    (call,) = fake.calls_to("mute")
    assert call.body["stream_options"] == {"include_usage": True}  # it was asked for
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens == 8  # 24 characters, 3 a token
    assert usage.prompt_tokens > 0
    extra = usage.model_extra or {}
    assert extra["estimated"] is True
    assert extra["cost_usd"] == pytest.approx(
        (usage.prompt_tokens * 1.0 + usage.completion_tokens * 2.0) / 1e6)
    (line,) = access_lines(gw, request_id)  # the access log counts the same
    assert (line["prompt_tokens"], line["completion_tokens"]) == (usage.prompt_tokens,
                                                                  usage.completion_tokens)
    assert line["cost_usd"] == pytest.approx(extra["cost_usd"])
    raw = client.chat.completions.with_raw_response.create(model="mute", messages=question)
    plain = raw.parse()
    assert plain.usage is not None and "estimated" not in (plain.usage.model_extra or {})
    cost = (plain.usage.model_extra or {})["cost_usd"]
    assert cost > 0 and float(raw.headers["x-tako-cost-usd"]) == pytest.approx(cost)


@pytest.mark.parametrize("name", ["conductor", "trinity", "abmcts-judge"])
def test_the_cost_header_is_what_the_whole_run_spent(name: str, client: openai.OpenAI,
                                                     fake: FakeOpenAI) -> None:
    case = CASES[name]
    raw = client.chat.completions.with_raw_response.create(model=case.profile,
                                                           messages=ask(case))
    usage = raw.parse().usage
    assert usage is not None
    prompt, completion = fake.usage_sum()
    spent = (prompt * PRICE["input"] + completion * PRICE["output"]) / 1e6
    assert (usage.model_extra or {})["cost_usd"] == pytest.approx(spent)
    assert float(raw.headers["x-tako-cost-usd"]) == pytest.approx(spent)


# ---- backpressure ----


def _open_stream(gw: Gateway, body: dict[str, Any]) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    sock.connect(("127.0.0.1", gw.port))
    payload = orjson.dumps(body)
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n"
        b"authorization: Bearer " + TEST_KEY.encode() + b"\r\n"
        b"content-type: application/json\r\ncontent-length: "
        + str(len(payload)).encode() + b"\r\n\r\n" + payload)
    sock.settimeout(10)
    return sock


def _settled(call: Call, quiet_s: float = 0.8, limit_s: float = 6.0) -> int:
    """The upstream's sent-chunk count once it stopped growing for ``quiet_s``."""
    deadline = time.monotonic() + limit_s
    last, since = call.chunks_sent, time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = call.chunks_sent
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return now
    raise AssertionError(f"the upstream kept streaming ({last} chunks) while the client "
                         "read nothing")


def _report_call(fake: FakeOpenAI) -> Call:
    deadline = time.monotonic() + 5
    while not fake.calls_to("beta") and time.monotonic() < deadline:
        time.sleep(0.02)
    (report,) = fake.calls_to("beta")
    return report


# the client's max_tokens applies to the final answer: room for the whole report
LONG_REQUEST = {"model": "team-conductor", "stream": True, "max_tokens": 50_000_000,
                "messages": [{"role": "user", "content": "LONG REPORT: tell me everything"}]}


def test_a_slow_client_holds_back_the_upstream(gw: Gateway, fake: FakeOpenAI) -> None:
    with _open_stream(gw, LONG_REQUEST) as sock:
        assert sock.recv(512).startswith(b"HTTP/1.1 200")
        report = _report_call(fake)
        stalled = _settled(report)
        # the client has read half a kilobyte: what the upstream sent meanwhile is only
        # what the socket buffers and the gateway's bounded queue hold
        assert 0 < stalled < LONG_CHUNKS // 2, stalled
        assert not report.finished
        received = 0
        resumed = time.monotonic() + 5
        while report.chunks_sent <= stalled + 8 and time.monotonic() < resumed:
            received += len(sock.recv(1 << 20))  # reading again lets the upstream go on
        assert report.chunks_sent > stalled + 8
        # the stall held back roughly what was buffered: far less than the whole report
        assert received < LONG_CHUNKS * len(LONG_PIECE) // 2


@pytest.mark.parametrize("trial", range(3))
def test_a_client_leaving_a_flowing_stream_stops_the_upstream(
        trial: int, gw: Gateway, fake: FakeOpenAI) -> None:
    with _open_stream(gw, LONG_REQUEST) as sock:
        assert sock.recv(512).startswith(b"HTTP/1.1 200")
        report = _report_call(fake)
        received = 0
        while received < (4 + trial) * 1024 * 1024:  # still flowing when the client leaves
            received += len(sock.recv(1 << 20))
    gone = time.monotonic() + 5
    while not report.failed and time.monotonic() < gone:
        time.sleep(0.02)
    assert report.failed and not report.finished
    assert report.chunks_sent < LONG_CHUNKS // 2
