"""Workload identity: the certificate-signing service, the client that keeps a workload's certificate
fresh, and the mutual-TLS contexts built from those certificates.

- `service.IdentityService` signs CSRs for callers that prove their service
  account with a token (checked through the cluster API's TokenReview);
- `client.IdentityClient` holds a workload's in-memory key and renews its
  certificate at 70% of its life;
- `tlsconfig` turns credentials and trust anchors into TLS 1.3 contexts that
  check the peer's identity.
"""

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
