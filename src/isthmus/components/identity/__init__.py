"""Workload identity: the certificate-signing service, the client that keeps a workload's certificate
fresh, and the mutual-TLS contexts built from those certificates.

- `service.IdentityService` signs CSRs for callers that prove their service
  account with a token (checked through the cluster API's TokenReview);
- `client.IdentityClient` holds a workload's in-memory key and renews its
  certificate at 70% of its life;
- `tlsconfig` turns credentials and trust anchors into TLS 1.3 contexts that
  check the peer's identity.

Names are imported on first use, so a process that needs only the client
(the proxy) does not load the service's dependencies.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from isthmus.components.identity.client import (
        IdentityClient,
        IdentityClientError,
        ServiceUnreachable,
    )
    from isthmus.components.identity.service import (
        IdentityService,
        IdentityServiceError,
        TokenReviewResult,
        TokenReviewUnavailable,
        lightkube_token_reviewer,
    )
    from isthmus.components.identity.tlsconfig import (
        IdentityMismatch,
        check_peer,
        client_context,
        peer_identity,
        server_context,
    )

_WHERE = {
    "IdentityClient": "isthmus.components.identity.client",
    "IdentityClientError": "isthmus.components.identity.client",
    "ServiceUnreachable": "isthmus.components.identity.client",
    "IdentityService": "isthmus.components.identity.service",
    "IdentityServiceError": "isthmus.components.identity.service",
    "TokenReviewResult": "isthmus.components.identity.service",
    "TokenReviewUnavailable": "isthmus.components.identity.service",
    "lightkube_token_reviewer": "isthmus.components.identity.service",
    "IdentityMismatch": "isthmus.components.identity.tlsconfig",
    "check_peer": "isthmus.components.identity.tlsconfig",
    "client_context": "isthmus.components.identity.tlsconfig",
    "peer_identity": "isthmus.components.identity.tlsconfig",
    "server_context": "isthmus.components.identity.tlsconfig",
}

__all__ = [
    "IdentityClient",
    "IdentityClientError",
    "IdentityMismatch",
    "IdentityService",
    "IdentityServiceError",
    "ServiceUnreachable",
    "TokenReviewResult",
    "TokenReviewUnavailable",
    "check_peer",
    "client_context",
    "lightkube_token_reviewer",
    "peer_identity",
    "server_context",
]


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(where), name)
    globals()[name] = value
    return value
