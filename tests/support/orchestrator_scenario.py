"""The orchestrators' end-to-end scenario: one scripted OpenAI-compatible upstream serving
every role (coordinator, workers, verifier, judge, router) under its own model name
(``SCRIPT``), the profiles built on them (``PROFILES``), the questions each profile is
asked (``CASES``) and what each must answer (``check_answer``)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.openai import Call, FakeOpenAI, Reply, Rule
from tests.support.gateway import basic_config

MODELS = ("coord", "alpha", "beta", "judge", "router", "flaky")

# ---- the script: what each served model answers ----


def _plan(steps: list[dict[str, Any]]) -> str:
    return "Here is the workflow:\n```json\n" + json.dumps(steps) + "\n```"


RESEARCH = {"worker": "alpha", "subtask": "research the topic: list facts", "access": []}
FINAL_FROM = "write the final answer from the facts"


def coordinator(call: Call) -> str:
    question = call.last_text
    if question.startswith("nested:"):
        return _plan([RESEARCH])
    if "ACCESS-CHECK" in question:
        return _plan([RESEARCH,
                      {"worker": "beta", "subtask": "independent side note", "access": []},
                      {"worker": "beta", "subtask": FINAL_FROM, "access": [0]}])
    if "NESTED" in question:
        return _plan([{"worker": "self", "subtask": "nested: plan the sub-problem"},
                      {"worker": "beta", "subtask": FINAL_FROM, "access": "all"}])
    if "FLAKY" in question:
        return _plan([RESEARCH, {"worker": "flaky", "subtask": FINAL_FROM, "access": "all"}])
    if "ORDER-CHECK" in question:  # the final step starts first; a later one runs on alpha
        return _plan([RESEARCH,
                      {"worker": "alpha", "subtask": "research the topic: more facts",
                       "access": [0]},
                      {"worker": "beta", "subtask": FINAL_FROM, "access": []}])
    if "LONG REPORT" in question:
        return _plan([{"worker": "beta", "subtask": "write the long report", "access": []}])
    return "I cannot plan this."


def final_answer(call: Call) -> str:
    seen = sorted(set(re.findall(r"FACT-[A-Z]+", call.prompt_text)))
    return f"Final answer: 42 (seen: {', '.join(seen) or 'nothing'})"


def trinity_worker(call: Call) -> str:
    return "The answer is 42." if "REVISE" in call.last_text else "The answer is 41."


def trinity_verifier(call: Call) -> str:
    latest = call.last_text.rsplit("Worker (", 1)[-1]
    return "ACCEPT" if "42" in latest else "VERDICT: REVISE: the product is off by one"


def router(call: Call) -> str:
    roles = re.findall(r"\[turn \d+\] (\w+) \(", call.last_text)
    if not roles:
        return "I am not sure who should start."  # unreadable: the rule router decides
    after = {"Thinker": ("beta", "worker"), "Worker": ("judge", "verifier"),
             "Verifier": ("beta", "worker")}
    llm, role = after[roles[-1]]
    return json.dumps({"llm": llm, "role": role})


def selfcall_user(call: Call) -> str | Reply:
    if call.last_role == "tool":
        return "The product is forty-two."
    return Reply(tool_calls=[("self_call", {"question": "sub: compute 6 * 7"})])


JUDGE_SCORES = [("France", 0.95, "correct"), ("Germany", 0.2, "Paris is in France"),
                ("REFINED", 0.9, "good"), ("beta draft", 0.6, "rough"),
                ("alpha draft", 0.3, "weak")]


def judge(call: Call) -> str:
    answer = call.last_text.split("Reply to grade:\n", 1)[-1]
    for needle, score, feedback in JUDGE_SCORES:
        if needle in answer:
            return json.dumps({"score": score, "feedback": feedback})
    return '{"score": 0.5, "feedback": "unknown"}'


def refined(call: Call) -> str:
    return f"REFINED by {call.model}: ANSWER: 7"


LONG_CHUNKS = 2000
LONG_PIECE = "x" * 65536

SCRIPT: dict[str, list[Rule]] = {
    "coord": [Rule("You coordinate a team", coordinator, on="system")],
    "alpha": [
        Rule("You are the Thinker", "PLAN: multiply six by seven, then state the product.",
             on="system"),
        Rule(r"^research the topic", "FACT-ALPHA: the answer is 42"),
        Rule(r"^sub: ", "6 * 7 = 42"),
        Rule(r"Revise it", "The product is 42."),
        Rule(r"Write an improved", refined),
        Rule(r"SELFRULE", selfcall_user, on="prompt"),
        Rule(r"HAIKU", "alpha draft haiku"),
        Rule(r"RIDDLE", "alpha draft: ANSWER: 7 TODO double-check"),
    ],
    "beta": [
        Rule("You are the Worker", trinity_worker, on="system"),
        Rule(r"^independent side note", "FACT-BETA: an unrelated detail"),
        Rule(r"^" + FINAL_FROM, final_answer),
        Rule(r"^write the long report", Reply(chunks=[LONG_PIECE] * LONG_CHUNKS)),
        Rule(r"Revise it", "Paris is the capital of France."),
        Rule(r"Write an improved", refined),
        Rule(r"CAPITAL", "Paris is the capital of Germany."),
        Rule(r"HAIKU", "beta draft haiku"),
        Rule(r"RIDDLE", "beta draft: ANSWER: 7 TODO"),
    ],
    "judge": [Rule("You are the Verifier", trinity_verifier, on="system"),
              Rule("strict grader", judge, on="system")],
    "router": [Rule("BROKEN", Reply(status=500), on="prompt"),
               Rule("You route a team", router, on="system")],
    "flaky": [Rule(FINAL_FROM, Reply(text="Partial answer that breaks off", error_after=3))],
    "mute": [Rule("", Reply(text="Seven is a prime number.", usage_in_stream=False))],
}

PRICE = {"input": 1.0, "output": 2.0}  # USD per million tokens

TRINITY_ROLES = {"thinker": "alpha", "worker": "beta", "verifier": "judge"}

PROFILES: list[dict[str, Any]] = [
    {"name": "team-conductor", "kind": "conductor",
     "params": {"coordinator": "coord",
                "workers": {"alpha": "researcher", "beta": "writer", "flaky": "writer"}}},
    {"name": "team-trinity", "kind": "trinity", "params": {"roles": TRINITY_ROLES}},
    {"name": "team-trinity-llm", "kind": "trinity",
     "params": {"roles": TRINITY_ROLES, "router": {"kind": "llm", "deployment": "router"}}},
    {"name": "refiner-rules", "kind": "selfcaller",
     "params": {"inner": {"kind": "single", "params": {"deployment": "alpha"}},
                "verifier": {"kind": "rules", "must": [r"\b42\b"]}, "threshold": 0.9}},
    {"name": "refiner-judge", "kind": "selfcaller",
     "params": {"inner": {"kind": "single", "params": {"deployment": "beta"}},
                "self_call": False, "threshold": 0.8,
                "verifier": {"kind": "llm", "deployment": "judge"}}},
    {"name": "search-judge", "kind": "abmcts",
     "params": {"workers": ["alpha", "beta"], "max_calls": 4, "batch_size": 2, "seed": 7,
                "verifier": {"kind": "llm", "deployment": "judge"}}},
    {"name": "search-rules", "kind": "abmcts",
     "params": {"workers": ["alpha", "beta"], "max_calls": 3, "batch_size": 1, "seed": 3,
                "min_confidence": 1.0,
                "verifier": {"kind": "rules", "must": [r"ANSWER: \d+"],
                             "must_not": ["TODO"]}}},
]


# ---- what each case must produce ----


@dataclass
class Case:
    profile: str
    question: str
    answer: str | None  # None: checked by the case's own rule (abmcts picks the best)
    calls: dict[str, int] | None  # upstream calls per served model, when fixed
    events: set[str] = field(default_factory=set)  # event kinds that must appear
    trace_types: set[str] = field(default_factory=set)


CASES = {
    "conductor": Case("team-conductor", "ACCESS-CHECK: what is six times seven?",
                      "Final answer: 42 (seen: FACT-ALPHA)",
                      {"coord": 1, "alpha": 1, "beta": 2},
                      {"step_start", "final"}, {"workflow", "step"}),
    "conductor-nested": Case("team-conductor", "NESTED: what is six times seven?",
                             "Final answer: 42 (seen: FACT-ALPHA)",
                             {"coord": 2, "alpha": 1, "beta": 1},
                             {"step_start", "recursion", "final"}, {"workflow", "step"}),
    "trinity": Case("team-trinity", "TRINITY: what is six times seven?", "The answer is 42.",
                    {"alpha": 1, "beta": 2, "judge": 2},
                    {"step_start", "verifier_score", "final"}, {"turn"}),
    "trinity-llm": Case("team-trinity-llm", "TRINITY: what is six times seven?",
                        "The answer is 42.", {"router": 5, "alpha": 1, "beta": 2, "judge": 2},
                        {"step_start", "verifier_score", "final"}, {"turn", "router_fallbacks"}),
    "selfcaller-rules": Case("refiner-rules", "SELFRULE: what is six times seven?",
                             "The product is 42.", {"alpha": 4},
                             {"step_start", "tool_call_start", "tool_result", "recursion",
                              "final"}, {"attempt", "self_call"}),
    "selfcaller-judge": Case("refiner-judge", "CAPITAL: where is Paris?",
                             "Paris is the capital of France.", {"beta": 2, "judge": 2},
                             {"recursion", "final"}, {"attempt"}),
    "abmcts-judge": Case("search-judge", "HAIKU: write one about tako", None, None,
                         {"step_start", "verifier_score", "final"}, {"node", "abmcts"}),
    "abmcts-rules": Case("search-rules", "RIDDLE: how many legs minus one?",
                         None, None, {"step_start", "verifier_score", "final"},
                         {"node", "abmcts"}),
}


# ---- fixtures ----


def orchestrator_config(upstream_url: str) -> dict[str, Any]:
    """The test config plus a deployment per scripted model at ``upstream_url`` (a base URL
    ending in /v1) and every profile of ``PROFILES``; no retries."""
    config = basic_config()
    config["deployments"] += [
        {"name": m, "provider": "http-generic", "model": m, "base_url": upstream_url,
         "api_key": "sk-scripted", "price": PRICE} for m in (*MODELS, "mute")]
    config["profiles"] += PROFILES
    config["runtime"] = {"retry": {"max_attempts": 1}}
    return config


def ask(case: Case) -> list[dict[str, str]]:
    return [{"role": "user", "content": case.question}]


def calls_per_model(fake: FakeOpenAI) -> dict[str, int]:
    counts: dict[str, int] = {}
    for call in fake.requests:
        counts[call.model] = counts.get(call.model, 0) + 1
    return counts


def check_answer(name: str, case: Case, content: str | None, fake: FakeOpenAI) -> None:
    """The answer and the upstream calls each case must produce."""
    if case.calls is not None:
        assert calls_per_model(fake) == case.calls
    if case.answer is not None:
        assert content == case.answer
        return
    workers = [c for c in fake.requests if c.model in ("alpha", "beta")]
    if name == "abmcts-judge":
        assert len(workers) == 4  # max_calls answers, each judged once
        assert len(fake.calls_to("judge")) == 4
        best = max(workers, key=lambda c: next(s for n, s, _ in JUDGE_SCORES if n in c.reply))
        assert content == best.reply
    else:  # abmcts-rules: stops at the first answer without TODO, else after max_calls
        assert 1 <= len(workers) <= 3 and not fake.calls_to("judge")
        clean = [c for c in workers if "TODO" not in c.reply]
        if clean:
            assert workers[-1] is clean[0] and content == clean[0].reply
        else:
            assert len(workers) == 3 and content in {c.reply for c in workers}
