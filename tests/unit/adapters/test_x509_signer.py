"""`LeafSigner`: the issuer parsed once, CSRs read once, leaves as `sign_leaf` makes them."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from isthmus.adapters.x509 import (
    Credentials,
    LeafSigner,
    X509Error,
    issue_leaf,
    load_certificates,
    make_csr,
    new_issuer,
    new_private_key,
    new_root,
    read_csr,
    sign_leaf,
    verify_chain,
)
from isthmus.core.identity import workload_identity

T0 = datetime(2030, 1, 1, 12, 0, 0, 500_000, tzinfo=UTC)  # a fraction of a second: X.509 has none
WEB = workload_identity("web", "emojivoto")
ROOT = new_root(now=T0 - timedelta(days=1))
ISSUER = new_issuer(ROOT, now=T0 - timedelta(days=1), not_after=timedelta(days=30))


def extensions(cert: x509.Certificate) -> dict[str, tuple[bool, x509.ExtensionType]]:
    return {type(e.value).__name__: (e.critical, e.value) for e in cert.extensions}


def test_a_signed_leaf_is_the_leaf_sign_leaf_makes() -> None:
    csr = make_csr(new_private_key(), WEB)
    leaf = LeafSigner(ISSUER).sign(read_csr(csr), dns_name=WEB, now=T0)
    ours = load_certificates(leaf.cert_pem)[0]
    theirs = load_certificates(sign_leaf(ISSUER, csr, dns_name=WEB, now=T0))[0]
    assert extensions(ours) == extensions(theirs)
    assert (ours.subject, ours.issuer, ours.not_valid_before_utc, ours.not_valid_after_utc) == (
        theirs.subject, theirs.issuer, theirs.not_valid_before_utc, theirs.not_valid_after_utc)
    assert ours.not_valid_before_utc == (T0 - timedelta(seconds=20)).replace(microsecond=0)
    assert leaf.not_after == ours.not_valid_after_utc == (T0 + timedelta(hours=24)).replace(microsecond=0)
    exts = extensions(ours)
    assert exts["SubjectAlternativeName"][0] is True
    assert exts["SubjectAlternativeName"][1] == x509.SubjectAlternativeName([x509.DNSName(WEB)])
    assert exts["ExtendedKeyUsage"][1] == x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])
    assert exts["BasicConstraints"] == (True, x509.BasicConstraints(ca=False, path_length=None))
    verify_chain(leaf.cert_pem, intermediates=ISSUER.cert_pem, roots_pem=ROOT.cert_pem, now=T0, dns_name=WEB)
    verify_chain(leaf.cert_pem, intermediates=ISSUER.cert_pem, roots_pem=ROOT.cert_pem, now=T0)


def test_one_signer_signs_many_leaves_each_for_its_own_key_and_name() -> None:
    signer = LeafSigner(ISSUER)
    keys = [new_private_key() for _ in range(3)]
    names = [workload_identity(sa, "emojivoto") for sa in ("web", "voting", "emoji")]
    leaves = [signer.sign(read_csr(make_csr(k, n)), dns_name=n, now=T0 + timedelta(minutes=i))
              for i, (k, n) in enumerate(zip(keys, names, strict=True))]
    for i, (key, name, leaf) in enumerate(zip(keys, names, leaves, strict=True)):
        cert = load_certificates(leaf.cert_pem)[0]
        assert cert.public_key().public_numbers() == key.public_key().public_numbers()
        assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName) == [name]
        assert leaf.not_after == (T0 + timedelta(minutes=i, hours=24)).replace(microsecond=0)
    assert len({load_certificates(leaf.cert_pem)[0].serial_number for leaf in leaves}) == 3


def test_leaves_never_outlive_the_issuer() -> None:
    issuer_end = load_certificates(ISSUER.cert_pem)[0].not_valid_after_utc
    leaf = LeafSigner(ISSUER).sign(read_csr(make_csr(new_private_key(), WEB)), dns_name=WEB,
                                   now=issuer_end - timedelta(hours=1))
    assert leaf.not_after == issuer_end == load_certificates(leaf.cert_pem)[0].not_valid_after_utc


def test_the_issuer_is_checked_once_when_the_signer_is_made() -> None:
    leaf = issue_leaf(ISSUER, WEB, now=T0)
    with pytest.raises(X509Error, match="is not a CA certificate"):
        LeafSigner(leaf)
    with pytest.raises(X509Error, match="the issuer key does not match"):
        LeafSigner(Credentials(ISSUER.cert_pem, leaf.key_pem))
    with pytest.raises(X509Error, match="the leaf lifetime must be positive"):
        LeafSigner(ISSUER, lifetime=timedelta(0))


def test_each_signature_checks_the_issuer_is_valid_then() -> None:
    signer = LeafSigner(ISSUER)
    info = read_csr(make_csr(new_private_key(), WEB))
    issuer = load_certificates(ISSUER.cert_pem)[0]
    with pytest.raises(X509Error, match=r"the issuer certificate .* expired at"):
        signer.sign(info, dns_name=WEB, now=issuer.not_valid_after_utc + timedelta(seconds=1))
    with pytest.raises(X509Error, match=r"the issuer certificate .* is not valid before"):
        signer.sign(info, dns_name=WEB, now=issuer.not_valid_before_utc - timedelta(seconds=1))


def test_csrs_that_cannot_be_signed_are_refused() -> None:
    signer = LeafSigner(ISSUER)
    info = read_csr(make_csr(new_private_key(), WEB))
    with pytest.raises(X509Error, match="signature is not valid"):
        signer.sign(dataclasses.replace(info, signature_valid=False), dns_name=WEB, now=T0)
    p384 = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(WEB)]), critical=True)
            .sign(ec.generate_private_key(ec.SECP384R1()), hashes.SHA256())
            .public_bytes(serialization.Encoding.PEM))
    with pytest.raises(X509Error, match="has a ECDSA P-384 key; the mesh uses ECDSA P-256"):
        signer.sign(read_csr(p384), dns_name=WEB, now=T0)
    with pytest.raises(X509Error, match="invalid DNS name"):
        signer.sign(info, dns_name="not a name\u00e9", now=T0)


def test_sign_leaf_keeps_its_checks() -> None:
    csr = make_csr(new_private_key(), WEB)
    issuer_end = load_certificates(ISSUER.cert_pem)[0].not_valid_after_utc
    with pytest.raises(X509Error, match="expired at"):  # before the CSR is even read
        sign_leaf(ISSUER, b"not a csr", dns_name=WEB, now=issuer_end + timedelta(days=1))
    with pytest.raises(X509Error, match="not a PEM certificate signing request"):
        sign_leaf(ISSUER, b"not a csr", dns_name=WEB, now=T0)
    short = load_certificates(sign_leaf(ISSUER, csr, dns_name=WEB, now=T0, lifetime=timedelta(hours=1),
                                        skew=timedelta(0)))[0]
    assert short.not_valid_after_utc - short.not_valid_before_utc == timedelta(hours=1)
