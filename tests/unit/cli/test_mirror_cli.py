"""`isthmus service-mirror`: what it refuses before it starts (its probes need a workload certificate).

Run as the real command (a subprocess), outside a pod, with a kubeconfig file
that exists; each refusal is one `error:` line, exit status 1, no traceback
and nothing on stdout, and happens before any cluster is contacted.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from isthmus.adapters.x509 import issue_leaf, new_issuer, new_root

NOW = datetime.now(UTC)
ROOT = new_root(now=NOW)
ISSUER = new_issuer(ROOT, now=NOW)
ISTHMUS = str(Path(sys.executable).parent / "isthmus")


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    # An API address nothing listens on: a refusal must come before it is tried.
    kubeconfig = {"apiVersion": "v1", "kind": "Config", "current-context": "west",
                  "clusters": [{"name": "west", "cluster": {"server": "https://127.251.0.1:1"}}],
                  "users": [{"name": "u", "user": {"token": "t"}}],
                  "contexts": [{"name": "west", "context": {"cluster": "west", "user": "u"}}]}
    leaf = issue_leaf(ISSUER, "isthmus-service-mirror-east.isthmus-multicluster.serviceaccount.identity.isthmus."
                              "cluster.local", now=NOW)
    other = issue_leaf(ISSUER, "other.ns.serviceaccount.identity.isthmus.cluster.local", now=NOW)
    paths = {"kubeconfig": tmp_path / "kubeconfig", "cert": tmp_path / "mirror.crt", "key": tmp_path / "mirror.key",
             "other_key": tmp_path / "other.key", "anchors": tmp_path / "anchors.pem",
             "empty": tmp_path / "empty.pem"}
    paths["kubeconfig"].write_text(yaml.safe_dump(kubeconfig))
    paths["cert"].write_bytes(leaf.cert_pem + ISSUER.cert_pem)
    paths["key"].write_bytes(leaf.key_pem)
    paths["other_key"].write_bytes(other.key_pem)
    paths["anchors"].write_bytes(ROOT.cert_pem)
    paths["empty"].write_text("")
    return paths


def mirror(files: dict[str, Path], *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    return subprocess.run([ISTHMUS, "service-mirror", "--link", "east", "--kubeconfig", str(files["kubeconfig"]),
                           "--admin-addr", "127.251.0.9:0", *args],
                          capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.parametrize(("args", "message"), [
    ((), "error: gateway probes are mTLS and need a workload certificate: outside a pod give --identity-cert, "
         "--identity-key and --trust-anchors"),
    (("--identity-cert", "{cert}"), "error: --identity-cert, --identity-key and --trust-anchors go together "
                                    "(only --identity-cert given)"),
    (("--identity-cert", "{cert}", "--identity-key", "{other_key}", "--trust-anchors", "{anchors}"),
     "error: the identity key does not match the identity certificate"),
    (("--identity-cert", "{cert}", "--identity-key", "{key}", "--trust-anchors", "{empty}"),
     "error: --trust-anchors"),
    (("--identity-cert", "{cert}", "--identity-key", "{key}", "--trust-anchors", "{kubeconfig}.missing"),
     "error: [Errno 2] No such file or directory"),
])
def test_the_mirror_refuses_to_start_without_a_usable_probe_certificate(
        files: dict[str, Path], args: tuple[str, ...], message: str) -> None:
    names = {k: str(v) for k, v in files.items()}
    proc = mirror(files, *(a.format(**names) for a in args))
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.startswith(message), proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr
