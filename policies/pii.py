"""PII and secret guards: find, then mask, hash, redact or block.

``PiiFilter(settings)`` handles one direction (request or response) with its mode and
kinds; ``PiiFilter.for_request`` / ``for_response`` pick the direction from ``PiiSettings``.
Kinds: email, phone (E.164 and common US and European formats), ipv4, ipv6, credit_card
(Luhn-checked), us_ssn (invalid ranges excluded), iban (mod-97 checked),
aws_access_key_id, aws_secret_access_key (when labelled), openai_api_key, github_token,
jwt (a JSON header is required), private_key (PEM/OpenSSH/PGP private key blocks).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from tako.core.errors import PolicyDenied
from tako.policies.pii_detectors import DETECTORS, Candidate, Detector, candidates, select
from tako.policies.settings import PiiFilterSettings, PiiSettings


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str
    start: int
    end: int


class PiiFilter:
    def __init__(self, settings: PiiFilterSettings | None = None, direction: str = "request"):
        self.settings = settings or PiiFilterSettings()
        self.mode = self.settings.mode
        self.direction = direction
        wanted = set(self.settings.kinds)
        self.detectors: tuple[Detector, ...] = tuple(d for d in DETECTORS if d.kind in wanted)

    @classmethod
    def for_request(cls, settings: PiiSettings) -> PiiFilter:
        return cls(settings.request, "request")

    @classmethod
    def for_response(cls, settings: PiiSettings) -> PiiFilter:
        return cls(settings.response, "response")

    @property
    def enabled(self) -> bool:
        return self.mode != "off" and bool(self.detectors)

    def scan(self, text: str) -> list[Finding]:
        """Every PII or secret value in ``text`` (whatever the mode), left to right."""
        return [Finding(c.kind, c.start, c.end) for c in self._select(text)]

    def apply(self, text: str) -> str:
        """``text`` with findings replaced per the mode; ``block`` raises PolicyDenied."""
        if not self.enabled:
            return text
        return self.render(text, 0, len(text), self._select(text))

    def apply_messages(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """OpenAI message dicts with every text guarded: string content, text parts, the
        ``name`` and assistant tool-call arguments; other parts (images, audio) and fields
        pass unchanged. The input is not modified."""
        if not self.enabled:
            return messages
        return [self._guarded_message(message) for message in messages]

    def _guarded_message(self, message: dict[str, Any]) -> dict[str, Any]:
        out = dict(message)
        content = message.get("content")
        if isinstance(content, str):
            out["content"] = self.apply(content)
        elif isinstance(content, list):
            out["content"] = [self._guarded_part(part) for part in content]
        if isinstance(message.get("name"), str):
            out["name"] = self.apply(message["name"])
        if isinstance(message.get("tool_calls"), list):
            out["tool_calls"] = [self.apply_tool_call(call) for call in message["tool_calls"]]
        return out

    def _guarded_part(self, part: Any) -> Any:
        if isinstance(part, dict) and part.get("type") == "text" and isinstance(
                part.get("text"), str):
            return {**part, "text": self.apply(part["text"])}
        return part

    def apply_tool_call(self, call: Any) -> Any:
        """An OpenAI tool call dict with its arguments (JSON text) guarded."""
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict) and isinstance(function.get("arguments"), str):
            return {**call, "function": {**function,
                                         "arguments": self.apply(function["arguments"])}}
        return call

    def apply_tools(self, tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """OpenAI tool dicts with the function's description and every description in its
        parameter schema guarded."""
        if not self.enabled:
            return tools
        return [self._guarded_tool(tool) for tool in tools]

    def _guarded_tool(self, tool: dict[str, Any]) -> dict[str, Any]:
        function = tool.get("function")
        if not isinstance(function, dict):
            return tool
        return {**tool, "function": self._guarded_descriptions(function)}

    def _guarded_descriptions(self, schema: Any) -> Any:
        if isinstance(schema, list):
            return [self._guarded_descriptions(item) for item in schema]
        if not isinstance(schema, dict):
            return schema
        return {key: self.apply(value) if key == "description" and isinstance(value, str)
                else self._guarded_descriptions(value) for key, value in schema.items()}

    def apply_value(self, value: Any) -> Any:
        """Every string in a JSON-like value (``user``, ``metadata``) guarded."""
        if not self.enabled:
            return value
        if isinstance(value, str):
            return self.apply(value)
        if isinstance(value, list):
            return [self.apply_value(item) for item in value]
        if isinstance(value, dict):
            return {key: self.apply_value(item) for key, item in value.items()}
        return value

    def _select(self, text: str) -> list[Candidate]:
        return select(candidates(self.detectors, text)[0])

    def render(self, text: str, start: int, end: int, findings: list[Candidate]) -> str:
        """``text[start:end]`` with ``findings`` (all inside it) replaced per the mode."""
        if findings and self.mode == "block":
            kinds = sorted({f.kind for f in findings})
            raise PolicyDenied(
                f"the {self.direction} contains sensitive data ({', '.join(kinds)}) "
                "and the policy blocks it",
                details={"direction": self.direction, "kinds": kinds},
            )
        pieces: list[str] = []
        pos = start
        for f in findings:
            pieces.append(text[pos:f.start])
            pieces.append(self.replacement(f.kind, text[f.start:f.end]))
            pos = f.end
        pieces.append(text[pos:end])
        return "".join(pieces)

    def replacement(self, kind: str, value: str) -> str:
        if self.mode == "redact":
            return f"<{kind.upper()}>"
        if self.mode == "hash":
            digest = hashlib.sha256((self.settings.hash_salt + value).encode()).hexdigest()
            return f"<{kind.upper()}:{digest[:8]}>"
        if self.mode == "mask":
            return mask(kind, value)
        return value


def _mask_digits(value: str, keep_last: int) -> str:
    total = sum(ch.isdigit() for ch in value)
    seen = 0
    out = []
    for ch in value:
        if ch.isdigit():
            seen += 1
            out.append(ch if seen > total - keep_last else "*")
        else:
            out.append(ch)
    return "".join(out)


_SECRET_PREFIX = re.compile(
    r"^(?:sk-(?:proj-|svcacct-|admin-)?|gh[pousr]_|github_pat_|eyJ|A[A-Z]{3})"
)


def mask(kind: str, value: str) -> str:
    """A partial view that still tells a reader what was there."""
    if kind == "email":
        local, _, domain = value.partition("@")
        labels = domain.split(".")
        return f"{local[:1]}***@{labels[0][:1]}***.{labels[-1]}"
    if kind == "credit_card":
        return "****" + re.sub(r"\D", "", value)[-4:]
    if kind == "us_ssn":
        return "***-**-" + value[-4:]
    if kind == "iban":
        compact = value.replace(" ", "")
        return compact[:2] + "****" + compact[-4:]
    if kind == "phone":
        return _mask_digits(value, 2)
    if kind == "ipv4":
        return value.split(".", 1)[0] + ".*.*.*"
    if kind == "ipv6":
        return value.split(":", 1)[0] + ":****"
    if kind == "private_key":
        lines = value.splitlines()
        footer = lines[-1] if len(lines) > 1 and lines[-1].startswith("-----END") else ""
        return "\n".join(x for x in (lines[0][:lines[0].find("-----", 5) + 5], "****", footer) if x)
    prefix = _SECRET_PREFIX.match(value)
    return (prefix.group(0) if prefix else "") + "****"

