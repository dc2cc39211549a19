"""Workload identity rules of the mesh: names, what a CSR may ask for, and when to renew.

Every meshed workload proves who it is with a leaf certificate whose only name
is its workload identity,
``<serviceaccount>.<namespace>.serviceaccount.identity.isthmus.<trust-domain>``,
issued by the identity service's issuer certificate, which chains to the shared
trust anchor. This module holds the decisions around that, with no X.509
parsing (see ``isthmus.adapters.x509``) and no I/O:

* the contract constants (names, lifetimes, clock-skew allowance, renewal point);
* building and parsing workload identity names;
* whether the names in a certificate signing request are exactly the one the
  requester is entitled to;
* how long to wait before renewing a certificate, and before retrying a failed
  request.

Promises: pure functions of their arguments (callers pass ``now`` and the
jitter); time arguments are compared as given, so pass timezone-aware UTC
datetimes throughout (as ``cryptography``'s ``not_valid_*_utc`` are); refusal
reasons are full sentences naming what was found and what was expected.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from isthmus.core.names import validate_dns1123_label, validate_dns1123_subdomain

__all__ = [
    "CLOCK_SKEW",
    "DEFAULT_TRUST_DOMAIN",
    "ISSUER_NAME",
    "LEAF_LIFETIME",
    "MAX_RENEWAL_DELAY",
    "MIN_RENEWAL_DELAY",
    "RENEW_FRACTION",
    "TRUST_ANCHOR_NAME",
    "check_csr_names",
    "parse_workload_identity",
    "renewal_delay",
    "renewal_time",
    "retry_delay",
    "workload_identity",
]

DEFAULT_TRUST_DOMAIN = "cluster.local"
TRUST_ANCHOR_NAME = "root.isthmus.cluster.local"
ISSUER_NAME = "identity.isthmus.cluster.local"
LEAF_LIFETIME = timedelta(hours=24)
CLOCK_SKEW = timedelta(seconds=20)
RENEW_FRACTION = 0.7
MIN_RENEWAL_DELAY = 10.0
MAX_RENEWAL_DELAY = 24 * 3600.0

_MARKER = ".serviceaccount.identity.isthmus."


def workload_identity(service_account: str, namespace: str,
                      trust_domain: str = DEFAULT_TRUST_DOMAIN) -> str:
    """The identity name of pods running as ``service_account`` in ``namespace``.

    Raises ``ValueError`` (with the reason) unless the service account is a
    Kubernetes service-account name (an RFC 1123 subdomain), the namespace a
    namespace name (an RFC 1123 label), the trust domain an RFC 1123 subdomain,
    and the whole name a valid DNS name; and unless the name can be parsed back
    unambiguously by `parse_workload_identity`.
    """
    for what, value, problems in (
        ("service account", service_account, validate_dns1123_subdomain(service_account)),
        ("namespace", namespace, validate_dns1123_label(namespace)),
        ("trust domain", trust_domain, validate_dns1123_subdomain(trust_domain)),
    ):
        if problems:
            raise ValueError(f"invalid {what} {value!r}: {'; '.join(problems)}")
    if _MARKER in f".{service_account}.{namespace}.":
        raise ValueError(
            f"service account {service_account!r} in namespace {namespace!r} would make an "
            f"ambiguous identity name: the labels 'serviceaccount.identity.isthmus' may only "
            f"appear once, between the namespace and the trust domain")
    name = f"{service_account}.{namespace}{_MARKER}{trust_domain}"
    problems = validate_dns1123_subdomain(name)
    if problems:
        raise ValueError(f"identity name {name!r} is not a valid DNS name: {'; '.join(problems)}")
    return name


def parse_workload_identity(name: str) -> tuple[str, str, str] | None:
    """``(service_account, namespace, trust_domain)`` of a workload identity name.

    None if ``name`` is not one. The name is split at the first
    ``.serviceaccount.identity.isthmus.``; the namespace is the last label
    before it and the service account everything before that (service-account
    names may contain dots, namespace names may not). Exactly the names
    `workload_identity` produces are accepted.
    """
    prefix, marker, trust_domain = name.partition(_MARKER)
    if not marker:
        return None
    service_account, dot, namespace = prefix.rpartition(".")
    if not dot:
        return None
    try:
        if workload_identity(service_account, namespace, trust_domain) != name:
            return None
    except ValueError:
        return None
    return service_account, namespace, trust_domain


def check_csr_names(*, dns_names: list[str], other_sans: list[str], common_name: str | None,
                    expected: str) -> str | None:
    """Why a CSR with these names must not be signed for ``expected``; None if it may.

    Acceptable: exactly one DNS subject alternative name, equal to ``expected``
    (compared exactly, as the certificate will carry it); no subject alternative
    name of any other type (``other_sans`` holds descriptions such as
    ``IP:10.0.0.1`` or ``URI:spiffe://...``); a subject common name that is
    absent, empty, or equal to ``expected``.
    """
    if other_sans:
        return (f"The CSR has subject alternative names other than DNS names "
                f"({', '.join(other_sans)}); it must carry only the DNS name {expected}.")
    if not dns_names:
        return f"The CSR has no DNS subject alternative name; it must carry exactly one, {expected}."
    if len(dns_names) > 1:
        return (f"The CSR has {len(dns_names)} DNS subject alternative names "
                f"({', '.join(dns_names)}); it must carry exactly one, {expected}.")
    if dns_names[0] != expected:
        return (f"The CSR asks for the DNS name {dns_names[0]}, but the requester's identity "
                f"is {expected}.")
    if common_name and common_name != expected:
        return (f"The CSR's subject common name is {common_name}; it must be empty or "
                f"{expected}.")
    return None


def renewal_time(not_before: datetime, not_after: datetime) -> datetime:
    """The moment a certificate valid from ``not_before`` to ``not_after`` is due for renewal.

    That is `RENEW_FRACTION` (70%) of the way through its validity period.
    """
    return not_before + (not_after - not_before) * RENEW_FRACTION


def renewal_delay(not_before: datetime, not_after: datetime, now: datetime) -> float:
    """Seconds to wait, from ``now``, before renewing a certificate.

    0 if the renewal time (`renewal_time`) has already come; otherwise the time
    until then, bounded to [`MIN_RENEWAL_DELAY` (10 s), `MAX_RENEWAL_DELAY`
    (24 h)] so that very short certificates do not make a busy loop and very
    long ones are looked at again at least daily.
    """
    delay = (renewal_time(not_before, not_after) - now).total_seconds()
    if delay <= 0:
        return 0.0
    return min(max(delay, MIN_RENEWAL_DELAY), MAX_RENEWAL_DELAY)


def retry_delay(attempt: int, *, base: float = 1.0, cap: float = 60.0, jitter: float) -> float:
    """Seconds to wait before retry number ``attempt`` (0 for the first retry).

    Exponential backoff with "equal jitter": the step is
    ``min(cap, base * 2**attempt)`` and the delay is half the step plus
    ``jitter`` times the other half, so it lies in ``[step/2, step)`` and never
    exceeds ``cap``. ``jitter`` is drawn by the caller, uniformly from [0, 1).
    Raises ``ValueError`` for a negative attempt, a jitter outside [0, 1), or a
    negative base or cap.
    """
    if attempt < 0:
        raise ValueError(f"attempt must be 0 or more, got {attempt}")
    if not 0.0 <= jitter < 1.0:
        raise ValueError(f"jitter must be in [0, 1), got {jitter}")
    if base < 0 or cap < 0:
        raise ValueError(f"base and cap must not be negative, got base={base}, cap={cap}")
    step = cap if attempt >= 64 else min(cap, base * 2.0**attempt)
    half = step / 2.0
    return half + half * jitter
