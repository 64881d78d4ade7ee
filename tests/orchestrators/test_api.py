"""The in-process API: profiles as dicts, sync wrapper, unknown aliases, every kind builds."""

from __future__ import annotations

import pytest

from tako.core.errors import ConfigError, ModelNotFound
from tako.core.specs import ProfileSpec
from tako.orchestrators.api import run, run_sync
from tako.orchestrators.registry import build
from tests.fakes.provider import ScriptedProvider

REQ = {"messages": [{"role": "user", "content": "hi"}]}


def test_run_sync_runs_a_profile_in_process() -> None:
    m = ScriptedProvider("m", default="hello there")
    response = run_sync({"kind": "single", "params": {"deployment": "m"}}, REQ, {"m": m})
    assert response.content == "hello there"
    assert response.usage.prompt_tokens == 10


async def test_unknown_alias_is_model_not_found() -> None:
    with pytest.raises(ModelNotFound, match="'nope'"):
        await run({"kind": "single", "params": {"deployment": "nope"}}, REQ, {})


@pytest.mark.parametrize("kind, params", [
    ("conductor", {"coordinator": "a", "workers": ["b"]}),
    ("trinity", {"roles": {"thinker": "a", "worker": "b", "verifier": "c"}}),
    ("selfcaller", {"inner": {"kind": "single", "params": {"deployment": "a"}},
                    "verifier": {"kind": "rules"}}),
    ("abmcts", {"workers": ["a"], "verifier": {"kind": "llm", "deployment": "j"}}),
])
def test_every_kind_builds_from_a_profile(kind: str, params: dict[str, object]) -> None:
    assert build(ProfileSpec(name=f"my-{kind}", kind=kind, params=params)).kind == kind


@pytest.mark.parametrize("kind, params, path", [
    ("conductor", {"workers": ["b"]}, "params.coordinator"),
    ("trinity", {"roles": {"thinker": "a", "worker": "b"}}, "params.roles.verifier"),
    ("trinity", {"roles": {"thinker": "a", "worker": "b", "verifier": "c"},
                 "router": "magic"}, "params.router"),
    ("selfcaller", {"inner": {"kind": "single", "params": {"deployment": "a"}}},
     "params.verifier"),
    ("abmcts", {"workers": "a", "verifier": {"kind": "rules"}}, "params.workers"),
    ("single", {"deployment": "a", "max_steps": 0}, "params.max_steps"),
    ("hydra", {}, "kind"),
])
def test_incomplete_profiles_are_rejected(kind: str, params: dict[str, object],
                                          path: str) -> None:
    with pytest.raises(ConfigError) as refused:
        build(ProfileSpec(name="bad", kind=kind, params=params))
    assert [p.path for p in refused.value.problems] == [path]


async def test_run_refuses_a_profile_that_does_not_parse() -> None:
    with pytest.raises(ConfigError, match="params.deployment"):
        await run({"kind": "single", "params": {}}, REQ, {})
