"""The gateway's wiring: deployments, model names, orchestrators, tools, runtime."""

from __future__ import annotations

from dataclasses import dataclass, field

from opentelemetry.trace import Tracer

from tako.app.config import Settings
from tako.app.config_check import cross_reference_problems, in_config_order, known_names
from tako.app.telemetry import TracedProvider, TracedTool
from tako.core.errors import ConfigError, ConfigProblem, InternalError, ModelNotFound, gathering
from tako.core.protocols import LlmProvider, Orchestrator, Tool
from tako.core.specs import ProfileSpec
from tako.orchestrators import registry as orchestrators
from tako.providers import registry as providers
from tako.tools.builtin import BUILTIN
from tako.tools.registry import ToolRegistry


@dataclass(slots=True)
class Target:
    """What a ``model`` name runs. ``kind``: "deployment" or "alias" (each run by
    ``single``), else the profile's orchestrator kind."""

    name: str
    kind: str
    orchestrator: Orchestrator
    description: str | None = None
    owned_by: str = "tako"


@dataclass
class Gateway:
    settings: Settings
    deployments: dict[str, LlmProvider] = field(default_factory=dict)
    aliases: dict[str, tuple[list[str], list[float] | None]] = field(default_factory=dict)
    targets: dict[str, Target] = field(default_factory=dict)
    tools: ToolRegistry = field(default_factory=ToolRegistry)
    max_price_per_token: tuple[float, float] = (0.0, 0.0)
    # Tool names profiles use that only an MCP server may serve (see known_names).
    unverified_tools: set[str] = field(default_factory=set)
    tracer: Tracer | None = None

    @classmethod
    def from_settings(cls, settings: Settings, tracer: Tracer | None = None) -> Gateway:
        """The gateway start-up serves, and ``tako check`` builds. Raises ConfigError with
        every problem of the config, each at its path, found in one pass. With a tracer,
        every deployment and tool is built inside its span wrapper."""
        problems = cross_reference_problems(settings)
        gw = cls(settings=settings)
        gw._add_deployments(problems)
        gw._add_profiles(problems)
        if problems:
            raise ConfigError(in_config_order(problems))
        gw.tracer = tracer
        for name in settings.tools.builtin:
            gw.add_tool(BUILTIN[name])
        if tracer is not None:
            kinds = {spec.name: spec.provider for spec in settings.deployments}
            gw.deployments = {name: TracedProvider(provider, kinds[name], tracer)
                              for name, provider in gw.deployments.items()}
        input_rates = [p.estimate_cost_usd(1_000_000, 0) for p in gw.deployments.values()]
        output_rates = [p.estimate_cost_usd(0, 1_000_000) for p in gw.deployments.values()]
        gw.max_price_per_token = (max(input_rates, default=0.0) / 1e6,
                                  max(output_rates, default=0.0) / 1e6)
        return gw

    def add_tool(self, tool: Tool) -> None:
        """A server-side tool, inside its span wrapper when tracing."""
        self.tools.add(tool if self.tracer is None else TracedTool(tool, self.tracer))

    def _add_deployments(self, problems: list[ConfigProblem]) -> None:
        """Each deployment and alias, which runs as ``single``."""
        settings = self.settings
        for i, spec in enumerate(settings.deployments):
            with gathering(problems):
                self.deployments[spec.name] = providers.build(spec, f"deployments[{i}]")
            self.aliases[spec.name] = ([spec.name], None)
        for alias, alias_spec in settings.aliases.items():
            self.aliases[alias] = (list(alias_spec.targets), alias_spec.weights)
        kinds = {spec.name: spec.provider for spec in settings.deployments}
        for name in self.aliases:
            desc = settings.aliases[name].description if name in settings.aliases else None
            single = ProfileSpec(name=name, kind="single", params={"deployment": name})
            kind = "deployment" if name in kinds else "alias"
            self.targets[name] = Target(name, kind, orchestrators.build(single),
                                        desc, kinds.get(name, "tako"))

    def _add_profiles(self, problems: list[ConfigProblem]) -> None:
        names = known_names(self.settings)
        for i, profile in enumerate(self.settings.profiles):
            with gathering(problems):
                orchestrator = orchestrators.build(profile, names, f"profiles[{i}]")
                self.targets[profile.name] = Target(profile.name, profile.kind, orchestrator,
                                                    profile.description)
        self.unverified_tools = names.unverified_tools

    def target(self, model: str) -> Target:
        target = self.targets.get(model)
        if target is None:
            raise ModelNotFound(f"The model '{model}' does not exist or you do not have "
                                f"access to it.", param="model")
        return target

    def upstreams(self, alias: str) -> tuple[list[LlmProvider], list[float] | None]:
        entry = self.aliases.get(alias)
        if entry is None:
            raise InternalError(f"configuration error: no deployment or alias named {alias!r}",
                                code="unknown_deployment")
        names, weights = entry
        return [self.deployments[n] for n in names], weights

    def estimate_cost_usd(self, target: Target, prompt_tokens: int, output_tokens: int) -> float:
        """The first upstream call's price: exact for a deployment, the dearest
        deployment's rates for an orchestrator profile (conservative)."""
        if target.kind in ("deployment", "alias"):
            upstreams, _ = self.upstreams(target.name)
            return max(p.estimate_cost_usd(prompt_tokens, output_tokens) for p in upstreams)
        rate_in, rate_out = self.max_price_per_token
        return prompt_tokens * rate_in + output_tokens * rate_out

    async def aclose(self) -> None:
        for provider in self.deployments.values():
            await provider.aclose()
