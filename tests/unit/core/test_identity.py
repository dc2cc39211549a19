"""Workload identity rules: names, CSR name checks, renewal and retry timing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from isthmus.core.identity import (
    CLOCK_SKEW,
    DEFAULT_TRUST_DOMAIN,
    ISSUER_NAME,
    LEAF_LIFETIME,
    RENEW_FRACTION,
    TRUST_ANCHOR_NAME,
    check_csr_names,
    parse_workload_identity,
    renewal_delay,
    renewal_time,
    retry_delay,
    workload_identity,
)

T0 = datetime(2025, 1, 1, tzinfo=UTC)
WEB = "web.emojivoto.serviceaccount.identity.isthmus.cluster.local"


def test_contract_constants() -> None:
    assert DEFAULT_TRUST_DOMAIN == "cluster.local"
    assert TRUST_ANCHOR_NAME == "root.isthmus.cluster.local"
    assert ISSUER_NAME == "identity.isthmus.cluster.local"
    assert timedelta(hours=24) == LEAF_LIFETIME
    assert timedelta(seconds=20) == CLOCK_SKEW
    assert RENEW_FRACTION == 0.7


# --- names ------------------------------------------------------------------------------------


def test_workload_identity_default_and_custom_trust_domain() -> None:
    assert workload_identity("web", "emojivoto") == WEB
    assert (workload_identity("default", "isthmus", "east.example")
            == "default.isthmus.serviceaccount.identity.isthmus.east.example")


@pytest.mark.parametrize(("sa", "ns", "td"), [
    ("web", "emojivoto", "cluster.local"),
    ("isthmus-identity", "isthmus", "cluster.local"),
    ("sa.with.dots", "ns", "cluster.local"),
    ("a", "b", "c"),
    ("web", "emojivoto", "west.sfo3.example.com"),
])
def test_parse_round_trips(sa: str, ns: str, td: str) -> None:
    assert parse_workload_identity(workload_identity(sa, ns, td)) == (sa, ns, td)


@pytest.mark.parametrize("name", [
    "",
    "web.emojivoto.svc.cluster.local",
    "emojivoto.serviceaccount.identity.isthmus.cluster.local",          # no namespace
    ".emojivoto.serviceaccount.identity.isthmus.cluster.local",
    "web.emojivoto.serviceaccount.identity.isthmus.",                    # no trust domain
    "Web.emojivoto.serviceaccount.identity.isthmus.cluster.local",      # upper case
    "web.emojivoto.serviceaccount.identity.linkerd.cluster.local",
    "web.emo_jivoto.serviceaccount.identity.isthmus.cluster.local",
    "root.isthmus.cluster.local",
    "identity.isthmus.cluster.local",
])
def test_parse_rejects_non_identities(name: str) -> None:
    assert parse_workload_identity(name) is None


@pytest.mark.parametrize(("sa", "ns", "td", "fragment"), [
    ("Web", "emojivoto", "cluster.local", "invalid service account 'Web'"),
    ("web", "emo.jivoto", "cluster.local", "invalid namespace 'emo.jivoto'"),
    ("web", "emojivoto", "-bad", "invalid trust domain '-bad'"),
    ("", "emojivoto", "cluster.local", "invalid service account ''"),
    ("x.serviceaccount.identity", "isthmus", "cluster.local", "ambiguous"),
    ("a.serviceaccount.identity.isthmus.b", "ns", "cluster.local", "ambiguous"),
    ("a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 50, "ns", "cluster.local",
     "not a valid DNS name"),
])
def test_workload_identity_refuses_bad_parts(sa: str, ns: str, td: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        workload_identity(sa, ns, td)


# --- CSR names --------------------------------------------------------------------------------


def test_csr_with_exactly_the_identity_is_accepted() -> None:
    assert check_csr_names(dns_names=[WEB], other_sans=[], common_name=None, expected=WEB) is None
    assert check_csr_names(dns_names=[WEB], other_sans=[], common_name="", expected=WEB) is None
    assert check_csr_names(dns_names=[WEB], other_sans=[], common_name=WEB, expected=WEB) is None


@pytest.mark.parametrize(("dns", "other", "cn", "reason"), [
    ([], [], None,
     f"The CSR has no DNS subject alternative name; it must carry exactly one, {WEB}."),
    ([WEB, "evil.example"], [], None,
     f"The CSR has 2 DNS subject alternative names ({WEB}, evil.example); "
     f"it must carry exactly one, {WEB}."),
    ([WEB, WEB], [], None,
     f"The CSR has 2 DNS subject alternative names ({WEB}, {WEB}); it must carry exactly one, {WEB}."),
    (["vote.emojivoto.serviceaccount.identity.isthmus.cluster.local"], [], None,
     "The CSR asks for the DNS name vote.emojivoto.serviceaccount.identity.isthmus.cluster.local, "
     f"but the requester's identity is {WEB}."),
    ([WEB.upper()], [], None,
     f"The CSR asks for the DNS name {WEB.upper()}, but the requester's identity is {WEB}."),
    ([WEB], ["IP:10.0.0.1"], None,
     "The CSR has subject alternative names other than DNS names (IP:10.0.0.1); "
     f"it must carry only the DNS name {WEB}."),
    ([WEB], ["URI:spiffe://cluster.local/ns/x/sa/y", "email:a@b"], None,
     "The CSR has subject alternative names other than DNS names "
     f"(URI:spiffe://cluster.local/ns/x/sa/y, email:a@b); it must carry only the DNS name {WEB}."),
    ([WEB], [], "admin",
     f"The CSR's subject common name is admin; it must be empty or {WEB}."),
])
def test_csr_name_refusals_say_what_was_found_and_expected(
        dns: list[str], other: list[str], cn: str | None, reason: str) -> None:
    assert check_csr_names(dns_names=dns, other_sans=other, common_name=cn, expected=WEB) == reason


# --- renewal ----------------------------------------------------------------------------------


def test_renewal_at_seventy_percent_of_life() -> None:
    nb, na = T0, T0 + timedelta(hours=10)
    assert renewal_time(nb, na) == T0 + timedelta(hours=7)
    assert renewal_delay(nb, na, T0) == 7 * 3600
    assert renewal_delay(nb, na, T0 + timedelta(hours=6)) == 3600


def test_renewal_of_a_contract_leaf_counts_the_backdated_start() -> None:
    issued = T0
    nb, na = issued - CLOCK_SKEW, issued + LEAF_LIFETIME
    expected = (LEAF_LIFETIME + CLOCK_SKEW).total_seconds() * 0.7 - CLOCK_SKEW.total_seconds()
    assert renewal_delay(nb, na, issued) == pytest.approx(expected)


def test_renewal_is_immediate_when_due_or_expired() -> None:
    nb, na = T0, T0 + timedelta(hours=10)
    assert renewal_delay(nb, na, T0 + timedelta(hours=7)) == 0.0
    assert renewal_delay(nb, na, T0 + timedelta(hours=9)) == 0.0
    assert renewal_delay(nb, na, T0 + timedelta(days=3)) == 0.0


def test_renewal_delay_is_bounded() -> None:
    short = renewal_delay(T0, T0 + timedelta(seconds=5), T0)
    assert short == 10.0
    long = renewal_delay(T0, T0 + timedelta(days=365), T0)
    assert long == 24 * 3600.0
    # just before the renewal point: the lower bound, not a busy loop
    assert renewal_delay(T0, T0 + timedelta(hours=10), T0 + timedelta(hours=7) - timedelta(seconds=1)) == 10.0


# --- retries ----------------------------------------------------------------------------------


def test_retry_delay_doubles_up_to_the_cap() -> None:
    assert [retry_delay(a, jitter=0.0) for a in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert retry_delay(200, jitter=0.0) == 30.0
    assert retry_delay(10_000, jitter=0.999) < 60.0


def test_retry_jitter_spans_the_upper_half() -> None:
    assert retry_delay(3, jitter=0.5) == 6.0
    assert retry_delay(3, jitter=0.0) == 4.0
    assert 7.99 < retry_delay(3, jitter=0.999) < 8.0
    assert retry_delay(2, base=0.1, cap=1.0, jitter=0.0) == pytest.approx(0.2)
    assert retry_delay(0, base=0.0, jitter=0.3) == 0.0


@pytest.mark.parametrize(("attempt", "jitter", "kw", "fragment"), [
    (-1, 0.0, {}, "attempt must be 0 or more"),
    (0, 1.0, {}, "jitter must be in"),
    (0, -0.1, {}, "jitter must be in"),
    (0, 0.5, {"cap": -1.0}, "must not be negative"),
])
def test_retry_delay_refuses_bad_arguments(attempt: int, jitter: float, kw: dict[str, float],
                                           fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        retry_delay(attempt, jitter=jitter, **kw)
