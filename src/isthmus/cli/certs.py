"""``isthmus certs``: create the mesh's trust anchor and issuer, and inspect certificates.

What ``step certificate create --profile root-ca|intermediate-ca`` and
``step certificate inspect`` do in the Linkerd walkthrough:

    isthmus certs create root root.crt root.key
    isthmus certs create issuer issuer.crt issuer.key --ca root.crt --ca-key root.key
    isthmus certs inspect issuer.crt --ca root.crt

Promises: private keys are written with mode 0600 and never printed; an
existing file is never overwritten without ``--force``; on any error (bad
duration, missing or unreadable file, not a certificate, key that does not
match the CA, a CA that is not a CA, existing output) one line starting
``error: `` goes to stderr, the exit status is 1, and nothing is written.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer

from isthmus.adapters import x509 as certs
from isthmus.adapters.x509 import Credentials, X509Error
from isthmus.core.identity import ISSUER_NAME, TRUST_ANCHOR_NAME

__all__ = ["certs_app", "parse_duration"]

certs_app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                        help="The mesh's certificates: create a trust anchor and an issuer, "
                             "inspect certificates.")
create_app = typer.Typer(no_args_is_help=True, add_completion=False,
                         pretty_exceptions_enable=False,
                         help="Create a trust anchor (root) or an issuer certificate and key.")
certs_app.add_typer(create_app, name="create")

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([dhms])")
_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}


def parse_duration(text: str) -> timedelta:
    """A positive duration such as ``87600h``, ``90m``, ``30s``, ``30d`` or ``1h30m``.

    Units: d (days), h, m, s; numbers may have a fraction (``1.5h``).
    ``ValueError`` with the reason otherwise.
    """
    value = text.strip()
    pos, seconds = 0, 0.0
    for m in _DURATION_PART.finditer(value):
        if m.start() != pos:
            break
        seconds += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if not value or pos != len(value):
        raise ValueError(f"invalid duration {text!r}: use a number and a unit d, h, m or s, "
                         f"such as 87600h, 90m or 1h30m")
    if seconds <= 0:
        raise ValueError(f"invalid duration {text!r}: it must be longer than zero")
    return timedelta(seconds=seconds)


def _fail(message: object) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(1)


def _now() -> datetime:
    return datetime.now(UTC)


def _read(path: Path, hint: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise X509Error(f"{path} does not exist; {hint}") from None
    except IsADirectoryError:
        raise X509Error(f"{path} is a directory; {hint}") from None
    except OSError as e:
        raise X509Error(f"cannot read {path}: {e.strerror or e}; {hint}") from None


def _report_written(cert_path: Path, key_path: Path) -> None:
    print(f"certificate written to {cert_path}")
    print(f"private key written to {key_path} (mode 0600)")


def _write_pair(cert_path: Path, key_path: Path, creds: Credentials, *, force: bool) -> None:
    """Write the key, then the certificate; if the certificate fails, remove a key just made."""
    key_existed = key_path.exists()
    certs.write_key(key_path, creds.key_pem, force=force)
    try:
        certs.write_cert(cert_path, creds.cert_pem, force=force)
    except X509Error:
        if not key_existed:
            with contextlib.suppress(OSError):
                key_path.unlink()
        raise


def _until(creds: Credentials) -> str:
    return certs.describe(certs.load_certificates(creds.cert_pem)[0])["not_after"]


@create_app.command("root")
def create_root(
        cert: Annotated[Path, typer.Argument(metavar="ROOT.crt", show_default=False,
                                             help="where to write the certificate")],
        key: Annotated[Path, typer.Argument(metavar="ROOT.key", show_default=False,
                                            help="where to write the private key")],
        not_after: Annotated[str, typer.Option(
            "--not-after", help="lifetime, e.g. 87600h (10 years), 30d, 90m")] = "87600h",
        force: Annotated[bool, typer.Option("--force", help="overwrite existing files")] = False,
) -> None:
    """Create the trust anchor: a self-signed CA certificate (ECDSA P-256) and its key."""
    try:
        lifetime = parse_duration(not_after)
        certs.refuse_existing([cert, key], force=force)
        creds = certs.new_root(now=_now(), not_after=lifetime)
        _write_pair(cert, key, creds, force=force)
    except (ValueError, X509Error) as e:
        _fail(e)
        return
    print(f"trust anchor CN={TRUST_ANCHOR_NAME}, valid until {_until(creds)}")
    _report_written(cert, key)


@create_app.command("issuer")
def create_issuer(
        cert: Annotated[Path, typer.Argument(metavar="ISSUER.crt", show_default=False,
                                             help="where to write the certificate")],
        key: Annotated[Path, typer.Argument(metavar="ISSUER.key", show_default=False,
                                            help="where to write the private key")],
        ca: Annotated[Path, typer.Option("--ca", metavar="ROOT.crt", show_default=False,
                                         help="the trust anchor certificate")],
        ca_key: Annotated[Path, typer.Option("--ca-key", metavar="ROOT.key", show_default=False,
                                             help="the trust anchor's private key")],
        not_after: Annotated[str, typer.Option(
            "--not-after",
            help="lifetime, e.g. 8760h (1 year), 30d; never past the trust anchor's")] = "8760h",
        force: Annotated[bool, typer.Option("--force", help="overwrite existing files")] = False,
) -> None:
    """Create the identity issuer: an intermediate CA signed by the trust anchor, and its key."""
    try:
        lifetime = parse_duration(not_after)
        certs.refuse_existing([cert, key], force=force)
        ca_pem = _read(ca, "give the trust anchor certificate with --ca")
        ca_key_pem = _read(ca_key, "give the trust anchor's private key with --ca-key")
        certs.load_certificates(ca_pem, what=f"--ca {ca}")
        certs.load_private_key(ca_key_pem, what=f"--ca-key {ca_key}")
        creds = certs.new_issuer(Credentials(ca_pem, ca_key_pem), now=_now(), not_after=lifetime)
        _write_pair(cert, key, creds, force=force)
    except (ValueError, X509Error) as e:
        _fail(e)
        return
    print(f"issuer CN={ISSUER_NAME}, signed by {ca}, valid until {_until(creds)}")
    _report_written(cert, key)


def _chain_check(bundle: bytes, leaf_is_ca: bool, roots: bytes) -> str | None:
    """None if the bundle's first certificate chains to the roots, else the reason."""
    try:
        if leaf_is_ca:
            certs.verify_ca_chain(bundle, roots_pem=roots, now=_now())
        else:
            certs.verify_chain(bundle, intermediates=[], roots_pem=roots, now=_now())
    except X509Error as e:
        return str(e)
    return None


def _text(file: Path, descriptions: list[certs.CertificateDescription]) -> list[str]:
    lines: list[str] = []
    for n, d in enumerate(descriptions, 1):
        if len(descriptions) > 1:
            lines.append(f"{file}: certificate {n} of {len(descriptions)}")
        if d["is_ca"]:
            ca = "yes" + ("" if d["path_length"] is None else f" (path length {d['path_length']})")
        else:
            ca = "no"
        lines += [
            f"subject:     {d['subject'] or '(empty)'}",
            f"issuer:      {d['issuer'] or '(empty)'}",
            f"SANs:        {', '.join(d['sans']) or '(none)'}",
            f"serial:      {d['serial']}",
            f"not before:  {d['not_before']}",
            f"not after:   {d['not_after']}",
            f"key:         {d['key_type']}",
            f"SHA-256:     {d['fingerprint_sha256']}",
            f"CA:          {ca}",
        ]
        if n < len(descriptions):
            lines.append("")
    return lines


@certs_app.command("inspect")
def inspect(
        file: Annotated[Path, typer.Argument(metavar="FILE", show_default=False,
                                             help="a PEM certificate or bundle")],
        ca: Annotated[Path | None, typer.Option(
            "--ca", metavar="BUNDLE.crt", show_default=False,
            help="also check that the (first) certificate chains to this trust anchor bundle",
        )] = None,
        output: Annotated[str, typer.Option("-o", "--output", help="text or json")] = "text",
) -> None:
    """Describe the certificates of FILE; with --ca, say whether the first chains to the anchor.

    The answer "chains to the trust anchor: no (reason)" is a result, not an
    error: the exit status is 0 whenever FILE could be read.
    """
    try:
        if output not in ("text", "json"):
            raise X509Error(f"unknown output format {output!r}; use -o text or -o json")
        pem = _read(file, "give a PEM certificate file")
        cert_list = certs.load_certificates(pem, what=str(file))
        roots = None if ca is None else _read(ca, "give the trust anchor bundle with --ca")
        if roots is not None:
            certs.load_certificates(roots, what=f"--ca {ca}")
    except X509Error as e:
        _fail(e)
        return
    descriptions = [certs.describe(c) for c in cert_list]
    reason = None if roots is None else _chain_check(pem, descriptions[0]["is_ca"], roots)
    if output == "json":
        doc: dict[str, object] = {"file": str(file), "certificates": descriptions}
        if roots is not None:
            doc["chainsToTrustAnchor"] = {"ok": reason is None, "reason": reason}
        print(json.dumps(doc, indent=2))
        return
    for line in _text(file, descriptions):
        print(line)
    if roots is not None:
        print("chains to the trust anchor: " + ("yes" if reason is None else f"no ({reason})"))
