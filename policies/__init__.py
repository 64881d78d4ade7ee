"""tako policies: the Rego policy engine (embedded or OPA server) and PII/secret guards.

Every engine implements ``core.protocols.PolicyEngine``; ``build_policy_engine`` picks
one from ``PolicySettings``. ``PiiGuard`` scans, masks, hashes, redacts or blocks PII and
secrets in request messages and response text, also on a stream.
"""

from policies.decision import ACTIONS, STAGES
from policies.embedded import EmbeddedRegoEngine
from policies.factory import AllowAllEngine, build_policy_engine
from policies.opa_rest import OpaRestEngine
from policies.pii import Finding, PiiGuard
from policies.pii_stream import StreamRedactor
from policies.settings import PiiGuardSettings, PiiSettings, PolicySettings

__all__ = [
    "ACTIONS",
    "STAGES",
    "AllowAllEngine",
    "EmbeddedRegoEngine",
    "Finding",
    "OpaRestEngine",
    "PiiGuard",
    "PiiGuardSettings",
    "PiiSettings",
    "PolicySettings",
    "StreamRedactor",
    "build_policy_engine",
]
