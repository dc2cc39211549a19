"""Key and certificate files for an embedded cluster's API server.

Each cluster has its own CA (ECDSA P-256), a serving certificate for its API
address, an admin client certificate (`O=system:masters`) for the kubeconfig,
and a key that signs service-account tokens. Private keys are written with mode
0600 and never logged. X.509 work is done with the `cryptography` library.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# The cluster's certificates are a cert/key pair like a workload's; one type for both.
from isthmus.adapters.x509 import Credentials as KeyPair
from isthmus.adapters.x509 import new_private_key, private_key_pem


def _name(cn: str, orgs: tuple[str, ...] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def new_ca(common_name: str, *, now: dt.datetime, days: int = 3650) -> KeyPair:
    key = new_private_key()
    name = _name(common_name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(seconds=20))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), private_key_pem(key))


def issue(ca: KeyPair, common_name: str, *, now: dt.datetime, orgs: tuple[str, ...] = (),
          dns: tuple[str, ...] = (), ips: tuple[str, ...] = (), server: bool = False,
          client: bool = False, days: int = 3650) -> KeyPair:
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = new_private_key()
    usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + (
        [ExtendedKeyUsageOID.CLIENT_AUTH] if client else [])
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, orgs)).issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(seconds=20))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, key_cert_sign=False,
                                     crl_sign=False, content_commitment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False),
                       critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
    )
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), private_key_pem(key))


def new_signing_key() -> bytes:
    """An ECDSA P-256 private key (PEM) for signing service-account tokens."""
    return private_key_pem(new_private_key())


def write_private(path: Path, data: bytes) -> None:
    """Write a secret file readable by its owner only (0600), never widening an existing one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
    finally:
        os.close(fd)


def write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@dataclass(frozen=True)
class ClusterPKI:
    """Paths of one cluster's TLS and token-signing material."""

    dir: Path

    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.dir / "apiserver.crt"

    @property
    def server_key(self) -> Path:
        return self.dir / "apiserver.key"

    @property
    def admin_cert(self) -> Path:
        return self.dir / "admin.crt"

    @property
    def admin_key(self) -> Path:
        return self.dir / "admin.key"

    @property
    def sa_key(self) -> Path:
        return self.dir / "sa.key"

    def exists(self) -> bool:
        return all(p.exists() for p in (self.ca_cert, self.server_cert, self.admin_cert, self.sa_key))

    def generate(self, *, cluster: str, api_ip: str, now: dt.datetime) -> None:
        ca = new_ca(f"isthmus-{cluster}-ca", now=now)
        server = issue(ca, "isthmus-apiserver", now=now, server=True,
                       dns=("localhost", "kubernetes", "kubernetes.default",
                            "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"),
                       ips=(api_ip, "127.0.0.1"))
        admin = issue(ca, "admin", orgs=("system:masters",), now=now, client=True)
        write_public(self.ca_cert, ca.cert_pem)
        write_private(self.ca_key, ca.key_pem)
        write_public(self.server_cert, server.cert_pem)
        write_private(self.server_key, server.key_pem)
        write_public(self.admin_cert, admin.cert_pem)
        write_private(self.admin_key, admin.key_pem)
        write_private(self.sa_key, new_signing_key())
