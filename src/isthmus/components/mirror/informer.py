"""Informers as the service mirror needs them, and the Link as a lightkube resource.

`WatchedInformer` is `isthmus.adapters.kube.Informer` with three additions:
label and field selectors on its list and watch, a back-off between failed
attempts (1 s doubling to 30 s, instead of a fixed delay), and a callback
told how each list went (`None` for success, else the exception), so the
mirror can say in the Link's status that a remote cluster refuses its
credentials or cannot be reached.

`Link` is the lightkube class of `links.multicluster.isthmus.io/v1alpha1`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from lightkube import AsyncClient
from lightkube.generic_resource import create_namespaced_resource

from isthmus.adapters.kube import Handler, Informer
from isthmus.core import mirror as core

__all__ = ["Link", "WatchedInformer"]

Link = create_namespaced_resource(core.LINK_GROUP, core.LINK_VERSION, core.LINK_KIND, core.LINK_PLURAL)

ListOutcome = Callable[[BaseException | None], None]


class WatchedInformer(Informer):
    def __init__(self, client: AsyncClient, resource: Any, *, handler: Handler | None = None,
                 namespace: str | None = None, labels: dict[str, str] | None = None,
                 fields: dict[str, str] | None = None, on_list: ListOutcome | None = None,
                 min_retry: float = 1.0, max_retry: float = 30.0) -> None:
        super().__init__(client, resource, handler=handler, namespace=namespace, retry_delay=min_retry)
        # Informer passes its scope to both list and watch.
        if labels:
            self._scope["labels"] = labels
        if fields:
            self._scope["fields"] = fields
        self._on_list = on_list
        self._min_retry, self._max_retry = min_retry, max_retry
        self._failures = 0
        self.last_error: BaseException | None = None

    async def _relist(self) -> str:
        try:
            rv = await super()._relist()
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self._failures += 1
            # Informer sleeps `_retry` after a failed attempt.
            self._retry = min(self._min_retry * 2 ** (self._failures - 1), self._max_retry)
            self.last_error = e
            if self._on_list is not None:
                self._on_list(e)
            raise
        self._failures, self._retry, self.last_error = 0, self._min_retry, None
        if self._on_list is not None:
            self._on_list(None)
        return rv
