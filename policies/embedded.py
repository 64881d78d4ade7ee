"""In-process Rego evaluation with regopy (rego-cpp).

The policy modules and data are compiled into a bundle once per worker thread (a few
milliseconds) and every evaluation then runs the bundle's precompiled plan for the stage:
under a millisecond for a typical chat request, against several milliseconds for an
uncompiled ``query``. Large inputs (long conversations) run on a small thread pool;
regopy calls into C with the GIL released, so the event loop keeps running meanwhile.
Each thread owns its interpreter and bundle: a regopy interpreter holds the current
input and is not shared between threads.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import regopy
from regopy.rego_shared import (
    rego_bundle_query_entrypoint,
    rego_free_output,
    rego_output_string,
)

from tako.core.errors import InternalError
from tako.core.protocols import PolicyDecision
from tako.policies.bundle import load_modules, policy_data
from tako.policies.decision import STAGES, check_stage, decision_from_result, decision_path


class CompiledPolicy:
    """One interpreter with the compiled bundle; evaluates stages synchronously."""

    def __init__(self, modules: dict[str, str], data: dict[str, Any], package: str = "tako"):
        self._interpreter = regopy.Interpreter()
        self._interpreter.add_data_json(orjson.dumps(data).decode())
        for name, source in modules.items():
            self._interpreter.add_module(name, source)
        self._entrypoints = {stage: decision_path(package, stage) for stage in STAGES}
        self._bundle = self._interpreter.build(None, list(self._entrypoints.values()))
        if not self._bundle.ok():
            raise InternalError("the Rego policy bundle failed to compile")

    def evaluate_result(self, stage: str, data: dict[str, Any]) -> Any:
        """The raw decision document, or None when the rule is undefined."""
        return self.evaluate_json(stage, orjson.dumps(data).decode())

    def evaluate_json(self, stage: str, input_json: str) -> Any:
        """Like ``evaluate_result`` with the input already serialised to JSON."""
        self._interpreter.set_input_term(input_json)
        impl = rego_bundle_query_entrypoint(
            self._interpreter._impl, self._bundle._impl, self._entrypoints[stage]
        )
        try:
            text = rego_output_string(impl)
        finally:
            rego_free_output(impl)
        if text == "undefined":
            return None
        try:
            output = orjson.loads(text)
        except orjson.JSONDecodeError:
            first_line = text.strip().splitlines()[0:3]
            raise InternalError(
                f"policy stage {stage} failed to evaluate: {' '.join(first_line)}"
            ) from None
        if isinstance(output, list):
            output = output[0] if output else {}
        expressions = output.get("expressions") or [None]
        return expressions[0]

    def evaluate(self, stage: str, input_json: str) -> PolicyDecision:
        check_stage(stage)
        return decision_from_result(stage, self.evaluate_json(stage, input_json))


class EmbeddedRegoEngine:
    """PolicyEngine evaluating tako's Rego policies in-process.

    Inputs up to ``inline_max_bytes`` of JSON (a typical chat request) are evaluated on
    the calling thread: under a millisecond, less than a hop to a worker thread costs.
    Larger inputs go to a pool of ``threads`` workers so the event loop keeps serving.
    """

    def __init__(
        self,
        data: dict[str, Any] | None = None,
        *,
        policy_dir: Path | None = None,
        threads: int = 1,
        inline_max_bytes: int = 16384,
    ) -> None:
        self._modules = load_modules(policy_dir)
        self._data = policy_data(dict(data or {}))
        self._local = threading.local()
        self._inline_max_bytes = inline_max_bytes
        # Compiling here surfaces a broken policy at startup rather than on a request.
        self._compiled()
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="tako-rego")

    def evaluate_sync(self, stage: str, data: dict[str, Any]) -> PolicyDecision:
        """Evaluate on the calling thread, with that thread's compiled policy."""
        return self._compiled().evaluate(stage, orjson.dumps(data).decode())

    async def evaluate(self, stage: str, data: dict[str, Any]) -> PolicyDecision:
        check_stage(stage)
        input_json = orjson.dumps(data).decode()
        if len(input_json) <= self._inline_max_bytes:
            return self._compiled().evaluate(stage, input_json)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._evaluate_json, stage, input_json)

    def _evaluate_json(self, stage: str, input_json: str) -> PolicyDecision:
        return self._compiled().evaluate(stage, input_json)

    def _compiled(self) -> CompiledPolicy:
        compiled: CompiledPolicy | None = getattr(self._local, "compiled", None)
        if compiled is None:
            compiled = CompiledPolicy(self._modules, self._data)
            self._local.compiled = compiled
        return compiled

    async def aclose(self) -> None:
        self._pool.shutdown(wait=False)
