"""The mesh's certificates, end to end: the real CLI, real OpenSSL, real TLS 1.3.

`isthmus certs` runs as its own process; what it writes is checked with
``openssl verify`` and ``openssl x509``; leaves from the issuer complete mutual
TLS 1.3 handshakes with Python's ``ssl`` and with ``openssl s_server`` /
``openssl s_client``. Everything listens on 127.0.0.1 only, and every process
and thread a test starts is stopped before it ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from isthmus.adapters import x509 as certs
from isthmus.adapters.x509 import Credentials, X509Error
from isthmus.core.identity import workload_identity

pytestmark = pytest.mark.e2e

OPENSSL = shutil.which("openssl") or "openssl"
CERTS = "from isthmus.cli.certs import certs_app; certs_app()"
WEB = workload_identity("web", "emojivoto")
VOTE = workload_identity("vote-bot", "emojivoto")
EVIL = workload_identity("evil", "elsewhere")
TIMEOUT = 10.0


def run_certs(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``isthmus certs ARGS`` as a real process (the certs typer app on its own)."""
    return subprocess.run([sys.executable, "-c", CERTS, *args], cwd=cwd, capture_output=True,
                          text=True, timeout=30)


def openssl(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([OPENSSL, *args], cwd=cwd, capture_output=True, text=True, timeout=30)


def read(path: Path) -> bytes:
    return path.read_bytes()


def creds(dir: Path, name: str) -> Credentials:
    return Credentials(read(dir / f"{name}.crt"), read(dir / f"{name}.key"))


def snapshot(dir: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mode) for p in sorted(dir.iterdir())}


@dataclass
class PKI:
    """A trust anchor and issuer made with the CLI, leaves made with the adapter."""

    dir: Path
    now: datetime

    @property
    def root(self) -> Credentials:
        return creds(self.dir, "root")

    @property
    def issuer(self) -> Credentials:
        return creds(self.dir, "issuer")

    def leaf(self, name: str, dns_name: str, *, issuer: Credentials | None = None) -> Path:
        """Write NAME.crt (leaf then issuer: the chain a TLS peer presents) and NAME.key."""
        issuer = issuer or self.issuer
        leaf = certs.issue_leaf(issuer, dns_name, now=self.now)
        (self.dir / f"{name}.leaf.crt").write_bytes(leaf.cert_pem)
        (self.dir / f"{name}.crt").write_bytes(leaf.cert_pem + issuer.cert_pem)
        certs.write_key(self.dir / f"{name}.key", leaf.key_pem, force=True)
        return self.dir / f"{name}.crt"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    dir = tmp_path_factory.mktemp("pki")
    done = run_certs(dir, "create", "root", "root.crt", "root.key")
    assert done.returncode == 0, done.stderr
    done = run_certs(dir, "create", "issuer", "issuer.crt", "issuer.key",
                     "--ca", "root.crt", "--ca-key", "root.key")
    assert done.returncode == 0, done.stderr
    # a second, unrelated anchor and issuer
    done = run_certs(dir, "create", "root", "other-root.crt", "other-root.key")
    assert done.returncode == 0, done.stderr
    done = run_certs(dir, "create", "issuer", "other-issuer.crt", "other-issuer.key",
                     "--ca", "other-root.crt", "--ca-key", "other-root.key")
    assert done.returncode == 0, done.stderr
    pki = PKI(dir, datetime.now(UTC))
    pki.leaf("web", WEB)
    pki.leaf("vote", VOTE)
    pki.leaf("evil", EVIL, issuer=creds(dir, "other-issuer"))
    return pki


# --- the CLI and OpenSSL ----------------------------------------------------------------------


def test_root_and_issuer_are_what_step_makes(pki: PKI) -> None:
    d = pki.dir
    assert openssl("verify", "-CAfile", "root.crt", "issuer.crt", cwd=d).stdout.strip() == "issuer.crt: OK"
    root = openssl("x509", "-noout", "-text", "-in", "root.crt", cwd=d).stdout
    assert "Subject: CN = root.isthmus.cluster.local" in root
    assert "Issuer: CN = root.isthmus.cluster.local" in root
    assert "CA:TRUE, pathlen:1" in root
    assert "Certificate Sign, CRL Sign" in root
    assert "Subject Key Identifier" in root
    assert "ASN1 OID: prime256v1" in root
    issuer = openssl("x509", "-noout", "-text", "-in", "issuer.crt", cwd=d).stdout
    assert "Subject: CN = identity.isthmus.cluster.local" in issuer
    assert "Issuer: CN = root.isthmus.cluster.local" in issuer
    assert "CA:TRUE, pathlen:0" in issuer
    assert "Certificate Sign, CRL Sign" in issuer
    assert "Authority Key Identifier" in issuer
    assert "ecdsa-with-SHA256" in issuer
    for key in ("root.key", "issuer.key"):
        assert stat.S_IMODE((d / key).stat().st_mode) == 0o600
        assert read(d / key).startswith(b"-----BEGIN PRIVATE KEY-----")
    lifetime = (certs.load_certificates(read(d / "issuer.crt"))[0].not_valid_after_utc
                - pki.now)
    assert timedelta(hours=8759) < lifetime <= timedelta(hours=8760)


def test_leaf_verifies_with_openssl(pki: PKI) -> None:
    d = pki.dir
    done = openssl("verify", "-CAfile", "root.crt", "-untrusted", "issuer.crt", "web.leaf.crt",
                   cwd=d)
    assert done.returncode == 0 and done.stdout.strip() == "web.leaf.crt: OK", done.stderr
    done = openssl("verify", "-CAfile", "root.crt", "-untrusted", "issuer.crt",
                   "-purpose", "sslclient", "web.leaf.crt", cwd=d)
    assert done.returncode == 0 and done.stdout.strip() == "web.leaf.crt: OK", done.stderr
    done = openssl("verify", "-CAfile", "root.crt", "-untrusted", "issuer.crt",
                   "-purpose", "sslserver", "-verify_hostname", WEB, "web.leaf.crt", cwd=d)
    assert done.returncode == 0, done.stderr
    done = openssl("verify", "-CAfile", "root.crt", "-untrusted", "issuer.crt",
                   "-verify_hostname", VOTE, "web.leaf.crt", cwd=d)
    assert done.returncode != 0
    done = openssl("verify", "-CAfile", "root.crt", "-untrusted", "other-issuer.crt",
                   "evil.leaf.crt", cwd=d)
    assert done.returncode != 0
    text = openssl("x509", "-noout", "-text", "-in", "web.leaf.crt", cwd=d).stdout
    assert f"DNS:{WEB}" in text
    assert "X509v3 Subject Alternative Name: critical" in text
    assert "CA:FALSE" in text
    assert "Digital Signature" in text and "Key Encipherment" not in text
    assert "TLS Web Server Authentication, TLS Web Client Authentication" in text
    assert "Issuer: CN = identity.isthmus.cluster.local" in text


def test_no_overwrite_without_force(pki: PKI, tmp_path: Path) -> None:
    assert run_certs(tmp_path, "create", "root", "root.crt", "root.key").returncode == 0
    before = snapshot(tmp_path)
    done = run_certs(tmp_path, "create", "root", "root.crt", "root.key")
    assert done.returncode == 1
    assert done.stderr == "error: root.crt already exists; pass --force to overwrite it\n"
    assert snapshot(tmp_path) == before
    (tmp_path / "root.key").chmod(0o644)
    done = run_certs(tmp_path, "create", "root", "root.crt", "root.key", "--force",
                     "--not-after", "30d")
    assert done.returncode == 0, done.stderr
    assert read(tmp_path / "root.crt") != before["root.crt"][0]
    assert stat.S_IMODE((tmp_path / "root.key").stat().st_mode) == 0o600
    new = certs.load_certificates(read(tmp_path / "root.crt"))[0]
    assert abs(new.not_valid_after_utc - datetime.now(UTC) - timedelta(days=30)) < timedelta(minutes=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root.crt", "root.key"]  # no temp files


def test_issuer_never_outlives_its_anchor(tmp_path: Path) -> None:
    assert run_certs(tmp_path, "create", "root", "r.crt", "r.key", "--not-after", "2h").returncode == 0
    done = run_certs(tmp_path, "create", "issuer", "i.crt", "i.key", "--ca", "r.crt",
                     "--ca-key", "r.key", "--not-after", "1h30m")
    assert done.returncode == 0, done.stderr
    root, issuer = (certs.load_certificates(read(tmp_path / n))[0] for n in ("r.crt", "i.crt"))
    assert abs(issuer.not_valid_after_utc - datetime.now(UTC) - timedelta(minutes=90)) < timedelta(minutes=1)
    done = run_certs(tmp_path, "create", "issuer", "j.crt", "j.key", "--ca", "r.crt",
                     "--ca-key", "r.key", "--not-after", "8760h")
    assert done.returncode == 0, done.stderr
    assert certs.load_certificates(read(tmp_path / "j.crt"))[0].not_valid_after_utc == root.not_valid_after_utc


ERROR_CASES = [
    pytest.param(["create", "root", "new.crt", "new.key", "--not-after", "10x"],
                 "error: invalid duration '10x': use a number and a unit d, h, m or s, such as "
                 "87600h, 90m or 1h30m", id="bad-duration"),
    pytest.param(["create", "root", "new.crt", "new.key", "--not-after", "0h"],
                 "error: invalid duration '0h': it must be longer than zero", id="zero-duration"),
    pytest.param(["create", "issuer", "new.crt", "new.key", "--ca", "missing.crt",
                  "--ca-key", "root.key"],
                 "error: missing.crt does not exist; give the trust anchor certificate with --ca",
                 id="missing-ca"),
    pytest.param(["create", "issuer", "new.crt", "new.key", "--ca", "root.crt",
                  "--ca-key", "missing.key"],
                 "error: missing.key does not exist; give the trust anchor's private key with "
                 "--ca-key", id="missing-ca-key"),
    pytest.param(["create", "issuer", "new.crt", "new.key", "--ca", "root.key",
                  "--ca-key", "root.key"],
                 "error: --ca root.key is a private key, not a certificate", id="key-as-ca"),
    pytest.param(["create", "issuer", "new.crt", "new.key", "--ca", "garbage.txt",
                  "--ca-key", "root.key"],
                 "error: --ca garbage.txt holds no PEM certificate (no '-----BEGIN CERTIFICATE-----' "
                 "line)", id="garbage-ca"),
    pytest.param(["create", "issuer", "new.crt", "new.key", "--ca", "root.crt",
                  "--ca-key", "root.crt"],
                 "error: --ca-key root.crt is a certificate, not a private key", id="cert-as-key"),
    pytest.param(["create", "issuer", "new.crt", "new.key", "--ca", "root.crt",
                  "--ca-key", "issuer.key"],
                 "error: the trust anchor key does not match the trust anchor certificate "
                 "(CN=root.isthmus.cluster.local); give the key that was created with it",
                 id="key-mismatch"),
    pytest.param(["create", "issuer", "new.crt", "new.key", "--ca", "web.leaf.crt",
                  "--ca-key", "web.key"],
                 "error: the trust anchor certificate (certificate for " + WEB + ") is not a CA "
                 "certificate (BasicConstraints CA is not true); give a trust anchor or issuer "
                 "certificate", id="ca-not-a-ca"),
    pytest.param(["create", "issuer", "new.crt", "new.key", "--ca", "expired.crt",
                  "--ca-key", "expired.key"],
                 "error: the trust anchor certificate (CN=root.isthmus.cluster.local) expired at ",
                 id="expired-ca"),
    pytest.param(["create", "root", "root.crt", "new.key"],
                 "error: root.crt already exists; pass --force to overwrite it", id="cert-exists"),
    pytest.param(["create", "root", "new.crt", "root.key"],
                 "error: root.key already exists; pass --force to overwrite it", id="key-exists"),
    pytest.param(["create", "issuer", "new.crt", "issuer.key", "--ca", "root.crt",
                  "--ca-key", "root.key"],
                 "error: issuer.key already exists; pass --force to overwrite it",
                 id="issuer-key-exists"),
    pytest.param(["create", "root", "same", "same"],
                 "error: same is given twice; the certificate and the key need their own files",
                 id="same-file-twice"),
    pytest.param(["inspect", "missing.crt"],
                 "error: missing.crt does not exist; give a PEM certificate file", id="inspect-missing"),
    pytest.param(["inspect", "root.key"],
                 "error: root.key is a private key, not a certificate", id="inspect-key"),
    pytest.param(["inspect", "root.crt", "-o", "yaml"],
                 "error: unknown output format 'yaml'; use -o text or -o json", id="inspect-format"),
    pytest.param(["inspect", "root.crt", "--ca", "garbage.txt"],
                 "error: --ca garbage.txt holds no PEM certificate", id="inspect-bad-ca"),
]


@dataclass
class ErrorRun:
    before: dict[str, tuple[bytes, int]]
    after: dict[str, tuple[bytes, int]]
    done: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def error_runs(pki: PKI, tmp_path_factory: pytest.TempPathFactory) -> dict[str, ErrorRun]:
    """Every error case, each in its own directory, run as concurrent processes (for speed)."""
    expired = certs.new_root(now=pki.now - timedelta(days=30), not_after=timedelta(days=1))
    started: dict[str, tuple[Path, dict[str, tuple[bytes, int]], subprocess.Popen[str]]] = {}
    for case in ERROR_CASES:
        case_id = str(case.id)
        args = case.values[0]
        assert isinstance(args, list)
        dir = tmp_path_factory.mktemp(f"error-{case_id}")
        for name in ("root.crt", "root.key", "issuer.crt", "issuer.key", "web.leaf.crt", "web.key"):
            shutil.copy2(pki.dir / name, dir / name)
        (dir / "garbage.txt").write_text("hello\n")
        (dir / "expired.crt").write_bytes(expired.cert_pem)
        (dir / "expired.key").write_bytes(expired.key_pem)
        before = snapshot(dir)
        proc = subprocess.Popen([sys.executable, "-c", CERTS, *args], cwd=dir, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        started[case_id] = (dir, before, proc)
    runs = {}
    for case_id, (dir, before, proc) in started.items():
        try:
            stdout, stderr = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        done = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
        runs[case_id] = ErrorRun(before, snapshot(dir), done)
    return runs


@pytest.mark.parametrize(("args", "message"), ERROR_CASES)
def test_errors_are_one_line_and_write_nothing(error_runs: dict[str, ErrorRun],
                                               request: pytest.FixtureRequest, args: list[str],
                                               message: str) -> None:
    run = error_runs[request.node.callspec.id]
    done = run.done
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stderr.startswith(message), done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stdout == ""
    assert run.after == run.before


def test_inspect_describes_and_checks_the_chain(pki: PKI) -> None:
    d = pki.dir
    done = run_certs(d, "inspect", "issuer.crt", "--ca", "root.crt")
    assert done.returncode == 0, done.stderr
    assert "subject:     CN=identity.isthmus.cluster.local" in done.stdout
    assert "issuer:      CN=root.isthmus.cluster.local" in done.stdout
    assert "key:         ECDSA P-256" in done.stdout
    assert "CA:          yes (path length 0)" in done.stdout
    assert done.stdout.rstrip().endswith("chains to the trust anchor: yes")
    fingerprint = openssl("x509", "-noout", "-fingerprint", "-sha256", "-in", "issuer.crt",
                          cwd=d).stdout.strip().split("=", 1)[1]
    assert f"SHA-256:     {fingerprint}" in done.stdout

    done = run_certs(d, "inspect", "issuer.crt", "--ca", "other-root.crt")
    assert done.returncode == 0, done.stderr
    assert ("chains to the trust anchor: no (CN=identity.isthmus.cluster.local (issued by "
            "CN=root.isthmus.cluster.local) is not signed by the trust anchor "
            "(CN=root.isthmus.cluster.local))") in done.stdout

    done = run_certs(d, "inspect", "web.crt", "--ca", "root.crt", "-o", "json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    leaf, issuer = doc["certificates"]
    assert leaf["sans"] == [f"DNS:{WEB}"] and leaf["subject"] == "" and not leaf["is_ca"]
    assert leaf["key_type"] == "ECDSA P-256" and leaf["path_length"] is None
    assert issuer["is_ca"] and issuer["path_length"] == 0
    assert doc["chainsToTrustAnchor"] == {"ok": True, "reason": None}

    done = run_certs(d, "inspect", "evil.crt", "--ca", "root.crt", "-o", "json")
    reason = json.loads(done.stdout)["chainsToTrustAnchor"]
    assert reason["ok"] is False and "does not chain to the trust anchor" in reason["reason"]

    done = run_certs(d, "inspect", "root.crt", "--ca", "root.crt")
    assert "CA:          yes (path length 1)" in done.stdout
    assert "chains to the trust anchor: yes" in done.stdout


# --- verify_chain and the adapter's refusals --------------------------------------------------


def test_verify_chain_accepts_a_leaf_of_the_issuer(pki: PKI) -> None:
    leaf = read(pki.dir / "web.leaf.crt")
    certs.verify_chain(leaf, intermediates=[pki.issuer.cert_pem], roots_pem=pki.root.cert_pem,
                       now=pki.now)
    certs.verify_chain(leaf, intermediates=pki.issuer.cert_pem, roots_pem=pki.root.cert_pem,
                       now=pki.now, dns_name=WEB)
    # the chain a peer presents (leaf then issuer), roots as a bundle with another anchor
    bundle = read(pki.dir / "other-root.crt") + pki.root.cert_pem
    certs.verify_chain(read(pki.dir / "web.crt"), intermediates=[], roots_pem=bundle,
                       now=pki.now + timedelta(hours=23))
    # the clock-skew allowance: a peer whose clock is 15 s behind accepts the new leaf
    certs.verify_chain(leaf, intermediates=[pki.issuer.cert_pem], roots_pem=pki.root.cert_pem,
                       now=pki.now - timedelta(seconds=15))
    # a naive `now` is taken as UTC
    certs.verify_chain(leaf, intermediates=[pki.issuer.cert_pem], roots_pem=pki.root.cert_pem,
                       now=pki.now.replace(tzinfo=None))


def test_verify_chain_refusals(pki: PKI) -> None:
    leaf = read(pki.dir / "web.leaf.crt")
    inter = [pki.issuer.cert_pem]
    with pytest.raises(X509Error, match=r"does not chain to the trust anchor \(CN=root"):
        certs.verify_chain(leaf, roots_pem=read(pki.dir / "other-root.crt"), now=pki.now, intermediates=inter)
    not_after = certs.load_certificates(leaf)[0].not_valid_after_utc
    with pytest.raises(X509Error, match=f"certificate for {WEB} expired at "):
        certs.verify_chain(leaf, roots_pem=pki.root.cert_pem, now=not_after + timedelta(seconds=1),
                           intermediates=inter)
    with pytest.raises(X509Error, match="is not valid before"):
        certs.verify_chain(leaf, roots_pem=pki.root.cert_pem, now=pki.now - timedelta(minutes=5),
                           intermediates=inter)
    with pytest.raises(X509Error, match=f"is not valid for {VOTE} \\(its DNS names: {WEB}\\)"):
        certs.verify_chain(leaf, roots_pem=pki.root.cert_pem, now=pki.now, dns_name=VOTE, intermediates=inter)
    with pytest.raises(X509Error, match="does not chain"):  # missing intermediate
        certs.verify_chain(leaf, intermediates=[], roots_pem=pki.root.cert_pem, now=pki.now)
    with pytest.raises(X509Error, match="basicConstraints"):  # a CA is not a leaf
        certs.verify_chain(pki.issuer.cert_pem, intermediates=[], roots_pem=pki.root.cert_pem,
                           now=pki.now)
    with pytest.raises(X509Error, match="the leaf holds no PEM certificate"):
        certs.verify_chain(b"junk", intermediates=[], roots_pem=pki.root.cert_pem, now=pki.now)


def test_leaf_lifetime_and_skew(pki: PKI) -> None:
    leaf = certs.load_certificates(read(pki.dir / "web.leaf.crt"))[0]
    assert leaf.not_valid_before_utc == (pki.now - timedelta(seconds=20)).replace(microsecond=0)
    assert leaf.not_valid_after_utc == (pki.now + timedelta(hours=24)).replace(microsecond=0)
    short_issuer = certs.new_issuer(pki.root, now=pki.now, not_after=timedelta(hours=1))
    short = certs.load_certificates(certs.issue_leaf(short_issuer, WEB, now=pki.now).cert_pem)[0]
    assert short.not_valid_after_utc == certs.load_certificates(
        short_issuer.cert_pem)[0].not_valid_after_utc


def test_csrs_are_read_and_checked(pki: PKI) -> None:
    key = certs.new_private_key()
    info = certs.read_csr(certs.make_csr(key, WEB))
    assert (info.dns_names, info.other_sans, info.common_name) == ([WEB], [], None)
    assert info.signature_valid and info.key_type == "ECDSA P-256"
    with pytest.raises(X509Error, match="not a PEM certificate signing request"):
        certs.read_csr(b"hello")
    csr = certs.make_csr(key, WEB)
    body = csr.splitlines()
    body[3] = body[3][:10] + (b"A" if body[3][10:11] != b"A" else b"B") + body[3][11:]
    tampered = b"\n".join(body) + b"\n"
    try:
        tampered_info = certs.read_csr(tampered)
    except X509Error:
        pass  # unparseable is also a refusal
    else:
        assert not tampered_info.signature_valid
        with pytest.raises(X509Error, match="signature is not valid"):
            certs.sign_leaf(pki.issuer, tampered, dns_name=WEB, now=pki.now)
    # the leaf carries the name given, never the CSR's own names
    other = certs.make_csr(key, "admin.example.com")
    leaf = certs.load_certificates(certs.sign_leaf(pki.issuer, other, dns_name=WEB, now=pki.now))[0]
    assert certs.describe(leaf)["sans"] == [f"DNS:{WEB}"]
    with pytest.raises(X509Error, match="is not a CA certificate"):
        certs.sign_leaf(Credentials(read(pki.dir / "web.leaf.crt"), read(pki.dir / "web.key")),
                        csr, dns_name=WEB, now=pki.now)


# --- TLS 1.3 with Python ssl ------------------------------------------------------------------


def server_context(pki: PKI, name: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cafile=str(pki.dir / "root.crt"))
    ctx.load_cert_chain(str(pki.dir / f"{name}.crt"), str(pki.dir / f"{name}.key"))
    return ctx


def client_context(pki: PKI, name: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_verify_locations(cafile=str(pki.dir / "root.crt"))
    ctx.load_cert_chain(str(pki.dir / f"{name}.crt"), str(pki.dir / f"{name}.key"))
    return ctx


def peer_dns(conn: ssl.SSLSocket) -> list[str]:
    cert = conn.getpeercert() or {}
    sans: tuple[tuple[str, str], ...] = cert.get("subjectAltName", ())  # type: ignore[assignment]
    return [value for kind, value in sans if kind == "DNS"]


@dataclass
class ServerResult:
    peer: list[str] | None = None
    version: str | None = None
    error: BaseException | None = None


@pytest.fixture
def python_server(pki: PKI) -> Iterator[tuple[int, ServerResult, threading.Event]]:
    """A one-connection TLS 1.3 server on 127.0.0.1 with the web leaf, requiring a client cert.

    It answers ``pong <client identity>`` to whatever the client sends first.
    """
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(TIMEOUT)
    ctx = server_context(pki, "web")
    result = ServerResult()
    done = threading.Event()

    def serve() -> None:
        try:
            raw, _ = listener.accept()
            raw.settimeout(TIMEOUT)
            with ctx.wrap_socket(raw, server_side=True) as conn:
                result.peer = peer_dns(conn)
                result.version = conn.version()
                conn.recv(100)
                conn.sendall(b"pong " + ",".join(result.peer).encode() + b"\n")
                with contextlib.suppress(OSError):  # the client may just hang up
                    conn.unwrap()  # close_notify: OpenSSL clients treat a bare EOF as an error
        except BaseException as e:
            result.error = e
        finally:
            done.set()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], result, done
    finally:
        listener.close()
        thread.join(TIMEOUT)


def test_python_mutual_tls13_between_two_leaves(pki: PKI,
                                                python_server: tuple[int, ServerResult, threading.Event]) -> None:
    port, result, done = python_server
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw, \
            client_context(pki, "vote").wrap_socket(raw, server_hostname=WEB) as conn:
        assert conn.version() == "TLSv1.3"
        assert peer_dns(conn) == [WEB]
        conn.sendall(b"ping\n")
        assert conn.recv(200) == f"pong {VOTE}\n".encode()
    assert done.wait(TIMEOUT)
    assert result.error is None
    assert result.peer == [VOTE] and result.version == "TLSv1.3"


def test_python_server_refuses_a_leaf_of_another_anchor(
        pki: PKI, python_server: tuple[int, ServerResult, threading.Event]) -> None:
    port, result, done = python_server
    # TLS 1.3: the client finishes its handshake first and learns of the refusal on read
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw, \
            pytest.raises((ssl.SSLError, ConnectionError)), \
            client_context(pki, "evil").wrap_socket(raw, server_hostname=WEB) as conn:
        conn.sendall(b"ping\n")
        if not conn.recv(200):
            raise ConnectionError("closed by the server")
    assert done.wait(TIMEOUT)
    assert isinstance(result.error, ssl.SSLCertVerificationError)
    assert result.peer is None


def test_python_client_refuses_a_server_of_another_anchor(pki: PKI) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(TIMEOUT)
    ctx = server_context(pki, "evil")
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            raw, _ = listener.accept()
            raw.settimeout(TIMEOUT)
            with ctx.wrap_socket(raw, server_side=True):
                pass
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with socket.create_connection(("127.0.0.1", listener.getsockname()[1]),
                                      timeout=TIMEOUT) as raw, \
                pytest.raises(ssl.SSLCertVerificationError):
            client_context(pki, "vote").wrap_socket(raw, server_hostname=EVIL)
    finally:
        listener.close()
        thread.join(TIMEOUT)
    assert errors  # the server saw the client abort


# --- interop with OpenSSL's own client and server ---------------------------------------------


@pytest.fixture
def s_server(pki: PKI) -> Iterator[int]:
    """``openssl s_server`` with the web leaf, TLS 1.3 only, requiring a client certificate."""
    proc = subprocess.Popen(
        [OPENSSL, "s_server", "-accept", "127.0.0.1:0", "-cert", "web.leaf.crt", "-key", "web.key",
         "-cert_chain", "issuer.crt", "-CAfile", "root.crt", "-Verify", "1", "-tls1_3",
         "-verify_return_error", "-www"],
        cwd=pki.dir, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        assert proc.stdout is not None
        port = 0
        for line in proc.stdout:
            if line.startswith("ACCEPT "):
                port = int(line.rsplit(":", 1)[1])
                break
        assert port, f"s_server did not start: {proc.stderr.read() if proc.stderr else ''}"
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_python_client_with_openssl_s_server(pki: PKI, s_server: int) -> None:
    with socket.create_connection(("127.0.0.1", s_server), timeout=TIMEOUT) as raw, \
            client_context(pki, "vote").wrap_socket(raw, server_hostname=WEB) as conn:
        assert conn.version() == "TLSv1.3"
        assert peer_dns(conn) == [WEB]
        conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
        page = b""
        while chunk := conn.recv(4096):
            page += chunk
    assert page.startswith(b"HTTP/1.0 200 ok"), page[:200]
    assert b"TLSv1.3" in page


def test_openssl_s_server_refuses_a_client_of_another_anchor(pki: PKI, s_server: int) -> None:
    with socket.create_connection(("127.0.0.1", s_server), timeout=TIMEOUT) as raw, \
            pytest.raises((ssl.SSLError, ConnectionError)), \
            client_context(pki, "evil").wrap_socket(raw, server_hostname=WEB) as conn:
        conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
        if not conn.recv(4096):
            raise ConnectionError("closed by the server")


def run_s_client(pki: PKI, port: int, name: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", "-cert", f"{name}.leaf.crt",
         "-key", f"{name}.key", "-cert_chain", "issuer.crt", "-CAfile", "root.crt",
         "-verify_return_error", "-verify_hostname", WEB, "-tls1_3", "-ign_eof"],
        cwd=pki.dir, input="ping\n", capture_output=True, text=True, timeout=TIMEOUT)


def test_openssl_s_client_with_python_server(
        pki: PKI, python_server: tuple[int, ServerResult, threading.Event]) -> None:
    port, result, done = python_server
    client = run_s_client(pki, port, "vote")
    assert client.returncode == 0, client.stderr
    assert f"pong {VOTE}" in client.stdout
    assert "Verify return code: 0 (ok)" in client.stdout
    assert done.wait(TIMEOUT) and result.error is None
    assert result.peer == [VOTE] and result.version == "TLSv1.3"


def test_openssl_s_client_refuses_a_server_of_another_anchor(pki: PKI) -> None:
    """s_client with -verify_return_error against a server whose leaf is from another anchor."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(TIMEOUT)
    ctx = server_context(pki, "evil")

    def serve() -> None:
        try:
            raw, _ = listener.accept()
            raw.settimeout(TIMEOUT)
            with ctx.wrap_socket(raw, server_side=True):
                pass
        except (OSError, ssl.SSLError):
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        client = run_s_client(pki, listener.getsockname()[1], "vote")
    finally:
        listener.close()
        thread.join(TIMEOUT)
    assert client.returncode != 0
    assert "verify error" in client.stdout + client.stderr


def test_key_files_are_private(pki: PKI) -> None:
    for key in ("web.key", "vote.key", "root.key", "issuer.key"):
        assert stat.S_IMODE(os.stat(pki.dir / key).st_mode) == 0o600
