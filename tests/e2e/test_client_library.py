"""The Kubernetes client library the mesh's controllers use (lightkube) lists and watches the embedded API.

Also: TokenRequest + TokenReview round trip, bookmarks, 410 Gone for a
compacted version, and watch semantics under label selectors.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from lightkube import ApiError, AsyncClient, KubeConfig
from lightkube.generic_resource import create_namespaced_resource
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ConfigMap, Service
from lightkube.types import PatchType

from .conftest import Cluster

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def client(west: Cluster) -> AsyncIterator[AsyncClient]:
    config = KubeConfig.from_file(west.kubeconfig).get(context_name="west")
    c = AsyncClient(config=config)
    yield c
    await c.close()


async def test_lightkube_lists_with_selectors_and_pages(client: AsyncClient, west: Cluster, ns: str) -> None:
    for i in range(7):
        await client.create(ConfigMap(metadata=ObjectMeta(name=f"cm{i}", labels={"parity": "even" if i % 2 == 0
                                                                                  else "odd"}),
                                      data={"i": str(i)}), namespace=ns)
    names = [cm.metadata.name async for cm in client.list(ConfigMap, namespace=ns, chunk_size=3)]
    assert names == ["cm0", "cm1", "cm2", "cm3", "cm4", "cm5", "cm6"]
    odd = [cm.metadata.name async for cm in client.list(ConfigMap, namespace=ns, labels={"parity": "odd"})]
    assert odd == ["cm1", "cm3", "cm5"]
    by_name = [cm.metadata.name async for cm in client.list(ConfigMap, namespace=ns, fields={"metadata.name": "cm4"})]
    assert by_name == ["cm4"]


async def test_lightkube_watch_sees_label_transitions(client: AsyncClient, ns: str) -> None:
    await client.create(Service(metadata=ObjectMeta(name="s1", labels={"exported": "true"}),
                                spec={"ports": [{"port": 80}]}), namespace=ns)  # type: ignore[arg-type]
    seen: list[tuple[str, str]] = []
    started = asyncio.Event()

    async def watch() -> None:
        async for typ, svc in client.watch(Service, namespace=ns, labels={"exported": "true"}):
            seen.append((typ, svc.metadata.name))
            started.set()
            if len(seen) == 4:
                return

    task = asyncio.create_task(watch())
    await asyncio.wait_for(started.wait(), 15)  # the initial ADDED: the watch is open
    await client.patch(Service, "s1", {"metadata": {"labels": {"exported": None}}}, namespace=ns,
                       patch_type=PatchType.MERGE)
    await client.patch(Service, "s1", {"metadata": {"labels": {"exported": "true"}}}, namespace=ns,
                       patch_type=PatchType.MERGE)
    await client.delete(Service, "s1", namespace=ns)
    await asyncio.wait_for(task, 15)
    assert seen == [("ADDED", "s1"), ("DELETED", "s1"), ("ADDED", "s1"), ("DELETED", "s1")]


async def test_lightkube_custom_resource_and_errors(client: AsyncClient, west: Cluster, ns: str) -> None:
    with pytest.raises(ApiError) as exc:
        await client.get(ConfigMap, "absent", namespace=ns)
    assert exc.value.status.code == 404 and exc.value.status.message == 'configmaps "absent" not found'
    await client.create(ConfigMap(metadata=ObjectMeta(name="dup")), namespace=ns)
    with pytest.raises(ApiError) as exc:
        await client.create(ConfigMap(metadata=ObjectMeta(name="dup")), namespace=ns)
    assert exc.value.status.code == 409 and exc.value.status.reason == "AlreadyExists"
    west.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.lk.isthmus.io"},
        "spec": {"group": "lk.isthmus.io", "scope": "Namespaced",
                 "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                 "versions": [{"name": "v1", "served": True, "storage": True, "subresources": {"status": {}},
                               "schema": {"openAPIV3Schema": {"type": "object",
                                                              "x-kubernetes-preserve-unknown-fields": True}}}]}}))
    widget = create_namespaced_resource("lk.isthmus.io", "v1", "Widget", "widgets")
    await client.create(widget(metadata=ObjectMeta(name="w"), spec={"size": 3}), namespace=ns)  # type: ignore[call-arg]
    got = await client.get(widget, "w", namespace=ns)
    assert got.spec == {"size": 3}  # type: ignore[attr-defined]
    # The status subresource changes status only; the main resource ignores status.
    await client.patch(widget.Status, "w", {"status": {"ready": True}, "spec": {"size": 9}}, namespace=ns,
                       patch_type=PatchType.MERGE)
    got = await client.get(widget, "w", namespace=ns)
    assert got.status == {"ready": True} and got.spec == {"size": 3}  # type: ignore[attr-defined]


async def _raw(west: Cluster, path: str) -> list[dict[str, Any]]:
    proc = await asyncio.create_subprocess_exec(
        "/usr/bin/kubectl", "--context=west", "get", "--raw", path, env=west.env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return [json.loads(line) for line in out.decode().splitlines() if line.strip()]


async def test_bookmarks_mark_the_end_of_initial_events(west: Cluster, ns: str) -> None:
    events = await _raw(west, f"/api/v1/namespaces/{ns}/configmaps?watch=true&allowWatchBookmarks=true"
                              "&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&timeoutSeconds=1")
    assert events[-1]["type"] == "BOOKMARK"
    assert events[-1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    west.kubectl("-n", ns, "create", "configmap", "late")
    events = await _raw(west, f"/api/v1/namespaces/{ns}/configmaps?watch=true&allowWatchBookmarks=true"
                              "&timeoutSeconds=2")
    assert events[0]["type"] == "ADDED" and events[0]["object"]["metadata"]["name"] == "late"


async def test_token_request_and_review(west: Cluster, ns: str) -> None:
    token = west.kubectl("-n", ns, "create", "token", "default", "--duration=20m").stdout.strip()
    review = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}}
    out = json.loads(west.kubectl("create", "-f", "-", "-o", "json", input=json.dumps(review)).stdout)
    assert out["status"]["authenticated"] is True
    assert out["status"]["user"]["username"] == f"system:serviceaccount:{ns}:default"
    assert f"system:serviceaccounts:{ns}" in out["status"]["user"]["groups"]
    review["spec"]["token"] = token[:-4] + "AAAA"
    out = json.loads(west.kubectl("create", "-f", "-", "-o", "json", input=json.dumps(review)).stdout)
    assert out["status"]["authenticated"] is False and "invalid bearer token" in out["status"]["error"]
    # Deleting the service account invalidates its tokens.
    west.kubectl("-n", ns, "delete", "serviceaccount", "default")
    review["spec"]["token"] = token
    out = json.loads(west.kubectl("create", "-f", "-", "-o", "json", input=json.dumps(review)).stdout)
    assert out["status"]["authenticated"] is False and "no longer exists" in out["status"]["error"]
