"""Destination: where sidecar proxies send requests for an authority, and with which identity.

- `service.DestinationService` watches Services, Endpoints and Pods and
  streams each asked-for authority's snapshot (`isthmus.core.destination`)
  over TLS, again whenever it changes;
- `client.DestinationClient` follows those streams for the proxy: one
  shared `Resolution` per authority holding the latest `EndpointSet`,
  reconnecting with backoff and keeping the last answer meanwhile.
"""

from isthmus.components.destination.client import (
    DestinationClient,
    DestinationError,
    DestinationUnavailable,
    Endpoint,
    EndpointSet,
    Resolution,
    ServiceRef,
    destination_identity,
)
from isthmus.components.destination.service import (
    DestinationMetrics,
    DestinationService,
    DestinationServiceError,
)

__all__ = [
    "DestinationClient",
    "DestinationError",
    "DestinationMetrics",
    "DestinationService",
    "DestinationServiceError",
    "DestinationUnavailable",
    "Endpoint",
    "EndpointSet",
    "Resolution",
    "ServiceRef",
    "destination_identity",
]
