"""Destination: where sidecar proxies send requests for an authority, and with which identity.

- `service.DestinationService` watches Services, Endpoints and Pods and
  streams each asked-for authority's snapshot (`isthmus.core.destination`)
  over TLS, again whenever it changes;
- `client.DestinationClient` follows those streams for the proxy: one
  shared `Resolution` per authority holding the latest `EndpointSet`,
  reconnecting with backoff and keeping the last answer meanwhile.

Names are imported on first use, so a process that needs only the client
(the proxy) does not load the service's dependencies.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_WHERE = {
    "DestinationClient": "isthmus.components.destination.client",
    "DestinationError": "isthmus.components.destination.client",
    "DestinationUnavailable": "isthmus.components.destination.client",
    "Endpoint": "isthmus.components.destination.client",
    "EndpointSet": "isthmus.components.destination.client",
    "Resolution": "isthmus.components.destination.client",
    "ServiceRef": "isthmus.components.destination.client",
    "destination_identity": "isthmus.components.destination.client",
    "DestinationMetrics": "isthmus.components.destination.service",
    "DestinationService": "isthmus.components.destination.service",
    "DestinationServiceError": "isthmus.components.destination.service",
}

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


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(where), name)
    globals()[name] = value
    return value
