"""A vendor from another package, found through the ``tako.providers`` entry points: no
file of the repository changes to add it. The package below is installed the way pip
leaves one (its module plus a ``.dist-info`` with ``entry_points.txt``) into a folder that
is put on the path of real ``tako check`` and ``tako serve`` processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.support.gateway import TEST_KEY, basic_config, gateway, write_config

PLUGIN = '''
"""acme: answers with the user's text reversed (a vendor that lives outside tako)."""
from tako.core.specs import DeploymentSpec
from tako.core.types import ChatRequest, ChatResponse, Delta, Usage
from tako.providers.base import StreamOutcome, keep_stream_contract, new_id, now
from tako.providers.registry import AdapterOptions, register

TELEMETRY_SYSTEM = "acme"


class AcmeOptions(AdapterOptions):
    shout: bool = False


class Acme:
    def __init__(self, spec: DeploymentSpec) -> None:
        self.id, self.model = spec.name, spec.model
        self.shout = AcmeOptions.model_validate(spec.options).shout

    def _text(self, req: ChatRequest) -> str:
        text = req.messages[-1].text()[::-1]
        return text.upper() if self.shout else text

    def estimate_cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        return 0.0

    async def aclose(self) -> None:
        return None

    async def chat(self, req: ChatRequest) -> ChatResponse:
        return ChatResponse(id=new_id(), model=self.model, created=now(),
                            content=self._text(req), finish_reason="stop",
                            usage=Usage(prompt_tokens=3, completion_tokens=2),
                            provider_id=self.id)

    def stream(self, req: ChatRequest):
        async def deltas(outcome: StreamOutcome):
            for letter in self._text(req):
                yield Delta(content=letter)
            outcome.usage = Usage(prompt_tokens=3, completion_tokens=2)
        return keep_stream_contract(self.id, deltas)


@register("acme", AcmeOptions)
def _acme(spec: DeploymentSpec) -> Acme:
    return Acme(spec)
'''


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("site")
    (root / "acme_tako.py").write_text(PLUGIN)
    info = root / "acme_tako-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-tako\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[tako.providers]\nacme = acme_tako\n")
    return root


def config(**options: Any) -> dict[str, Any]:
    cfg = basic_config()
    cfg["deployments"].append({"name": "acme-1", "provider": "acme", "model": "acme-large",
                               "options": options})
    return cfg


def env_with(site: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(site)}


def check(cfg: dict[str, Any], site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tako", "check", "--config",
                           str(write_config(cfg))], env=env_with(site), capture_output=True,
                          text=True, timeout=60)


def test_the_plugin_kind_is_checked_with_its_own_options(site: Path) -> None:
    assert check(config(shout=True), site).returncode == 0
    bad = check(config(whisper=True), site)
    assert bad.returncode == 2
    assert "deployments[2].options.whisper" in bad.stdout + bad.stderr
    without = subprocess.run([sys.executable, "-m", "tako", "check", "--config",
                              str(write_config(config()))], capture_output=True, text=True,
                             timeout=60)
    assert without.returncode == 2 and "unknown provider kind 'acme'" in (
        without.stdout + without.stderr)


def test_the_plugin_vendor_serves_chat_and_streams(site: Path) -> None:
    with gateway(config(shout=True), env={"PYTHONPATH": str(site)}) as gw:
        client = openai.OpenAI(base_url=gw.base_url, api_key=TEST_KEY, max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="acme-1", messages=[{"role": "user", "content": "hello tako"}])
        assert raw.parse().choices[0].message.content == "OKAT OLLEH"
        assert raw.headers["x-tako-deployment"] == "acme-1"
        streamed = "".join(c.choices[0].delta.content or "" for c in
                           client.chat.completions.create(
                               model="acme-1", stream=True,
                               messages=[{"role": "user", "content": "abc"}]) if c.choices)
        assert streamed == "CBA"
        assert "acme-1" in [m.id for m in client.models.list()]
