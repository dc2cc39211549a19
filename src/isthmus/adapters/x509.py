"""The mesh's certificates: trust anchor, issuer, workload leaves, CSRs, and checking chains.

Everything here follows the contracts of the mesh (see ``isthmus.core.identity``):
ECDSA P-256 keys, PEM encoding, SHA-256 signatures, a trust anchor and an
issuer shaped like the ones ``step certificate create --profile root-ca`` /
``--profile intermediate-ca`` make, and leaves whose only name is one DNS
subject alternative name (the workload identity). X.509 work is done with the
``cryptography`` library.

Promises:

* every failure caused by the input (not a certificate, key does not match,
  not a CA, expired, does not chain, file exists) is an `X509Error` whose
  message says what was wrong and, where there is one, what to do;
* certificates made here verify with OpenSSL (``openssl verify``, TLS 1.3 in
  ``openssl s_server``/``s_client``), Python's ``ssl`` and ``cryptography``'s
  RFC 5280 verifier;
* every certificate is backdated by the clock-skew allowance and never
  outlives the certificate that signed it;
* ``now`` is always passed in (this module reads no clock); pass an aware UTC
  datetime (a naive one is taken as UTC);
* private keys are written with mode 0600 and never logged; no file is
  overwritten unless the caller says ``force``; a write either completes or
  leaves the target as it was.

Leaf subjects are empty, so the SAN extension is marked critical (RFC 5280,
4.2.1.6). A common name equal to the identity would be an alternative, but
X.509 limits common names to 64 characters and workload identities can be
longer; every verifier used in the mesh matches names against the SAN only.
"""

from __future__ import annotations

import binascii
import contextlib
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypedDict

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPublicKeyTypes,
    PrivateKeyTypes,
    PublicKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import (
    DNSName,
    PolicyBuilder,
    Store,
    VerificationError,
)

from isthmus.core.identity import CLOCK_SKEW, ISSUER_NAME, LEAF_LIFETIME, TRUST_ANCHOR_NAME

__all__ = [
    "CSRInfo",
    "CertificateDescription",
    "Credentials",
    "LeafSigner",
    "SignedLeaf",
    "X509Error",
    "cert_pem",
    "check_ca",
    "describe",
    "issue_leaf",
    "key_type",
    "load_certificates",
    "load_credentials",
    "load_private_key",
    "make_csr",
    "new_issuer",
    "new_private_key",
    "new_root",
    "private_key_pem",
    "read_csr",
    "refuse_existing",
    "sign_leaf",
    "verify_ca_chain",
    "verify_chain",
    "write_cert",
    "write_key",
]

_CURVE = ec.SECP256R1


class X509Error(ValueError):
    """A certificate, key, CSR or file that cannot be used, with the reason."""


@dataclass(frozen=True)
class Credentials:
    """A certificate and its private key, both PEM; the key is unencrypted PKCS#8.

    ``cert_pem`` starts with the key's own certificate; what the tooling writes holds
    just that one, while a workload's credentials carry their chain after it.
    """

    cert_pem: bytes
    key_pem: bytes

    def __repr__(self) -> str:
        return f"Credentials(cert_pem=<{len(self.cert_pem)} bytes>, key_pem=<redacted>)"


@dataclass(frozen=True)
class CSRInfo:
    """What a certificate signing request asks for.

    ``other_sans`` describes every subject alternative name that is not a DNS
    name (``IP:…``, ``URI:…``, ``email:…``, ``DirName:…``, ``otherName:…``,
    ``RID:…``); ``common_name`` is the subject's CN (several are joined with
    ``", "``), None when there is none. ``key_type`` is as in `key_type`.
    """

    dns_names: list[str]
    other_sans: list[str]
    common_name: str | None
    public_key: PublicKeyTypes
    signature_valid: bool
    key_type: str


class CertificateDescription(TypedDict):
    """`describe`'s answer; JSON-ready (times are ISO 8601 UTC)."""

    subject: str
    issuer: str
    sans: list[str]
    serial: str
    not_before: str
    not_after: str
    key_type: str
    fingerprint_sha256: str
    is_ca: bool
    path_length: int | None


# --- keys -------------------------------------------------------------------------------------


def new_private_key() -> ec.EllipticCurvePrivateKey:
    """A fresh ECDSA P-256 private key."""
    return ec.generate_private_key(_CURVE())


def private_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """``key`` as unencrypted PKCS#8 PEM."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def load_private_key(pem: bytes, *, what: str = "the key") -> ec.EllipticCurvePrivateKey:
    """An unencrypted ECDSA P-256 private key from PEM (PKCS#8 or SEC 1)."""
    if b"-----BEGIN CERTIFICATE-----" in pem and b"PRIVATE KEY-----" not in pem:
        raise X509Error(f"{what} is a certificate, not a private key")
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except TypeError as e:
        raise X509Error(f"{what} is encrypted; give an unencrypted private key") from e
    except (ValueError, UnsupportedAlgorithm) as e:
        raise X509Error(f"{what} is not a PEM private key") from e
    return _require_p256_private(key, what)


def _require_p256_private(key: PrivateKeyTypes, what: str) -> ec.EllipticCurvePrivateKey:
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, _CURVE):
        raise X509Error(f"{what} is {key_type(key.public_key())}; the mesh uses ECDSA P-256 keys")
    return key


def key_type(key: PublicKeyTypes) -> str:
    """A short description of a public key: ``ECDSA P-256``, ``RSA 2048``, ``Ed25519``, ..."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        curves = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
        return f"ECDSA {curves.get(key.curve.name, key.curve.name)}"
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size}"
    if isinstance(key, dsa.DSAPublicKey):
        return f"DSA {key.key_size}"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448"
    return type(key).__name__


def _same_public_key(a: PublicKeyTypes, b: PublicKeyTypes) -> bool:
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    return a.public_bytes(serialization.Encoding.DER, fmt) == b.public_bytes(
        serialization.Encoding.DER, fmt)


# --- certificates -----------------------------------------------------------------------------


def load_certificates(pem: bytes, *, what: str = "the input") -> list[x509.Certificate]:
    """Every certificate of a PEM bundle, in order; `X509Error` if there is none or one is bad."""
    if b"-----BEGIN CERTIFICATE-----" not in pem:
        if b"PRIVATE KEY-----" in pem:
            raise X509Error(f"{what} is a private key, not a certificate")
        if b"CERTIFICATE REQUEST-----" in pem:
            raise X509Error(f"{what} is a certificate signing request, not a certificate")
        raise X509Error(f"{what} holds no PEM certificate (no '-----BEGIN CERTIFICATE-----' line)")
    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError as e:
        raise X509Error(f"{what} holds a PEM certificate that cannot be parsed ({e})") from e


def cert_pem(cert: x509.Certificate) -> bytes:
    """``cert`` as PEM."""
    return cert.public_bytes(serialization.Encoding.PEM)


def load_credentials(cert: bytes, key: bytes, *, what: str = "the CA") -> tuple[
        x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The first certificate of ``cert`` and the private key ``key``, checked to belong together."""
    certificate = load_certificates(cert, what=f"{what} certificate")[0]
    private = load_private_key(key, what=f"{what} key")
    if not _same_public_key(certificate.public_key(), private.public_key()):
        raise X509Error(f"{what} key does not match {what} certificate "
                        f"({_subject(certificate)}); give the key that was created with it")
    return certificate, private


def check_ca(cert: x509.Certificate, *, now: datetime, what: str = "the CA") -> None:
    """`X509Error` unless ``cert`` may sign certificates at ``now``.

    That is: BasicConstraints with CA true, a KeyUsage (if any) allowing
    certificate signing, and ``now`` within its validity period.
    """
    _check_ca_constraints(cert, what=what)
    _check_validity(cert, now=_utc(now), what=f"{what} certificate")


def _check_ca_constraints(cert: x509.Certificate, *, what: str) -> None:
    """`check_ca` without the validity period: the certificate's extensions let it sign certificates."""
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        bc = None
    if bc is None or not bc.ca:
        raise X509Error(f"{what} certificate ({_subject(cert)}) is not a CA certificate "
                        f"(BasicConstraints CA is not true); give a trust anchor or issuer "
                        f"certificate")
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        ku = None
    if ku is not None and not ku.key_cert_sign:
        raise X509Error(f"{what} certificate ({_subject(cert)}) may not sign certificates "
                        f"(its KeyUsage lacks keyCertSign)")


def _check_validity(cert: x509.Certificate, *, now: datetime, what: str) -> None:
    if now > cert.not_valid_after_utc:
        raise X509Error(f"{what} ({_subject(cert)}) expired at {_iso(cert.not_valid_after_utc)}")
    if now < cert.not_valid_before_utc:
        raise X509Error(f"{what} ({_subject(cert)}) is not valid before "
                        f"{_iso(cert.not_valid_before_utc)}")


def _ca_name(common_name: str) -> x509.Name:
    try:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    except ValueError as e:
        raise X509Error(f"invalid common name {common_name!r}: {e}") from e


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                         crl_sign=True, encipher_only=False, decipher_only=False)


def _aki(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(
            _issuer_public_key(issuer))


def _issuer_public_key(cert: x509.Certificate) -> CertificateIssuerPublicKeyTypes:
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise X509Error(f"certificate ({_subject(cert)}) has a {key_type(key)} key; "
                        f"the mesh uses ECDSA P-256 keys")
    return key


def new_root(*, now: datetime, not_after: timedelta = timedelta(hours=87600),
             common_name: str = TRUST_ANCHOR_NAME) -> Credentials:
    """A self-signed trust anchor valid from ``now`` (less the skew allowance) for ``not_after``.

    Shaped like ``step certificate create --profile root-ca``: BasicConstraints
    CA with path length 1 (room for the issuer below it), critical; KeyUsage
    keyCertSign and cRLSign, critical; a SubjectKeyIdentifier.
    """
    _positive(not_after, "the trust anchor's lifetime")
    now = _utc(now)
    key = new_private_key()
    name = _ca_name(common_name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Credentials(cert_pem(cert), private_key_pem(key))


def new_issuer(root: Credentials, *, now: datetime, not_after: timedelta = timedelta(hours=8760),
               common_name: str = ISSUER_NAME) -> Credentials:
    """An intermediate CA signed by ``root``, the identity service's issuer.

    Shaped like ``step certificate create --profile intermediate-ca``:
    BasicConstraints CA with path length 0, critical; KeyUsage keyCertSign and
    cRLSign, critical; SubjectKeyIdentifier and AuthorityKeyIdentifier. Its
    validity ends at ``now + not_after`` or when ``root``'s does, whichever is
    first. `X509Error` if ``root``'s key does not match its certificate, or it
    is not a CA valid at ``now``.
    """
    _positive(not_after, "the issuer's lifetime")
    now = _utc(now)
    root_cert, root_key = load_credentials(root.cert_pem, root.key_pem, what="the trust anchor")
    check_ca(root_cert, now=now, what="the trust anchor")
    key = new_private_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_ca_name(common_name)).issuer_name(root_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(max(now - CLOCK_SKEW, root_cert.not_valid_before_utc))
        .not_valid_after(min(now + not_after, root_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(_aki(root_cert), critical=False)
        .sign(root_key, hashes.SHA256())
    )
    return Credentials(cert_pem(cert), private_key_pem(key))


def _positive(duration: timedelta, what: str) -> None:
    if duration <= timedelta(0):
        raise X509Error(f"{what} must be positive, got {duration}")


# --- CSRs and leaves --------------------------------------------------------------------------


def make_csr(key: ec.EllipticCurvePrivateKey, dns_name: str) -> bytes:
    """A PEM CSR signed by ``key`` with an empty subject and the single DNS SAN ``dns_name``."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(dns_name)]), critical=True)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def _describe_san(name: x509.GeneralName) -> str:
    if isinstance(name, x509.DNSName):
        return f"DNS:{name.value}"
    if isinstance(name, x509.IPAddress):
        return f"IP:{name.value}"
    if isinstance(name, x509.UniformResourceIdentifier):
        return f"URI:{name.value}"
    if isinstance(name, x509.RFC822Name):
        return f"email:{name.value}"
    if isinstance(name, x509.DirectoryName):
        return f"DirName:{name.value.rfc4514_string()}"
    if isinstance(name, x509.RegisteredID):
        return f"RID:{name.value.dotted_string}"
    if isinstance(name, x509.OtherName):
        return f"otherName:{name.type_id.dotted_string}"
    return f"{type(name).__name__}"


def read_csr(pem: bytes) -> CSRInfo:
    """The names, key and signature validity of a PEM CSR; `X509Error` if it is not one."""
    if b"CERTIFICATE REQUEST-----" not in pem:
        raise X509Error("the input is not a PEM certificate signing request (no "
                        "'-----BEGIN CERTIFICATE REQUEST-----' line)")
    try:
        csr = x509.load_pem_x509_csr(pem)
        sans: list[x509.GeneralName] = []
        for ext in csr.extensions:
            if isinstance(ext.value, x509.SubjectAlternativeName):
                sans.extend(ext.value)
        cns = [a.value for a in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        public_key = csr.public_key()
        signature_valid = csr.is_signature_valid
    except (ValueError, UnsupportedAlgorithm) as e:
        raise X509Error(f"the certificate signing request cannot be parsed ({e})") from e
    return CSRInfo(
        dns_names=[n.value for n in sans if isinstance(n, x509.DNSName)],
        other_sans=[_describe_san(n) for n in sans if not isinstance(n, x509.DNSName)],
        common_name=", ".join(str(cn) for cn in cns) if cns else None,
        public_key=public_key,
        signature_valid=signature_valid,
        key_type=key_type(public_key),
    )


_LEAF_KEY_USAGE = x509.KeyUsage(
    digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
    key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False)
_LEAF_BASIC_CONSTRAINTS = x509.BasicConstraints(ca=False, path_length=None)
_LEAF_EXTENDED_KEY_USAGE = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH])


@dataclass(frozen=True)
class SignedLeaf:
    """A leaf `LeafSigner.sign` made: the PEM certificate and the end of its validity."""

    cert_pem: bytes
    not_after: datetime


class LeafSigner:
    """Signs workload leaves with one issuer, parsed and checked once rather than per leaf.

    The issuer's certificate and key are loaded, matched and checked to be a
    CA when the signer is made (`X509Error` otherwise); each `sign` only checks
    that the issuer is valid at ``now``. `sign` takes a CSR already read by
    `read_csr`, so a caller that checks the CSR's names before signing parses
    it and verifies its signature once. The leaves are the ones `sign_leaf`
    describes.
    """

    def __init__(self, issuer: Credentials, *, lifetime: timedelta = LEAF_LIFETIME,
                 skew: timedelta = CLOCK_SKEW) -> None:
        _positive(lifetime, "the leaf lifetime")
        cert, key = load_credentials(issuer.cert_pem, issuer.key_pem, what="the issuer")
        _check_ca_constraints(cert, what="the issuer")
        self.certificate = cert
        self._key = key
        self._aki = _aki(cert)
        self._lifetime = lifetime
        self._skew = skew

    def __repr__(self) -> str:
        return f"<LeafSigner issuer={_subject(self.certificate)}>"

    def sign(self, csr: CSRInfo, *, dns_name: str, now: datetime) -> SignedLeaf:
        """A leaf for the CSR's key whose only name is ``dns_name``.

        `X509Error` if the CSR's signature is not valid, its key is not ECDSA
        P-256, ``dns_name`` is not a DNS name, or the issuer is not valid at ``now``.
        """
        now = _utc(now)
        issuer = self.certificate
        _check_validity(issuer, now=now, what="the issuer certificate")
        if not csr.signature_valid:
            raise X509Error("the certificate signing request's signature is not valid")
        public_key = csr.public_key
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
                public_key.curve, _CURVE):
            raise X509Error(f"the certificate signing request has a {csr.key_type} key; "
                            f"the mesh uses ECDSA P-256 keys")
        try:
            san = x509.SubjectAlternativeName([x509.DNSName(dns_name)])
        except ValueError as e:
            raise X509Error(f"invalid DNS name {dns_name!r}: {e}") from e
        not_before = max(now - self._skew, issuer.not_valid_before_utc)
        not_after = min(now + self._lifetime, issuer.not_valid_after_utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([])).issuer_name(issuer.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(_LEAF_BASIC_CONSTRAINTS, critical=True)
            .add_extension(_LEAF_KEY_USAGE, critical=True)
            .add_extension(_LEAF_EXTENDED_KEY_USAGE, critical=False)
            .add_extension(san, critical=True)
            .add_extension(self._aki, critical=False)
            .sign(self._key, hashes.SHA256())
        )
        # X.509 times have whole seconds: what the certificate says, not the datetime asked for.
        return SignedLeaf(cert_pem(cert), not_after.replace(microsecond=0))


def sign_leaf(issuer: Credentials, csr_pem: bytes, *, dns_name: str, now: datetime,
              lifetime: timedelta = LEAF_LIFETIME, skew: timedelta = CLOCK_SKEW) -> bytes:
    """A PEM leaf certificate for the CSR's key whose only name is ``dns_name``.

    The CSR's own names are not copied: the caller decides (with
    ``isthmus.core.identity.check_csr_names``) that the requester may have
    ``dns_name``, and that is the one name the certificate carries. The
    certificate has an empty subject, a critical SAN with the one DNS name,
    validity from ``now - skew`` to ``min(now + lifetime, issuer's not_after)``,
    KeyUsage digitalSignature (critical), ExtendedKeyUsage serverAuth and
    clientAuth, BasicConstraints CA false (critical), and an
    AuthorityKeyIdentifier matching the issuer.

    `X509Error` if the CSR cannot be parsed, its signature is not valid, its
    key is not ECDSA P-256, or ``issuer`` is not a CA valid at ``now`` whose
    key matches its certificate. For many leaves from one issuer, use a `LeafSigner`.
    """
    signer = LeafSigner(issuer, lifetime=lifetime, skew=skew)
    _check_validity(signer.certificate, now=_utc(now), what="the issuer certificate")
    return signer.sign(read_csr(csr_pem), dns_name=dns_name, now=now).cert_pem


def issue_leaf(issuer: Credentials, dns_name: str, *, now: datetime,
               lifetime: timedelta = LEAF_LIFETIME) -> Credentials:
    """A new key and a leaf for it from ``issuer`` (`make_csr` then `sign_leaf`).

    ``cert_pem`` is the leaf only; append ``issuer.cert_pem`` to present the chain.
    """
    key = new_private_key()
    cert = sign_leaf(issuer, make_csr(key, dns_name), dns_name=dns_name, now=now, lifetime=lifetime)
    return Credentials(cert, private_key_pem(key))


# --- verification -----------------------------------------------------------------------------


def _naive_utc(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(tzinfo=None) if t.tzinfo else t


def _utc(t: datetime) -> datetime:
    """``t`` as an aware UTC datetime; a naive ``t`` is taken to be UTC already."""
    return t.astimezone(UTC) if t.tzinfo else t.replace(tzinfo=UTC)


def verify_chain(leaf_pem: bytes, *, intermediates: list[bytes] | bytes, roots_pem: bytes,
                 now: datetime, dns_name: str | None = None) -> None:
    """`X509Error` with the reason unless the leaf chains to one of the roots at ``now``.

    Uses ``cryptography``'s RFC 5280 path builder (``cryptography.x509.verification``):
    with ``dns_name`` the leaf is checked as a TLS server certificate for that
    name (``ServerVerifier``), otherwise as a TLS client certificate
    (``ClientVerifier``, which requires a SAN). Signatures, validity periods,
    BasicConstraints, path lengths, key usages and extended key usages are all
    checked. ``intermediates`` is a list of PEM bundles, or one bundle (usually just the issuer);
    ``leaf_pem``'s first certificate is the leaf and any after it are taken as
    intermediates too. Blank bundles are skipped.
    """
    now = _utc(now)
    leaf_and_more = load_certificates(leaf_pem, what="the leaf")
    leaf, untrusted = leaf_and_more[0], leaf_and_more[1:]
    for bundle in [intermediates] if isinstance(intermediates, bytes) else intermediates:
        if bundle.strip():
            untrusted += load_certificates(bundle, what="the intermediate bundle")
    roots = load_certificates(roots_pem, what="the trust anchor bundle")
    builder = PolicyBuilder().store(Store(roots)).time(_naive_utc(now))
    try:
        if dns_name is None:
            builder.build_client_verifier().verify(leaf, untrusted)
        else:
            builder.build_server_verifier(DNSName(dns_name)).verify(leaf, untrusted)
    except VerificationError as e:
        detail = re.sub(r"\s*\(encountered processing .*\)\s*$", "", str(e))
        raise X509Error(_explain(leaf, untrusted, roots, now=now, dns_name=dns_name, detail=detail)
                        ) from e
    except ValueError as e:
        raise X509Error(f"cannot verify {_subject(leaf)}: {e}") from e


def _explain(leaf: x509.Certificate, untrusted: list[x509.Certificate],
             roots: list[x509.Certificate], *, now: datetime, dns_name: str | None,
             detail: str) -> str:
    """A plain reason for a failed verification; the verifier's own words in parentheses."""
    who = _subject(leaf)
    if now > leaf.not_valid_after_utc:
        return f"{who} expired at {_iso(leaf.not_valid_after_utc)} ({detail})"
    if now < leaf.not_valid_before_utc:
        return f"{who} is not valid before {_iso(leaf.not_valid_before_utc)} ({detail})"
    if dns_name is not None and dns_name not in _dns_names(leaf):
        names = ", ".join(_dns_names(leaf)) or "none"
        return f"{who} is not valid for {dns_name} (its DNS names: {names}) ({detail})"
    for cert in untrusted:
        if now > cert.not_valid_after_utc:
            return f"intermediate {_subject(cert)} expired at {_iso(cert.not_valid_after_utc)} ({detail})"
    if not _reaches_anchor(leaf, untrusted, roots):
        anchors = "; ".join(_subject(r) for r in roots)
        return (f"{who} does not chain to the trust anchor ({anchors}): no signature path "
                f"from it to an anchor ({detail})")
    return f"{who} is not trusted: {detail}"


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _reaches_anchor(cert: x509.Certificate, untrusted: list[x509.Certificate],
                    roots: list[x509.Certificate], depth: int = 0) -> bool:
    if depth > 8:
        return False
    if any(_signed_by(cert, r) for r in roots):
        return True
    return any(_signed_by(cert, u) and _reaches_anchor(u, untrusted, roots, depth + 1)
               for u in untrusted if u != cert)


def verify_ca_chain(ca_pem: bytes, *, roots_pem: bytes, now: datetime) -> None:
    """`X509Error` unless the CA certificate ``ca_pem`` is, or is directly signed by, a root.

    For checking an issuer against the trust anchor (the RFC 5280 verifier of
    `verify_chain` only accepts end-entity certificates as leaves). Checks:
    ``ca_pem``'s first certificate is a CA valid at ``now``; it is one of the
    roots, or a root valid at ``now`` that is a CA allowing a CA below it
    (path length absent or at least 1) signed it.
    """
    now = _utc(now)
    cert = load_certificates(ca_pem, what="the CA certificate")[0]
    roots = load_certificates(roots_pem, what="the trust anchor bundle")
    check_ca(cert, now=now, what="the CA")
    if cert in roots:
        return
    anchors = "; ".join(_subject(r) for r in roots)
    signers = [r for r in roots if r.subject == cert.issuer and _signed_by(cert, r)]
    if not signers:
        raise X509Error(f"{_subject(cert)} (issued by {cert.issuer.rfc4514_string() or '-'}) "
                        f"is not signed by the trust anchor ({anchors})")
    problems: list[str] = []
    for root in signers:
        try:
            check_ca(root, now=now, what="the trust anchor")
        except X509Error as e:
            problems.append(str(e))
            continue
        path_length = _basic_constraints(root)[1]
        if path_length is not None and path_length < 1:
            problems.append(f"the trust anchor ({_subject(root)}) has path length 0, so it "
                            f"may not have a CA below it")
            continue
        return
    raise X509Error("; ".join(problems))


# --- description ------------------------------------------------------------------------------


def _subject(cert: x509.Certificate) -> str:
    subject = cert.subject.rfc4514_string()
    if subject:
        return subject
    names = _dns_names(cert)
    return f"certificate for {names[0]}" if names else "certificate with an empty subject"


def _dns_names(cert: x509.Certificate) -> list[str]:
    return [n.value for n in _sans(cert) if isinstance(n, x509.DNSName)]


def _sans(cert: x509.Certificate) -> list[x509.GeneralName]:
    try:
        return list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        return []


def _basic_constraints(cert: x509.Certificate) -> tuple[bool, int | None]:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False, None
    return bc.ca, bc.path_length


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def describe(cert: x509.Certificate) -> CertificateDescription:
    """The facts about ``cert`` an operator looks at, JSON-ready.

    Subject and issuer are RFC 4514 strings (empty for an empty subject); SANs
    are ``DNS:…``, ``IP:…``, ``URI:…`` ...; the fingerprint is the SHA-256 of
    the DER encoding, as upper-case colon-separated hex (as ``openssl x509
    -fingerprint -sha256`` prints it).
    """
    is_ca, path_length = _basic_constraints(cert)
    digest = binascii.hexlify(cert.fingerprint(hashes.SHA256())).decode().upper()
    return CertificateDescription(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        sans=[_describe_san(n) for n in _sans(cert)],
        serial=f"{cert.serial_number:x}",
        not_before=_iso(cert.not_valid_before_utc),
        not_after=_iso(cert.not_valid_after_utc),
        key_type=key_type(cert.public_key()),
        fingerprint_sha256=":".join(digest[i:i + 2] for i in range(0, len(digest), 2)),
        is_ca=is_ca,
        path_length=path_length,
    )


# --- files ------------------------------------------------------------------------------------


def refuse_existing(paths: list[Path], *, force: bool) -> None:
    """`X509Error` naming the first of ``paths`` that exists, unless ``force``.

    For commands that write several files: call it before writing any.
    Also refuses the same path given twice.
    """
    seen: set[Path] = set()
    for path in paths:
        resolved = path.resolve()
        if resolved in seen:
            raise X509Error(f"{path} is given twice; the certificate and the key need their "
                            f"own files")
        seen.add(resolved)
        if path.is_dir():
            raise X509Error(f"{path} is a directory; give a file name")
        if path.exists() and not force:
            raise X509Error(f"{path} already exists; pass --force to overwrite it")


def write_key(path: Path, pem: bytes, *, force: bool) -> None:
    """Write a private key readable by its owner only (mode 0600).

    `X509Error` if ``path`` exists and not ``force`` (the file is then left
    alone). The file is written beside the target and renamed into place, so
    the target is either the old file or the complete new one.
    """
    _write(path, pem, mode=0o600, force=force)


def write_cert(path: Path, pem: bytes, *, force: bool) -> None:
    """Write a certificate (mode 0644), with the same overwrite rule as `write_key`."""
    _write(path, pem, mode=0o644, force=force)


def _write(path: Path, data: bytes, *, mode: int, force: bool) -> None:
    import tempfile  # here: the sidecar proxy imports this module but writes no files (RSS)

    refuse_existing([path], force=force)
    directory = path.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise X509Error(f"cannot write {path}: {e.strerror or e}") from e
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if force:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails if the target appeared meanwhile: never clobber
            except FileExistsError as e:
                raise X509Error(f"{path} already exists; pass --force to overwrite it") from e
    except OSError as e:
        raise X509Error(f"cannot write {path}: {e.strerror or e}") from e
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
