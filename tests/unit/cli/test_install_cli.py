"""`isthmus install` and `isthmus uninstall` as a user runs them: the real command in a subprocess.

Every refusal is checked for its message (the file and the problem), exit
status 1 and an empty stdout, so nothing reaches `kubectl apply -f -`.
"""

from __future__ import annotations

import base64
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from isthmus.adapters.x509 import Credentials, new_issuer, new_root, verify_ca_chain

ISTHMUS = str(Path(sys.executable).parent / "isthmus")
NOW = datetime.now(UTC)
ROOT = new_root(now=NOW)
ISSUER = new_issuer(ROOT, now=NOW)


def isthmus(*args: str, cwd: Path | None = None, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ISTHMUS, *args], capture_output=True, text=True, cwd=cwd, input=stdin, timeout=60)


def write(directory: Path, anchors: bytes = ROOT.cert_pem, issuer: Credentials = ISSUER) -> list[str]:
    (directory / "root.crt").write_bytes(anchors)
    (directory / "issuer.crt").write_bytes(issuer.cert_pem)
    (directory / "issuer.key").write_bytes(issuer.key_pem)
    return ["--identity-trust-anchors-file", "root.crt", "--identity-issuer-certificate-file", "issuer.crt",
            "--identity-issuer-key-file", "issuer.key"]


def objects(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d is not None]


def named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def without_webhook_material(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for d in docs:
        if d["kind"] == "Secret" and d["metadata"]["name"] == "isthmus-proxy-injector-k8s-tls":
            d["data"] = {}
        if d["kind"] == "MutatingWebhookConfiguration":
            d["webhooks"][0]["clientConfig"]["caBundle"] = ""
    return docs


def test_install_with_the_three_files(tmp_path: Path) -> None:
    out = isthmus("install", *write(tmp_path), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    docs = objects(out.stdout)
    assert named(docs, "ConfigMap", "isthmus-identity-trust-roots")["data"]["ca-bundle.crt"] == ROOT.cert_pem.decode()
    secret = named(docs, "Secret", "isthmus-identity-issuer")["data"]
    assert base64.b64decode(secret["crt.pem"]) == ISSUER.cert_pem
    assert base64.b64decode(secret["key.pem"]) == ISSUER.key_pem
    kinds = [d["kind"] for d in docs]
    assert kinds[0] == "Namespace" and kinds[-1] == "MutatingWebhookConfiguration"
    assert kinds.count("Deployment") == 3 and kinds.count("Service") == 3
    again = isthmus("install", *write(tmp_path), cwd=tmp_path)
    # Re-running gives the same objects but for the webhook's certificate, made anew each run.
    assert without_webhook_material(objects(again.stdout)) == without_webhook_material(docs)


def test_install_without_files_generates_an_anchor_and_warns(tmp_path: Path) -> None:
    out = isthmus("install")
    assert out.returncode == 0, out.stderr
    assert out.stderr.startswith("warning: no --identity-trust-anchors-file")
    assert "need a shared trust anchor" in out.stderr
    docs = objects(out.stdout)
    anchors = named(docs, "ConfigMap", "isthmus-identity-trust-roots")["data"]["ca-bundle.crt"].encode()
    issuer = base64.b64decode(named(docs, "Secret", "isthmus-identity-issuer")["data"]["crt.pem"])
    verify_ca_chain(issuer, roots_pem=anchors, now=datetime.now(UTC))


def test_install_options(tmp_path: Path) -> None:
    out = isthmus("install", *write(tmp_path), "--ha", "--identity-trust-domain", "west.example",
                  "--image", "registry.local/isthmus:dev", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    docs = objects(out.stdout)
    for d in (x for x in docs if x["kind"] == "Deployment"):
        assert d["spec"]["replicas"] == 3
        assert d["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.local/isthmus:dev"
    assert named(docs, "ConfigMap", "isthmus-config")["data"]["trustDomain"] == "west.example"


def test_install_crds_and_uninstall() -> None:
    crds = isthmus("install", "--crds")
    assert crds.returncode == 0 and crds.stderr == ""
    assert {d["kind"] for d in objects(crds.stdout)} == {"CustomResourceDefinition"}
    gone = isthmus("uninstall")
    assert gone.returncode == 0 and gone.stderr == ""
    refs = objects(gone.stdout)
    assert refs[0]["kind"] == "MutatingWebhookConfiguration"
    assert {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "isthmus"}} in refs


OTHER_ROOT = new_root(now=NOW)
OLD_ROOT = new_root(now=NOW - timedelta(days=30))
EXPIRED_ISSUER = new_issuer(OLD_ROOT, now=NOW - timedelta(days=29), not_after=timedelta(days=1))
EXPIRED_ROOT = new_root(now=NOW - timedelta(days=3), not_after=timedelta(days=1))


def _case(name: str) -> tuple[list[str], str]:
    """Files for one bad-input case, and the start of the expected message (after `error: `)."""
    if name == "issuer not signed by the anchor":
        return ["root.crt", OTHER_ROOT.cert_pem, ISSUER], (
            "issuer.crt does not chain to the trust anchors in root.crt: CN=identity.isthmus.cluster.local "
            "(issued by CN=root.isthmus.cluster.local) is not signed by the trust anchor")
    if name == "expired issuer":
        return ["root.crt", OLD_ROOT.cert_pem, EXPIRED_ISSUER], (
            "issuer.crt: the issuer certificate (CN=identity.isthmus.cluster.local) expired at")
    if name == "expired anchor":
        return ["root.crt", EXPIRED_ROOT.cert_pem, ISSUER], (
            "root.crt: the trust anchor certificate (CN=root.isthmus.cluster.local) expired at")
    if name == "key of another issuer":
        other = new_issuer(ROOT, now=NOW)
        return ["root.crt", ROOT.cert_pem, Credentials(ISSUER.cert_pem, other.key_pem)], (
            "issuer.key does not match issuer.crt: it is not the private key of the issuer certificate "
            "(CN=identity.isthmus.cluster.local)")
    if name == "anchors not PEM":
        return ["root.crt", b"hello\n", ISSUER], (
            "root.crt holds no PEM certificate (no '-----BEGIN CERTIFICATE-----' line)")
    if name == "issuer certificate not PEM":
        return ["root.crt", ROOT.cert_pem, Credentials(b"\x00\x01binary", ISSUER.key_pem)], (
            "issuer.crt holds no PEM certificate")
    if name == "issuer key not PEM":
        return ["root.crt", ROOT.cert_pem, Credentials(ISSUER.cert_pem, b"not a key")], (
            "issuer.key is not a PEM private key")
    if name == "issuer key is a certificate":
        return ["root.crt", ROOT.cert_pem, Credentials(ISSUER.cert_pem, ISSUER.cert_pem)], (
            "issuer.key is a certificate, not a private key")
    if name == "anchor file holds a key":
        return ["root.crt", ROOT.key_pem, ISSUER], "root.crt is a private key, not a certificate"
    raise AssertionError(name)


@pytest.mark.parametrize("case", [
    "issuer not signed by the anchor", "expired issuer", "expired anchor", "key of another issuer",
    "anchors not PEM", "issuer certificate not PEM", "issuer key not PEM", "issuer key is a certificate",
    "anchor file holds a key",
])
def test_bad_identity_files_are_refused_before_anything_is_printed(tmp_path: Path, case: str) -> None:
    (_, anchors, issuer), message = _case(case)
    out = isthmus("install", *write(tmp_path, anchors, issuer), cwd=tmp_path)
    assert out.returncode == 1
    assert out.stdout == ""
    assert out.stderr.startswith(f"error: {message}"), out.stderr
    assert out.stderr.count("\n") == 1  # one line, no traceback


@pytest.mark.parametrize(("args", "message"), [
    (["--identity-trust-anchors-file", "missing.crt", "--identity-issuer-certificate-file", "issuer.crt",
      "--identity-issuer-key-file", "issuer.key"],
     "missing.crt does not exist (given with --identity-trust-anchors-file)"),
    (["--identity-trust-anchors-file", ".", "--identity-issuer-certificate-file", "issuer.crt",
      "--identity-issuer-key-file", "issuer.key"],
     ". is a directory, not a file (given with --identity-trust-anchors-file)"),
    (["--identity-trust-anchors-file", "root.crt"],
     "--identity-issuer-certificate-file, --identity-issuer-key-file missing: give all three identity files"),
    (["--crds", "--identity-trust-anchors-file", "root.crt"],
     "--crds prints only the CRDs; give --identity-trust-anchors-file to `isthmus install` without --crds"),
    (["--identity-trust-domain", "Bad_Domain"], "--identity-trust-domain 'Bad_Domain' is not a DNS domain"),
    (["--cluster-domain", "-x"], "--cluster-domain '-x' is not a DNS domain"),
    (["--image", "has space"], "--image 'has space' is not an image reference"),
    (["--proxy-log-level", "loud"], "--proxy-log-level 'loud' is not one of debug, info, warning, error"),
])
def test_bad_options_are_refused(tmp_path: Path, args: list[str], message: str) -> None:
    write(tmp_path)
    out = isthmus("install", *args, cwd=tmp_path)
    assert out.returncode == 1
    assert out.stdout == ""
    assert out.stderr.startswith(f"error: {message}"), out.stderr
