"""tako policies: the Rego policy engine (embedded or OPA server) and PII/secret guards.

Every engine implements ``core.protocols.PolicyEngine``; ``build_policy_engine`` picks
one from ``PolicySettings``. ``PiiFilter`` scans, masks, hashes, redacts or blocks PII and
secrets in request messages and response text, also on a stream.
"""

from tako.policies.decision import ACTIONS, STAGES
from tako.policies.embedded import EmbeddedRegoEngine
from tako.policies.factory import AllowAllEngine, build_policy_engine
from tako.policies.opa_rest import OpaRestEngine
from tako.policies.pii import Finding, PiiFilter
from tako.policies.pii_stream import StreamRedactor
from tako.policies.settings import PiiFilterSettings, PiiSettings, PolicySettings

__all__ = [
    "ACTIONS",
    "STAGES",
    "AllowAllEngine",
    "EmbeddedRegoEngine",
    "Finding",
    "OpaRestEngine",
    "PiiFilter",
    "PiiFilterSettings",
    "PiiSettings",
    "PolicySettings",
    "StreamRedactor",
    "build_policy_engine",
]
