"""Reading and writing kubeconfig files the way kubectl expects them.

A cluster's entry is three named parts — cluster, user, context — all named
after the cluster, with the CA and the admin's certificate and key embedded, so
the file alone is enough to reach the cluster. Other entries in the file are
kept as they are. The file is written atomically with mode 0600 (it holds keys).
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import yaml


def default_path(home: Path) -> Path:
    env = os.environ.get("KUBECONFIG")
    if env:
        return Path(env.split(os.pathsep)[0])
    return home / "kubeconfig"


def load(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"apiVersion": "v1", "kind": "Config", "preferences": {}, "clusters": [], "users": [],
                "contexts": [], "current-context": ""}
    data = yaml.safe_load(path.read_text()) or {}
    for k in ("clusters", "users", "contexts"):
        data[k] = data.get(k) or []
    data.setdefault("apiVersion", "v1")
    data.setdefault("kind", "Config")
    return data


def save(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(data, f, default_flow_style=False, sort_keys=False)
    tmp.replace(path)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _upsert(items: list[dict[str, Any]], name: str, key: str, value: dict[str, Any]) -> None:
    for item in items:
        if item.get("name") == name:
            item[key] = value
            return
    items.append({"name": name, key: value})


def set_cluster_context(path: Path, *, name: str, server: str, ca_pem: bytes, cert_pem: bytes,
                        key_pem: bytes, namespace: str | None = None) -> None:
    data = load(path)
    _upsert(data["clusters"], name, "cluster", {"server": server, "certificate-authority-data": _b64(ca_pem)})
    _upsert(data["users"], name, "user", {"client-certificate-data": _b64(cert_pem),
                                           "client-key-data": _b64(key_pem)})
    ctx: dict[str, Any] = {"cluster": name, "user": name}
    if namespace:
        ctx["namespace"] = namespace
    _upsert(data["contexts"], name, "context", ctx)
    if not data.get("current-context"):
        data["current-context"] = name
    save(path, data)


def token_kubeconfig(*, name: str, server: str, ca_pem: bytes, token: str, user: str,
                     namespace: str | None = None) -> dict[str, Any]:
    """A self-contained kubeconfig that authenticates with a bearer token."""
    ctx: dict[str, Any] = {"cluster": name, "user": user}
    if namespace:
        ctx["namespace"] = namespace
    return {"apiVersion": "v1", "kind": "Config", "preferences": {},
            "clusters": [{"name": name, "cluster": {"server": server,
                                                    "certificate-authority-data": _b64(ca_pem)}}],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": name, "context": ctx}], "current-context": name}


def remove_cluster_context(path: Path, name: str) -> bool:
    if not path.exists():
        return False
    data = load(path)
    before = sum(len(data[k]) for k in ("clusters", "users", "contexts"))
    for k in ("clusters", "users", "contexts"):
        data[k] = [i for i in data[k] if i.get("name") != name]
    if data.get("current-context") == name:
        data["current-context"] = data["contexts"][0]["name"] if data["contexts"] else ""
    save(path, data)
    return before != sum(len(data[k]) for k in ("clusters", "users", "contexts"))
