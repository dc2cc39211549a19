"""A test trust anchor (and a second, unrelated one) and workload certificates from it.

Made once per test process, backdated five minutes so a clock a little behind
still finds them valid. `creds(identity)` is a leaf with its chain, as the
identity service hands them out.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from isthmus.adapters.x509 import Credentials, issue_leaf, new_issuer, new_root

NOW = datetime.now(UTC) - timedelta(minutes=5)
ROOT = new_root(now=NOW)
ISSUER = new_issuer(ROOT, now=NOW)
OTHER_ROOT = new_root(now=NOW)
OTHER_ISSUER = new_issuer(OTHER_ROOT, now=NOW)


def creds(identity: str, issuer: Credentials = ISSUER) -> Credentials:
    """A leaf for `identity` from `issuer`, with the issuer after it."""
    leaf = issue_leaf(issuer, identity, now=NOW)
    return Credentials(cert_pem=leaf.cert_pem + issuer.cert_pem, key_pem=leaf.key_pem)
