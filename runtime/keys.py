"""Redis key names. Every key of a tenant shares the hash tag ``{tenant}`` so one script
touches one Cluster slot; a deployment's breaker keys carry their own tag."""

from __future__ import annotations


def _safe(part: str) -> str:
    # braces would change the hash tag and colons the key's structure
    return part.replace("%", "%25").replace("{", "%7B").replace("}", "%7D").replace(":", "%3A")


def tenant_prefix(prefix: str, tenant_id: str) -> str:
    return f"{prefix}:{{{_safe(tenant_id)}}}"


def rate_key(prefix: str, tenant_id: str, scope: str, scope_id: str, unit: str) -> str:
    """``unit`` is ``rpm`` or ``tpm``; model scope ids are model names within the tenant."""
    return f"{tenant_prefix(prefix, tenant_id)}:rl:{scope}:{_safe(scope_id)}:{unit}"


def budget_base(prefix: str, tenant_id: str, scope: str, scope_id: str, unit: str) -> str:
    """Budget counters are ``<base><period id>``; ``unit`` is ``usd`` (nano-USD) or ``tok``."""
    return f"{tenant_prefix(prefix, tenant_id)}:bud:{scope}:{_safe(scope_id)}:{unit}:"


def breaker_key(prefix: str, deployment: str) -> str:
    return f"{prefix}:{{brk:{_safe(deployment)}}}:state"


def probe_key(prefix: str, deployment: str) -> str:
    return f"{prefix}:{{brk:{_safe(deployment)}}}:probe"

