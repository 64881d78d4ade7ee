"""Several ways to authenticate, tried in a fixed order."""

from __future__ import annotations

from collections.abc import Sequence

from tako.core.protocols import AuthResolver
from tako.core.types import Principal


class ChainResolver:
    """Asks each resolver in turn; the first principal wins.

    A resolver that recognises the token and rejects it (``AuthenticationFailed``) ends the
    chain, and so does one that cannot decide because its backing service is down
    (``Unavailable``, a 503): a later resolver never gets the chance to let such a token in,
    and an outage is never reported as a bad key. Put the cheapest resolvers first
    (static config keys, then stored keys, then JWTs).
    """

    def __init__(self, resolvers: Sequence[AuthResolver]) -> None:
        self.resolvers = list(resolvers)

    async def resolve(self, token: str) -> Principal | None:
        for resolver in self.resolvers:
            principal = await resolver.resolve(token)
            if principal is not None:
                return principal
        return None
