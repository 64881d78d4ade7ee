"""The params models: each kind parses its params, names are checked against KnownNames,
and problems carry their paths (nested profiles and verifiers included)."""

from __future__ import annotations

from typing import Any

import pytest

from tako.core.errors import ConfigError
from tako.core.specs import ProfileSpec
from tako.orchestrators.abmcts import ABMCTSParams
from tako.orchestrators.conductor import ConductorParams
from tako.orchestrators.params import KnownNames
from tako.orchestrators.registry import build, parse
from tako.orchestrators.selfcaller import SELF_CALL, SelfCaller, SelfCallerParams
from tako.orchestrators.single import Single, SingleParams
from tako.orchestrators.trinity import TrinityParams
from tako.orchestrators.verifiers import AllOfSpec, LlmJudgeSpec, RulesSpec, parse_verifier

NAMES = KnownNames(aliases=frozenset({"a", "b", "judge"}), tools=frozenset({"calculator"}),
                   tool_prefixes=frozenset({"web"}))


def problems(kind: str, params: dict[str, Any], names: KnownNames | None = NAMES,
             ) -> dict[str, str]:
    with pytest.raises(ConfigError) as refused:
        parse(ProfileSpec(name="p", kind=kind, params=params), names, "profiles[0]")
    return {p.path: p.message for p in refused.value.problems}


def test_single_params_parse_with_defaults() -> None:
    profile = parse(ProfileSpec(name="p", kind="single", params={"deployment": "a"}), NAMES)
    assert profile.params == SingleParams(deployment="a", max_steps=8, tools=[])


def test_every_kind_has_its_params_model() -> None:
    verifier = {"kind": "rules"}
    parsed = {
        "conductor": {"coordinator": "a", "workers": ["b"]},
        "trinity": {"roles": {"thinker": "a", "worker": "b", "verifier": "a"}},
        "selfcaller": {"inner": {"kind": "single", "params": {"deployment": "a"}},
                       "verifier": verifier},
        "abmcts": {"workers": ["a"], "verifier": verifier},
    }
    models = {"conductor": ConductorParams, "trinity": TrinityParams,
              "selfcaller": SelfCallerParams, "abmcts": ABMCTSParams}
    for kind, params in parsed.items():
        profile = parse(ProfileSpec(name="p", kind=kind, params=params), NAMES)
        assert type(profile.params) is models[kind]


def test_unknown_names_are_problems_at_their_paths() -> None:
    found = problems("single", {"deployment": "zz", "tools": ["calculator", "web__x", "saw"]})
    assert found == {
        "profiles[0].params.deployment": "no deployment or alias named 'zz'",
        "profiles[0].params.tools[2]": "unknown tool 'saw'; known: calculator, web__*",
    }


def test_names_are_not_checked_without_known_names() -> None:
    profile = parse(ProfileSpec(name="p", kind="single",
                                params={"deployment": "zz", "tools": ["saw"]}))
    assert isinstance(profile.params, SingleParams) and profile.params.tools == ["saw"]


def test_a_server_that_declares_nothing_leaves_tool_names_unverified() -> None:
    names = KnownNames(aliases=frozenset({"a"}), open_tools=True)
    parse(ProfileSpec(name="p", kind="single", params={"deployment": "a", "tools": ["saw"]}),
          names)
    assert names.unverified_tools == {"saw"}


def test_wrong_types_and_unknown_params_are_problems() -> None:
    found = problems("conductor", {"coordinator": "a", "workers": {"b": "x", "c": None},
                                   "max_fanout": 0, "fanout": 3})
    assert set(found) == {"profiles[0].params.workers.c", "profiles[0].params.max_fanout",
                          "profiles[0].params.fanout"}
    assert found["profiles[0].params.fanout"].startswith("unknown conductor param; accepted: "
                                                         "coordinator, workers")


def test_trinity_roles_take_an_alias_or_a_list_in_any_case() -> None:
    profile = parse(ProfileSpec(name="p", kind="trinity", params={
        "roles": {"Thinker": "a", "worker": ["a", "b"], "verifier": "b"},
        "router": {"kind": "llm", "deployment": "judge"}}), NAMES)
    assert isinstance(profile.params, TrinityParams)
    assert profile.params.roles.worker == ("a", "b")
    assert profile.params.router is not None and profile.params.router.params.deployment == "judge"
    found = problems("trinity", {"roles": {"thinker": "a", "worker": [], "boss": "a"},
                                 "router": "magic"})
    assert set(found) == {"profiles[0].params.roles.worker", "profiles[0].params.roles.verifier",
                          "profiles[0].params.roles.boss", "profiles[0].params.router"}


def test_nested_profiles_and_verifiers_are_parsed_recursively() -> None:
    found = problems("selfcaller", {
        "inner": {"kind": "selfcaller", "params": {
            "inner": {"kind": "single", "params": {"deployment": "zz"}},
            "verifier": {"kind": "all", "of": [{"kind": "llm"}, {"must": ["("]}]}}},
        "verifier": [{"kind": "astrology"}],
        "revision_prompt": "{score} {mood}",
    })
    assert set(found) == {
        "profiles[0].params.inner.params.inner.params.deployment",
        "profiles[0].params.inner.params.verifier.of[0].deployment",
        "profiles[0].params.inner.params.verifier.of[1].must[0]",
        "profiles[0].params.verifier[0].kind",
        "profiles[0].params.revision_prompt",
    }


def test_verifier_specs_parse_into_their_models() -> None:
    spec = parse_verifier([{"must": ["ok"]}, {"kind": "llm", "deployment": "judge"}], NAMES)
    assert isinstance(spec, AllOfSpec) and spec.mode == "min"
    assert isinstance(spec.of[0], RulesSpec) and spec.of[0].must == ["ok"]
    assert isinstance(spec.of[1], LlmJudgeSpec) and spec.of[1].deployment == "judge"
    with pytest.raises(ConfigError, match=r"verifier\.json_schema: invalid JSON schema"):
        parse_verifier({"kind": "rules", "json_schema": {"type": "nonsense"}})


def test_the_orchestrators_read_their_params_models() -> None:
    single = build(ProfileSpec(name="p", kind="single",
                               params={"deployment": "a", "max_steps": "3"}))
    assert isinstance(single, Single) and single.max_steps == 3
    caller = build(ProfileSpec(name="p", kind="selfcaller", params={
        "inner": {"kind": "single", "params": {"deployment": "a", "tools": ["calculator"]}},
        "verifier": {"kind": "rules"}, "threshold": 0.9}))
    assert isinstance(caller, SelfCaller) and caller.threshold == 0.9
    assert isinstance(caller.inner, Single)
    assert caller.inner.tool_names == ["calculator", SELF_CALL]
